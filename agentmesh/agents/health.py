"""Backend health: probe results and served calls in, a MED or a withdrawal out (DESIGN.md §2).

In BGP the IGP metric to a next hop breaks ties between otherwise equal paths, and a next hop that
becomes unreachable takes its routes with it. agentmesh's counterpart is the health of the backend behind
a locally originated agent: a backend that cannot serve has its agents withdrawn, one that serves badly
announces them with a worse MED, so that the mesh prefers another origin of the same name (MED is
compared across all candidates, see agentmesh.rib.decision).

Theory of operation
-------------------
One `HealthTracker` per hosted backend. It is sans-IO: no asyncio and no clock. The hosting adapter
(agentmesh.speaker.hosting) feeds it events with the time they happened, calls `evaluate(now)` once per
probe round and `check(now)` after a passive event, and applies the `Report` they return.

Inputs:

* active probes (`Backend.probe`, every `probe_every` seconds): `probed(now, seconds)` or
  `probe_failed(now, reason)`;
* passive observation of the calls served here: `call_started(now)` and `call_finished(now, ok,
  seconds)`, `ok` None for a call its caller abandoned (it counts neither way).

Measurements:

* latency: an EWMA (weight `latency_smoothing`) of probe round trips. Only probes feed it: every origin
  of a name is probed with the same cheap request, so MEDs compare like with like, while a real call's
  duration depends on what was asked (the EWMA of calls is kept for operators only);
* error rate: failed probes and calls among the outcomes of the last `error_window` seconds, divided by
  at least `MIN_OUTCOMES`, so that one failure of a quiet backend reads as 10%, not 100%;
* load: calls in flight averaged over the time since the previous evaluation, over `capacity`.

    MED = med_base + latency_ms / 10 + error_rate * 1000 + load * 100     (rounded, within 0..2^32-1)

so 10 ms of latency, 1% of errors and 10% of capacity in use each cost one point.

States (`HealthState`, with a `HealthReason`):

    HEALTHY   -> DEGRADED   the latest probe failed, or the error rate reached `degraded_error_rate`
    DEGRADED  -> HEALTHY    a probe succeeded and the error rate is below half of that (hysteresis)
    any       -> UNHEALTHY  `failures_to_withdraw` probes failed in a row (PROBES_FAILED), or
                            `failures_to_eject` calls failed in a row (EJECTED, passive outlier
                            detection): ejected for `ejection_time`, doubled at each ejection up to
                            `max_ejection_time`, back to `ejection_time` once the backend has stayed up
                            for `max_ejection_time`
    UNHEALTHY -> up         `successes_to_recover` probes in a row succeeded, none during an ejection
                            (RECOVERING while the first ones arrive)

An UNHEALTHY backend's agents are withdrawn; the others are announced with the MED.

Reporting (hysteresis). A state change is reported at once. A MED change is reported only when the
computed MED has been away from the reported one by at least `med_min_change` and at least
`med_min_ratio` of the larger of the two, on the same side, at `settle` evaluations in a row, and the
MED that the latest probe alone would give agreed each time (a spike of one or two probes lingers in
the average for longer than that, but not in the probes after it). Jitter that stays inside the band
costs no UPDATE.

An EWMA approaches a step gradually, and reporting each point where it crosses the band would cost an
UPDATE per probe while it catches up. So when a shift is confirmed, the latency average is re-seeded
with the median of the latest `settle` probe latencies, which all lie after the step: one step in
latency costs one UPDATE.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from agentmesh.agents.base import RequestError
from agentmesh.bgp.messages import Health

#: The least number of outcomes the error rate is divided by (see the module docstring).
MIN_OUTCOMES = 10
#: MED is a 32-bit attribute (RFC 4271 §4.3).
MAX_MED = 2**32 - 1
#: Outcomes kept for the error rate, at most: memory stays bounded whatever the call rate.
MAX_OUTCOMES = 10_000
#: Ejection doubling stops here, so that `ejection_time * 2**n` never overflows a float.
_MAX_DOUBLINGS = 32


class HealthState(Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class HealthReason(Enum):
    """Why a backend is in its state."""

    OK = "ok"
    #: Degraded: the latest probe failed (fewer than `failures_to_withdraw` in a row).
    PROBE_FAILED = "probe_failed"
    #: Degraded: the error rate reached `degraded_error_rate`.
    ERROR_RATE = "error_rate"
    #: Unhealthy: `failures_to_withdraw` probes failed in a row.
    PROBES_FAILED = "probes_failed"
    #: Unhealthy: `failures_to_eject` calls failed in a row; the ejection lasts.
    EJECTED = "ejected"
    #: Unhealthy: waiting for `successes_to_recover` good probes in a row.
    RECOVERING = "recovering"


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """How one backend's health is measured and turned into routes; the defaults suit production."""

    #: Seconds between active probes; None: no periodic probes (one is still made when an ejection ends).
    probe_every: float | None = 10.0
    #: A probe that takes longer has failed.
    probe_timeout: float = 5.0
    #: Probes failed in a row that withdraw the agents.
    failures_to_withdraw: int = 3
    #: Probes succeeded in a row that bring withdrawn agents back.
    successes_to_recover: int = 2
    #: Calls failed in a row that eject the backend (passive outlier detection); 0: never.
    failures_to_eject: int = 5
    #: The first ejection's length in seconds; each further one doubles it, up to `max_ejection_time`.
    ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    #: Calls in flight that mean a load of 1.0.
    capacity: int = 10
    #: Seconds of outcomes the error rate is computed over.
    error_window: float = 60.0
    #: Error rate from which the backend is degraded (it stays so until the rate is below half of it).
    degraded_error_rate: float = 0.2
    #: Weight of the newest probe latency in the EWMA (0 < w <= 1).
    latency_smoothing: float = 0.3
    #: The MED of an idle backend with no latency and no errors.
    med_base: int = 0
    #: A MED change smaller than this is jitter...
    med_min_change: int = 10
    #: ...and so is one smaller than this share of the larger of the old and the new MED.
    med_min_ratio: float = 0.2
    #: Evaluations in a row a MED change must last before it is announced.
    settle: int = 3

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []

        def check(name: str, ok: bool, message: str) -> None:
            if not ok:
                problems.append((name, message))

        for name in ("probe_every", "probe_timeout", "ejection_time", "max_ejection_time", "error_window"):
            value = getattr(self, name)
            if value is not None or name != "probe_every":
                check(name, math.isfinite(value) and value > 0, "must be a positive number of seconds")
        for name in ("failures_to_withdraw", "successes_to_recover", "capacity", "settle"):
            check(name, getattr(self, name) >= 1, "must be at least 1")
        check("failures_to_eject", self.failures_to_eject >= 0, "must not be negative (0: never eject)")
        check(
            "max_ejection_time",
            self.max_ejection_time >= self.ejection_time,
            "must not be less than ejection_time",
        )
        check("degraded_error_rate", 0 < self.degraded_error_rate <= 1, "must be in (0, 1]")
        check("latency_smoothing", 0 < self.latency_smoothing <= 1, "must be in (0, 1]")
        check("med_base", 0 <= self.med_base <= MAX_MED, f"must be in 0..{MAX_MED}")
        check("med_min_change", self.med_min_change >= 0, "must not be negative")
        check("med_min_ratio", self.med_min_ratio >= 0, "must not be negative")
        if problems:
            raise HealthSettingsError(problems)


class HealthSettingsError(ValueError):
    """Settings that do not fit together; `problems` are (setting, message) pairs, so that a
    configuration file's errors can point at the key."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name} {message}" for name, message in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Report:
    """What the tracker tells the routes: the state, and the MED and health values to announce."""

    state: HealthState
    reason: HealthReason
    med: int
    health: Health
    #: When it was decided (the caller's clock).
    at: float

    @property
    def routable(self) -> bool:
        """Whether the backend's agents should be announced at all."""
        return self.state is not HealthState.UNHEALTHY


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """A backend's health as operators see it (the admin API, `Node.backends()`)."""

    state: HealthState
    reason: HealthReason
    #: The MED the agents are announced with; None while they are withdrawn or before the first report.
    med: int | None
    #: The MED as computed now: it becomes `med` once it moved far enough for long enough.
    computed_med: int
    latency_ms: float | None
    call_latency_ms: float | None
    error_rate: float
    load: float
    in_flight: int
    probe_failures: int
    call_failures: int
    ejections: int
    #: Seconds the current ejection still lasts (0 when there is none).
    ejected_for: float
    last_probe_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason.value,
            "med": self.med,
            "computed_med": self.computed_med,
            "latency_ms": self.latency_ms,
            "call_latency_ms": self.call_latency_ms,
            "error_rate": self.error_rate,
            "load": self.load,
            "in_flight": self.in_flight,
            "probe_failures": self.probe_failures,
            "call_failures": self.call_failures,
            "ejections": self.ejections,
            "ejected_for": self.ejected_for,
            "last_probe_error": self.last_probe_error,
        }


def med_of(settings: HealthSettings, latency_ms: float, error_rate: float, load: float) -> int:
    """The MED of a backend with these measurements (the formula of the module docstring)."""
    med = settings.med_base + latency_ms / 10 + error_rate * 1000 + load * 100
    return min(MAX_MED, max(0, round(med)))


def blames_backend(error: BaseException) -> bool:
    """Whether a failed call counts against its backend's health (see `RequestError`)."""
    return not isinstance(error, RequestError)


class HealthTracker:
    """The health of one backend, from the events it is fed; see the module docstring."""

    def __init__(self, settings: HealthSettings | None = None) -> None:
        self.settings = settings or HealthSettings()
        #: The latest report: what the routes carry now (None before the first).
        self.reported: Report | None = None
        self.last_probe_error: str | None = None
        self.probe_failures = 0
        self.call_failures = 0
        self.ejections = 0
        self._latency: float | None = None  # seconds, EWMA of probes
        self._call_latency: float | None = None  # seconds, EWMA of served calls (shown, not routed on)
        self._recent: deque[float] = deque(maxlen=self.settings.settle)
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._failed_outcomes = 0
        self._in_flight = 0
        self._busy = 0.0  # integral of calls in flight over time since `_busy_since`
        self._busy_since: float | None = None
        self._busy_at: float | None = None
        # Why the backend is down (PROBES_FAILED or EJECTED), None while it is up.
        self._down: HealthReason | None = None
        self._ejected_until: float | None = None
        self._recoveries = 0  # good probes in a row while down
        self._up_since: float | None = None
        self._erroring = False  # the error rate latch of DEGRADED
        self._outside = 0  # evaluations in a row with the computed MED outside the band

    # --- events ------------------------------------------------------------------------------------------

    def probed(self, now: float, seconds: float) -> None:
        """A probe succeeded and took `seconds`."""
        self._record(now, True)
        self.probe_failures = 0
        self.last_probe_error = None
        seconds = max(0.0, seconds)
        self._recent.append(seconds)
        self._latency = _ewma(self._latency, seconds, self.settings.latency_smoothing)
        if self._down is None:
            return
        if self._ejected(now):
            return  # the probe is not what failed: only one after the ejection can vouch for the backend
        self._recoveries += 1
        if self._recoveries >= self.settings.successes_to_recover:
            self._down, self._ejected_until, self._recoveries = None, None, 0
            self.call_failures = 0
            self._up_since = now

    def probe_failed(self, now: float, reason: str) -> None:
        """A probe failed (raised, answered False or timed out)."""
        self._record(now, False)
        self.probe_failures += 1
        self._recoveries = 0
        self.last_probe_error = reason
        if self.probe_failures >= self.settings.failures_to_withdraw and not self._ejected(now):
            self._down, self._ejected_until = HealthReason.PROBES_FAILED, None

    def call_started(self, now: float) -> None:
        self._account(now)
        self._in_flight += 1

    def call_finished(self, now: float, ok: bool | None, seconds: float = 0.0) -> None:
        """A served call ended: `ok` False when it failed for the backend's fault, None if abandoned."""
        self._account(now)
        self._in_flight = max(0, self._in_flight - 1)
        if ok is None or self._down is not None:
            # Calls that were already under way when the agents went away say nothing new.
            return
        self._record(now, ok)
        if ok:
            self.call_failures = 0
            self._call_latency = _ewma(self._call_latency, max(0.0, seconds), self.settings.latency_smoothing)
            return
        self.call_failures += 1
        limit = self.settings.failures_to_eject
        if limit and self.call_failures >= limit:
            self._eject(now)

    # --- decisions ---------------------------------------------------------------------------------------

    def evaluate(self, now: float) -> Report | None:
        """The periodic evaluation (once per probe round): a new report, or None to keep the last one."""
        settings = self.settings
        rate = self._error_rate(now)
        if rate >= settings.degraded_error_rate:
            self._erroring = True
        elif rate < settings.degraded_error_rate / 2:
            self._erroring = False
        load = self._load(now, restart=True)
        med = self._med(rate, load)
        state, reason = self._state(now)
        if self.reported is None or state is not self.reported.state:
            self._outside = 0
            return self._report(now, state, reason, med, rate, load)
        direction = self._direction(self.reported.med, med)
        # The latest probe alone must agree: a spike of a probe or two lingers in the average for
        # longer than `settle` rounds, but no longer shows in the probes that follow it.
        latest = self._recent[-1] * 1000 if self._recent and not self.probe_failures else None
        instant = med if latest is None else med_of(settings, latest, rate, load)
        if (
            state is HealthState.UNHEALTHY
            or direction == 0
            or self._direction(self.reported.med, instant) != direction
        ):
            self._outside = 0
            return None
        self._outside += 1
        if self._outside < settings.settle:
            return None
        self._outside = 0
        if self._recent:
            # The shift is confirmed: the latest probes describe the new level better than an average
            # still on its way there (see the module docstring).
            self._latency = statistics.median(self._recent)
            med = self._med(rate, load)
        return self._report(now, state, reason, med, rate, load)

    def check(self, now: float) -> Report | None:
        """Between evaluations (after a passive event, when an ejection ends): report a state change only."""
        state, reason = self._state(now)
        if self.reported is not None and state is self.reported.state:
            return None
        rate = self._error_rate(now)
        load = self._load(now, restart=False)
        return self._report(now, state, reason, self._med(rate, load), rate, load)

    def next_deadline(self, now: float) -> float | None:
        """When something changes without an event: the end of the current ejection, if any."""
        return self._ejected_until if self._ejected(now) else None

    def status(self, now: float) -> HealthStatus:
        state, reason = self._state(now)
        rate = self._error_rate(now)
        load = self._load(now, restart=False)
        routable = self.reported is not None and self.reported.routable
        return HealthStatus(
            state=state,
            reason=reason,
            med=self.reported.med if routable and self.reported is not None else None,
            computed_med=self._med(rate, load),
            latency_ms=None if self._latency is None else round(self._latency * 1000, 1),
            call_latency_ms=None if self._call_latency is None else round(self._call_latency * 1000, 1),
            error_rate=round(rate, 4),
            load=round(load, 3),
            in_flight=self._in_flight,
            probe_failures=self.probe_failures,
            call_failures=self.call_failures,
            ejections=self.ejections,
            ejected_for=max(0.0, (self._ejected_until or now) - now),
            last_probe_error=self.last_probe_error,
        )

    # --- internals ---------------------------------------------------------------------------------------

    def _state(self, now: float) -> tuple[HealthState, HealthReason]:
        if self._down is not None:
            if self._ejected(now):
                return HealthState.UNHEALTHY, HealthReason.EJECTED
            if self._down is HealthReason.EJECTED or self._recoveries:
                return HealthState.UNHEALTHY, HealthReason.RECOVERING
            return HealthState.UNHEALTHY, HealthReason.PROBES_FAILED
        if self.probe_failures:
            return HealthState.DEGRADED, HealthReason.PROBE_FAILED
        if self._erroring:
            return HealthState.DEGRADED, HealthReason.ERROR_RATE
        return HealthState.HEALTHY, HealthReason.OK

    def _ejected(self, now: float) -> bool:
        return self._ejected_until is not None and now < self._ejected_until

    def _eject(self, now: float) -> None:
        settings = self.settings
        if self._up_since is not None and now - self._up_since >= settings.max_ejection_time:
            self.ejections = 0  # a long good spell forgives earlier ejections
        doublings = min(self.ejections, _MAX_DOUBLINGS)
        duration = min(settings.ejection_time * 2**doublings, settings.max_ejection_time)
        self.ejections += 1
        self._ejected_until = now + duration
        self._down = HealthReason.EJECTED
        self._recoveries = 0
        self.call_failures = 0

    def _direction(self, old: int, new: int) -> int:
        """+1 or -1 when `new` is outside the hysteresis band around `old`, above or below; else 0."""
        change = abs(new - old)
        settings = self.settings
        if change >= settings.med_min_change and change >= settings.med_min_ratio * max(old, new):
            return 1 if new > old else -1
        return 0

    def _med(self, error_rate: float, load: float) -> int:
        latency_ms = 0.0 if self._latency is None else self._latency * 1000
        return med_of(self.settings, latency_ms, error_rate, load)

    def _report(
        self, now: float, state: HealthState, reason: HealthReason, med: int, rate: float, load: float
    ) -> Report:
        latency_ms = 0.0 if self._latency is None else round(self._latency * 1000, 1)
        health = Health(latency_ms=latency_ms, error_rate=round(rate, 4), load=round(load, 3))
        self.reported = Report(state, reason, med, health, now)
        return self.reported

    def _record(self, now: float, ok: bool) -> None:
        if len(self._outcomes) >= MAX_OUTCOMES:
            self._forget_oldest()
        self._outcomes.append((now, ok))
        self._failed_outcomes += not ok

    def _forget_oldest(self) -> None:
        _, ok = self._outcomes.popleft()
        self._failed_outcomes -= not ok

    def _error_rate(self, now: float) -> float:
        horizon = now - self.settings.error_window
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._forget_oldest()
        return self._failed_outcomes / max(len(self._outcomes), MIN_OUTCOMES)

    def _account(self, now: float) -> None:
        """Add the calls in flight since the last change to the time integral the load is made of."""
        if self._busy_at is None or self._busy_since is None:
            self._busy_since = self._busy_at = now
            return
        self._busy += self._in_flight * max(0.0, now - self._busy_at)
        self._busy_at = max(self._busy_at, now)

    def _load(self, now: float, *, restart: bool) -> float:
        self._account(now)
        assert self._busy_since is not None
        span = now - self._busy_since
        average = self._busy / span if span > 0 else float(self._in_flight)
        if restart:
            self._busy, self._busy_since = 0.0, now
        return average / self.settings.capacity


def _ewma(average: float | None, sample: float, weight: float) -> float:
    return sample if average is None else weight * sample + (1 - weight) * average
