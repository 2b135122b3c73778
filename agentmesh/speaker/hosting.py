"""Keeping a backend's agents announced: discover, probe, and announce what is there, as healthy as it is.

A backend is rediscovered periodically. An agent that disappears from the backend's list is
withdrawn mesh-wide; one whose description, capabilities or schema changed is announced again.
A discovery that fails changes nothing: an unreachable backend is a health matter, not a reason to
drop its routes on the first hiccup.

Health (agentmesh.agents.health, DESIGN.md §2) is the asyncio side of a sans-IO `HealthTracker`:
the backend is probed every `probe_every` seconds, the calls the forwarder serves from it are reported
by a `CallMonitor`, and whatever the tracker reports is applied to the routes. An unhealthy backend's
agents are withdrawn (and its calls no longer served here); a healthy or degraded one's are announced
with the tracker's MED, and with the measured values in `AgentAttributes.health`, which change only
when the MED is announced again, so that measuring costs no UPDATE by itself.

One task (`run`) does all of it, so discovery, probes and route changes never interleave; a passive
event that ejects the backend only wakes that task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agentmesh.agents.base import AgentInfo, Backend
from agentmesh.agents.health import HealthSettings, HealthStatus, HealthTracker, Report, blames_backend
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.speaker.forwarder import Hosted


class Announce(Protocol):
    """Originates routes for names with one attribute set and a MED (`Node.announce_agents`)."""

    def __call__(
        self, names: list[str], agent: AgentAttributes, *, med: int | None = None
    ) -> Awaitable[None]: ...


#: Withdraws names; what it returns (the names that were not announced) is not needed here.
Withdraw = Callable[[list[str]], Awaitable[object]]


class Hosting:
    """One backend's agents under one namespace, kept in step with what the backend reports."""

    def __init__(
        self,
        backend: Backend,
        namespace: str,
        hosted: dict[str, Hosted],
        announce: Announce,
        withdraw: Withdraw,
        log: Any,
        *,
        health: HealthSettings | None = None,
    ) -> None:
        self.backend = backend
        self.namespace = namespace
        self._hosted = hosted
        self._announce = announce
        self._withdraw = withdraw
        self._log = log
        # The tracker's time: monotonic, like the loop's, so that its deadlines are the sleeps' deadlines.
        self._clock = time.monotonic
        self.settings = health or HealthSettings()
        self.tracker = HealthTracker(self.settings)
        # Set by a passive event that may have changed the state; `run` acts on it.
        self._wake = asyncio.Event()
        self._monitor = _Monitor(self.tracker, self._clock, self._wake)
        self._last_report: Report | None = None
        #: The agents of the latest discovery: name -> (agent id, attributes without health values).
        self._offered: dict[str, tuple[str, AgentAttributes]] = {}
        #: What is announced now: name -> the attributes as announced.
        self.announced: dict[str, AgentAttributes] = {}
        self._meds: dict[str, int | None] = {}
        #: Why the latest discovery failed, None after one that worked: shown for this backend only.
        self.last_error: str | None = None

    @property
    def health(self) -> HealthStatus:
        """The backend's health now: state, MED, latency, error rate, load, last probe error."""
        return self.tracker.status(self._clock())

    async def sync(self) -> None:
        """Discover once and make the announced routes match; a failed discovery is logged and kept out."""
        try:
            infos = await self.backend.discover()
        except Exception as error:
            self.last_error = str(error) or repr(error)
            self._log.warning("backend_discovery_failed", backend=self.backend.name, error=self.last_error)
            return
        self.last_error = None
        self._offered = {f"{self.namespace}.{info.id}": (info.id, self._attributes(info)) for info in infos}
        if self.tracker.reported is None and self.settings.probe_every is not None:
            # The first announcement carries a measured MED rather than a guess to be corrected later.
            await self._probe_once()
            self._note(self.tracker.evaluate(self._clock()))
        self._note(self.tracker.check(self._clock()))
        await self._reconcile()

    async def probe(self) -> None:
        """Probe the backend once and apply what the tracker makes of it."""
        await self._probe_once()
        if self._note(self.tracker.evaluate(self._clock())):
            await self._reconcile()

    async def run(self, interval: float | None) -> None:
        """Rediscover every `interval` seconds (None: never), probe every `probe_every` seconds, and
        act at once on passive events and on the end of an ejection; until cancelled."""
        every = self.settings.probe_every
        now = self._clock()
        next_discovery = math.inf if interval is None else now + interval
        next_probe = math.inf if every is None else now + every
        while True:
            ejection_ends = self.tracker.next_deadline(self._clock())
            ends = math.inf if ejection_ends is None else ejection_ends
            await self._sleep_until(min(next_discovery, next_probe, ends))
            now = self._clock()
            if self._wake.is_set():
                self._wake.clear()
                if self._note(self.tracker.check(now)):
                    await self._reconcile()
            # The end of an ejection is probed at once: a good probe is what brings the agents back.
            if now >= next_probe or (ejection_ends is not None and now >= ejection_ends):
                await self.probe()
                next_probe = math.inf if every is None else self._clock() + every
            if interval is not None and now >= next_discovery:
                await self.sync()
                next_discovery = self._clock() + interval

    # --- internals ---------------------------------------------------------------------------------------

    async def _sleep_until(self, deadline: float) -> None:
        delay = deadline - self._clock()
        if delay <= 0 or self._wake.is_set():
            return
        try:
            async with asyncio.timeout(None if math.isinf(delay) else delay):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _probe_once(self) -> None:
        """Run the backend's probe within `probe_timeout` and feed the tracker its result."""
        timeout = self.settings.probe_timeout
        started = self._clock()
        reason: str | None = None
        try:
            async with asyncio.timeout(timeout):
                ok = await self.backend.probe()
            if not ok:
                reason = getattr(self.backend, "last_probe_error", None) or "the probe answered False"
        except TimeoutError:
            reason = f"the probe took longer than {timeout:g}s"
        except Exception as error:
            reason = str(error) or repr(error)
        now = self._clock()
        if reason is None:
            self.tracker.probed(now, now - started)
        else:
            self.tracker.probe_failed(now, reason)
            self._log.debug("backend_probe_failed", backend=self.backend.name, error=reason)

    def _note(self, report: Report | None) -> bool:
        """Log a new report; whether there is one (and so routes to bring in line)."""
        if report is None:
            return False
        before, self._last_report = self._last_report, report
        if before is None or before.state is not report.state:
            # Going down is what an operator must notice; the reason and the probe's error say why.
            level = self._log.info if report.routable else self._log.warning
            level(
                "backend_health_changed",
                backend=self.backend.name,
                old=None if before is None else before.state.value,
                new=report.state.value,
                reason=report.reason.value,
                med=report.med,
                last_probe_error=self.tracker.last_probe_error,
            )
        elif before.med != report.med:
            self._log.info("backend_med_changed", backend=self.backend.name, old=before.med, new=report.med)
        return True

    async def _reconcile(self) -> None:
        """Make the announced routes what the latest discovery and the latest health report call for."""
        report = self.tracker.reported
        wanted = self._offered if report is not None and report.routable else {}
        gone = [name for name in self.announced if name not in wanted]
        if gone:
            await self._withdraw(gone)
            for name in gone:
                del self.announced[name]
                self._meds.pop(name, None)
                self._hosted.pop(name, None)
            why = "unhealthy" if report is not None and not report.routable else "gone from the backend"
            self._log.info("agents_withdrawn", backend=self.backend.name, agents=gone, reason=why)
        if report is None or not report.routable:
            return
        # A MED of 0 is sent as no MED: a missing MED counts as the lowest value, 0 (RFC 4271
        # §9.1.2.2 (c), agentmesh.rib.decision), so the attribute would say nothing, and a fast idle
        # backend keeps announcing what it announced before health was measured.
        med = report.med or None
        for name, (agent_id, offered) in wanted.items():
            attributes = dataclasses.replace(offered, health=report.health)
            if self.announced.get(name) == attributes and self._meds.get(name) == med:
                continue
            try:
                await self._announce([name], attributes, med=med)
            except ValueError as error:  # an id that is no valid name label, for example
                self._log.warning("agent_not_hosted", backend=self.backend.name, agent=name, error=str(error))
                continue
            if name not in self.announced:
                self._log.info("agent_hosted", agent=name, backend=self.backend.name, med=report.med)
            self._hosted[name] = Hosted(self.backend, agent_id, self._monitor)
            self.announced[name] = attributes
            self._meds[name] = med

    def _attributes(self, info: AgentInfo) -> AgentAttributes:
        return AgentAttributes(
            capabilities=info.capabilities,
            description=info.description,
            backend_protocol=self.backend.protocol,
            input_schema=json.dumps(info.input_schema, sort_keys=True)
            if info.input_schema is not None
            else "",
        )


class _Monitor:
    """The forwarder's CallMonitor for one backend: served calls go to its tracker."""

    def __init__(self, tracker: HealthTracker, clock: Callable[[], float], wake: asyncio.Event) -> None:
        self._tracker = tracker
        self._clock = clock
        self._wake = wake

    def call_started(self) -> None:
        self._tracker.call_started(self._clock())

    def call_finished(self, seconds: float, error: BaseException | None) -> None:
        now = self._clock()
        ok = error is None or not blames_backend(error)
        self._tracker.call_finished(now, ok, seconds)
        # A failure may have ejected the backend: withdrawing its agents is `run`'s job, and it should
        # not wait for the next probe to do it.
        if not ok and self._tracker.next_deadline(now) is not None:
            self._wake.set()

    def call_abandoned(self) -> None:
        self._tracker.call_finished(self._clock(), None)
