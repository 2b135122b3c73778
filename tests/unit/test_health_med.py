"""Backend health to MED and withdrawal: the sans-IO tracker on a fake clock, and the hosting adapter."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from agentmesh.agents.base import AgentInfo, AgentRequest, RequestError
from agentmesh.agents.demo import ExpressionError, evaluate
from agentmesh.agents.health import (
    MAX_MED,
    HealthReason,
    HealthSettings,
    HealthState,
    HealthTracker,
    Report,
    blames_backend,
    med_of,
)
from agentmesh.agents.local import LocalAgent, LocalBackend, UnknownLocalAgent
from agentmesh.agents.mastra import MastraError, MastraRequestError
from agentmesh.agents.mcp_tools import McpBackendError, McpToolError
from agentmesh.bgp.messages import AgentAttributes, Health
from agentmesh.obs.logging import get_logger
from agentmesh.speaker.forwarder import Hosted
from agentmesh.speaker.hosting import Hosting

HEALTHY, DEGRADED, UNHEALTHY = HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY


def jitter(level: float, spread: float, count: int, seed: int) -> Iterator[float]:
    rng = random.Random(seed)
    return (level * (1 + rng.uniform(-spread, spread)) for _ in range(count))


class Probing:
    """A tracker probed every `every` seconds of a fake clock."""

    def __init__(self, settings: HealthSettings | None = None, every: float = 10.0) -> None:
        self.tracker = HealthTracker(settings)
        self.every = every
        self.now = 0.0
        self.reports: list[Report] = []

    def probe(self, seconds: float | None) -> Report | None:
        """One probe round: `seconds` of latency, or None for a failed probe; returns any new report."""
        self.now += self.every
        if seconds is None:
            self.tracker.probe_failed(self.now, "refused")
        else:
            self.tracker.probed(self.now, seconds)
        report = self.tracker.evaluate(self.now)
        if report is not None:
            self.reports.append(report)
        return report

    def calls(self, outcomes: str) -> Report | None:
        """Calls served one after the other, "." succeeded and "x" failed; then a state check."""
        for outcome in outcomes:
            self.tracker.call_started(self.now)
            self.tracker.call_finished(self.now, outcome == ".", 0.5)
        return self.tracker.check(self.now)

    @property
    def state(self) -> HealthState:
        return self.tracker.status(self.now).state


# --- the MED formula ---------------------------------------------------------------------------------------


def test_med_is_base_plus_latency_errors_and_load() -> None:
    settings = HealthSettings(med_base=100)
    # 10 ms, 1 % of errors and 10 % of capacity in use cost one point each.
    assert med_of(settings, 0, 0, 0) == 100
    assert med_of(settings, 250, 0, 0) == 125
    assert med_of(settings, 0, 0.05, 0) == 150
    assert med_of(settings, 0, 0, 0.5) == 150
    assert med_of(settings, 250, 0.05, 0.5) == 225
    assert med_of(HealthSettings(), 1e12, 1, 1) == MAX_MED  # a 32-bit attribute


def test_the_tracker_measures_what_the_formula_takes() -> None:
    probing = Probing(HealthSettings(med_base=100, capacity=10, failures_to_eject=0))
    report = probing.probe(0.25)
    assert report is not None and (report.state, report.med) == (HEALTHY, 125)
    assert report.health == Health(latency_ms=250.0, error_rate=0.0, load=0.0)

    # Two calls in flight through the next probe interval: 20 % of capacity.
    tracker = probing.tracker
    tracker.call_started(probing.now)
    tracker.call_started(probing.now)
    probing.now += 10
    tracker.call_finished(probing.now, True, 10.0)
    tracker.call_finished(probing.now, False, 10.0)
    status = tracker.status(probing.now)
    assert status.load == pytest.approx(0.2)
    # 1 failed outcome of 3 (a probe and two calls) reads as 1 of MIN_OUTCOMES = 10.
    assert status.error_rate == pytest.approx(0.1)
    assert status.computed_med == 100 + 25 + 100 + 20
    assert status.call_latency_ms == 10000.0


def test_load_is_averaged_over_time_not_sampled() -> None:
    tracker = HealthTracker(HealthSettings(capacity=4))
    tracker.probed(0, 0.0)
    tracker.evaluate(0)
    tracker.call_started(0)
    tracker.call_finished(1, True, 1.0)  # one call for 1 s of the next 10
    assert tracker.status(10).load == pytest.approx(1 / 10 / 4)


# --- hysteresis --------------------------------------------------------------------------------------------


def test_jitter_within_15_percent_is_never_announced_and_a_5x_step_is_announced_once() -> None:
    probing = Probing()
    first = probing.probe(1.0)  # 1000 ms: MED 100
    assert first is not None and first.med == 100

    for seconds in jitter(1.0, 0.15, 200, seed=7):
        probing.probe(seconds)
    assert probing.reports == [first], "jitter must not cause a re-announcement"

    for seconds in jitter(5.0, 0.15, 200, seed=8):
        probing.probe(seconds)
    assert len(probing.reports) == 2, [r.med for r in probing.reports]
    step = probing.reports[1]
    assert step.state is HEALTHY and 400 <= step.med <= 600
    # Announced after `settle` probes, not at the first crossing of the band nor after the average
    # crept all the way up.
    assert step.at == first.at + (200 + HealthSettings().settle) * probing.every


def test_a_step_down_is_announced_once_too() -> None:
    probing = Probing()
    probing.probe(2.0)
    for seconds in jitter(0.4, 0.15, 100, seed=3):
        probing.probe(seconds)
    assert len(probing.reports) == 2
    assert probing.reports[0].med == 200 and 30 <= probing.reports[1].med <= 50


def test_a_spike_shorter_than_settle_is_not_announced() -> None:
    probing = Probing()
    probing.probe(1.0)
    for seconds in [1.0] * 5 + [10.0, 10.0] + [1.0] * 20:
        probing.probe(seconds)
    assert len(probing.reports) == 1


def test_small_moves_stay_inside_the_band_whatever_their_duration() -> None:
    probing = Probing()
    probing.probe(1.0)
    for _ in range(100):
        probing.probe(1.15)  # +15 points: at least 10, but less than 20 % of 115
    probing.probe(0.05)
    for _ in range(100):
        probing.probe(0.05)  # a real move: announced
    probing.probe(0.1)
    for _ in range(100):
        probing.probe(0.1)  # +5 points: doubled, but less than 10
    assert [r.med for r in probing.reports] == [100, 5]


def test_a_state_change_is_announced_at_once_whatever_the_med() -> None:
    probing = Probing()
    probing.probe(1.0)
    report = probing.probe(None)
    assert report is not None and (report.state, report.reason) == (DEGRADED, HealthReason.PROBE_FAILED)
    report = probing.probe(1.0)
    assert report is not None and report.state is HEALTHY


# --- states ------------------------------------------------------------------------------------------------


def test_probes_failing_in_a_row_withdraw_and_good_probes_in_a_row_recover() -> None:
    probing = Probing(HealthSettings(failures_to_withdraw=3, successes_to_recover=2))
    probing.probe(0.01)
    assert probing.probe(None) is not None and probing.state is DEGRADED
    assert probing.probe(None) is None and probing.state is DEGRADED  # still routable, same state
    withdrawn = probing.probe(None)
    assert withdrawn is not None and not withdrawn.routable
    assert withdrawn.reason is HealthReason.PROBES_FAILED
    assert probing.tracker.status(probing.now).last_probe_error == "refused"

    assert probing.probe(0.01) is None  # one good probe is not enough
    assert probing.tracker.status(probing.now).reason is HealthReason.RECOVERING
    assert probing.probe(None) is None  # and a failure starts the count again
    assert probing.probe(0.01) is None
    back = probing.probe(0.01)
    assert back is not None and back.routable and back.state is not UNHEALTHY


def test_a_high_error_rate_degrades_with_hysteresis() -> None:
    probing = Probing(HealthSettings(failures_to_eject=0, degraded_error_rate=0.2, error_window=60))
    probing.probe(0.01)
    probing.calls("x.x.x.x.")  # 4 of 9 outcomes failed
    report = probing.probe(0.01)
    assert report is not None and (report.state, report.reason) == (DEGRADED, HealthReason.ERROR_RATE)
    assert report.med >= 400  # 40 % errors
    probing.calls("." * 12)  # 4 of 22: 18 %, under 20 % but not under 10 %: still degraded
    assert probing.probe(0.01) is None and probing.state is DEGRADED
    probing.calls("." * 30)  # 4 of 53: 7.5 %
    report = probing.probe(0.01)
    assert report is not None and report.state is HEALTHY


def test_errors_older_than_the_window_are_forgotten() -> None:
    tracker = HealthTracker(HealthSettings(error_window=60, failures_to_eject=0))
    for _ in range(10):
        tracker.call_started(0)
        tracker.call_finished(0, False)
    assert tracker.status(30).error_rate == 1.0
    assert tracker.status(61).error_rate == 0.0


def test_abandoned_calls_leave_the_load_and_count_neither_way() -> None:
    tracker = HealthTracker(HealthSettings(failures_to_eject=1))
    tracker.call_started(0)
    assert tracker.status(0).in_flight == 1
    tracker.call_finished(0, None)
    status = tracker.status(0)
    assert (status.in_flight, status.error_rate, status.call_failures) == (0, 0.0, 0)
    assert status.state is HEALTHY


# --- passive outlier detection: ejection and backoff -------------------------------------------------------


def test_consecutive_failed_calls_eject_for_a_doubling_time_and_recovery_needs_a_good_probe() -> None:
    settings = HealthSettings(
        failures_to_eject=5, ejection_time=30, max_ejection_time=100, successes_to_recover=1
    )
    probing = Probing(settings, every=10)
    probing.probe(0.01)
    assert probing.calls("xxxx.xxxx") is None  # a success in between restarts the count
    ejected = probing.calls("x")
    assert ejected is not None and not ejected.routable and ejected.reason is HealthReason.EJECTED
    started = probing.now
    assert probing.tracker.next_deadline(probing.now) == started + 30

    lengths = []
    for _ in range(4):
        ejected_at = probing.now
        deadline = probing.tracker.next_deadline(probing.now)
        assert deadline is not None
        # Probes during the ejection do not end it: the first good one from its end on does.
        back = None
        while back is None:
            back = probing.probe(0.01)
        assert back.routable and probing.now >= deadline
        lengths.append(probing.now - ejected_at)
        again = probing.calls("xxxxx")
        assert again is not None and not again.routable
    # 30, 60, then capped at 100.
    assert lengths == [30, 60, 100, 100]
    assert probing.tracker.ejections == 5


def test_without_a_good_probe_an_ejected_backend_never_comes_back() -> None:
    probing = Probing(HealthSettings(failures_to_eject=2, ejection_time=30, successes_to_recover=1))
    probing.probe(0.01)
    probing.calls("xx")
    for _ in range(50):
        assert probing.probe(None) is None
    assert probing.state is UNHEALTHY
    assert probing.tracker.check(probing.now + 10_000) is None


def test_a_long_good_spell_forgives_earlier_ejections() -> None:
    settings = HealthSettings(failures_to_eject=1, ejection_time=10, max_ejection_time=40)
    tracker = HealthTracker(settings)

    def eject_and_recover(now: float) -> float:
        tracker.call_started(now)
        tracker.call_finished(now, False)
        deadline = tracker.next_deadline(now)
        assert deadline is not None
        tracker.probed(deadline, 0.01)
        tracker.probed(deadline + 1, 0.01)  # successes_to_recover = 2
        return deadline - now

    # Each ejection comes 9 s after the recovery from the one before: the time doubles.
    assert [eject_and_recover(t) for t in (0, 20, 50)] == [10, 20, 40]
    assert eject_and_recover(1000) == 10  # 900 s without an ejection


def test_calls_that_end_while_the_backend_is_down_do_not_count() -> None:
    tracker = HealthTracker(HealthSettings(failures_to_eject=1, ejection_time=10, successes_to_recover=1))
    tracker.call_started(0)
    tracker.call_started(0)
    tracker.call_finished(0, False)  # ejected
    tracker.call_finished(1, False)  # was under way already
    assert tracker.ejections == 1
    assert tracker.next_deadline(1) == 10


# --- what counts against a backend -------------------------------------------------------------------------


def test_errors_that_blame_the_request_do_not_count_against_the_backend() -> None:
    assert not blames_backend(MastraRequestError(404, "no agent"))
    assert not blames_backend(McpToolError("the tool said no"))
    assert not blames_backend(UnknownLocalAgent("nobody"))
    with pytest.raises(ExpressionError) as bad:
        evaluate("1 / 0")
    assert isinstance(bad.value, ValueError) and not blames_backend(bad.value)
    assert not blames_backend(RequestError("bad input"))
    for error in (MastraError(500, "boom"), MastraError(None, "refused"), McpBackendError("gone")):
        assert blames_backend(error)
    assert blames_backend(TimeoutError()) and blames_backend(RuntimeError("fell over"))


@pytest.mark.parametrize(
    "settings",
    [
        {"probe_every": 0},
        {"probe_timeout": -1},
        {"failures_to_withdraw": 0},
        {"failures_to_eject": -1},
        {"ejection_time": 60, "max_ejection_time": 30},
        {"degraded_error_rate": 0},
        {"latency_smoothing": 1.5},
        {"med_base": -1},
        {"settle": 0},
        {"capacity": 0},
    ],
)
def test_settings_are_checked(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HealthSettings(**settings)


# --- the asyncio adapter (Hosting) with in-memory routes ---------------------------------------------------


class Routes:
    """What a node would originate: announce and withdraw as Hosting calls them."""

    def __init__(self) -> None:
        self.table: dict[str, tuple[AgentAttributes, int | None]] = {}
        self.announcements = 0

    async def announce(self, names: list[str], agent: AgentAttributes, *, med: int | None = None) -> None:
        self.announcements += len(names)
        for name in names:
            self.table[name] = (agent, med)

    async def withdraw(self, names: list[str]) -> list[str]:
        for name in names:
            self.table.pop(name, None)
        return []


class Knob:
    def __init__(self) -> None:
        self.delay = 0.0
        self.alive = True

    async def probe(self) -> bool:
        await asyncio.sleep(self.delay)
        if not self.alive:
            raise ConnectionError("backend down")
        return True


async def hosting_of(knob: Knob, settings: HealthSettings) -> tuple[Hosting, Routes, dict[str, Hosted]]:
    backend = LocalBackend("svc", [LocalAgent(AgentInfo("work"), lambda r: "done")], probe=knob.probe)
    routes, hosted = Routes(), {}
    hosting = Hosting(
        backend, "svc", hosted, routes.announce, routes.withdraw, get_logger(node="t"), health=settings
    )
    await hosting.sync()
    return hosting, routes, hosted


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_hosting_announces_a_measured_med_and_withdraws_a_dead_backend() -> None:
    knob = Knob()
    settings = HealthSettings(probe_every=0.05, failures_to_withdraw=2, successes_to_recover=1)
    hosting, routes, hosted = await hosting_of(knob, settings)
    attributes, med = routes.table["svc.work"]
    assert attributes.health.latency_ms < 5  # probed before the first announcement
    assert med is None  # MED 0 is sent as no MED, which the decision process reads as 0
    assert hosting.health.state is HEALTHY and "svc.work" in hosted

    task = asyncio.create_task(hosting.run(None))
    try:
        knob.delay = 0.3  # 300 ms: MED 30, announced once it settled
        await wait_for(lambda: routes.table["svc.work"][1] == 30)
        attributes, _ = routes.table["svc.work"]
        assert attributes.health.latency_ms == pytest.approx(300, rel=0.1)
        assert hosting.health.med == 30

        knob.delay, knob.alive = 0.0, False
        await wait_for(lambda: "svc.work" not in routes.table)
        assert "svc.work" not in hosted and hosting.announced == {}
        status = hosting.health
        assert (status.state, status.med, status.last_probe_error) == (UNHEALTHY, None, "backend down")

        knob.alive = True
        await wait_for(lambda: "svc.work" in routes.table)
        assert "svc.work" in hosted
        # Back, but the failed probes are in the error window for a while: degraded, with a worse MED.
        status = hosting.health
        assert (status.state, status.reason) == (DEGRADED, HealthReason.ERROR_RATE)
        assert routes.table["svc.work"][1] == status.med and status.med is not None and status.med > 100
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_hosting_withdraws_an_ejected_backend_without_waiting_for_a_probe() -> None:
    settings = HealthSettings(probe_every=60, failures_to_eject=3, ejection_time=0.2, successes_to_recover=1)
    hosting, routes, hosted = await hosting_of(Knob(), settings)
    task = asyncio.create_task(hosting.run(None))
    try:
        monitor = hosted["svc.work"].monitor
        assert monitor is not None
        for _ in range(3):
            monitor.call_started()
            monitor.call_finished(0.01, RuntimeError("fell over"))
        await wait_for(lambda: "svc.work" not in routes.table, timeout=1)
        assert hosting.health.reason is HealthReason.EJECTED
        # The end of the ejection is probed at once, not a minute later.
        await wait_for(lambda: "svc.work" in routes.table, timeout=2)
        assert hosting.health.ejections == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_request_error_is_a_served_call() -> None:
    settings = HealthSettings(probe_every=60, failures_to_eject=1)
    hosting, _, hosted = await hosting_of(Knob(), settings)
    monitor = hosted["svc.work"].monitor
    assert monitor is not None
    for _ in range(5):
        monitor.call_started()
        monitor.call_finished(0.01, MastraRequestError(404, "no such agent"))
    assert hosting.health.state is HEALTHY and hosting.health.error_rate == 0


async def test_health_values_travel_only_with_a_med_change() -> None:
    knob = Knob()
    hosting, routes, _ = await hosting_of(knob, HealthSettings(probe_every=0.02))
    before = routes.announcements
    task = asyncio.create_task(hosting.run(None))
    try:
        await asyncio.sleep(0.4)  # ~20 probes of a steady backend
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert routes.announcements == before
    assert hosting.health.latency_ms is not None


async def test_a_probe_that_hangs_fails_by_its_timeout() -> None:
    knob = Knob()
    settings = HealthSettings(probe_every=60, probe_timeout=0.05, failures_to_withdraw=1)
    hosting, routes, _ = await hosting_of(knob, settings)
    knob.delay = 1.0
    await hosting.probe()
    assert "svc.work" not in routes.table
    assert hosting.health.last_probe_error == "the probe took longer than 0.05s"


async def test_a_local_probe_function_may_answer_false() -> None:
    backend = LocalBackend("svc", [], probe=lambda: False)
    assert await backend.probe() is False
    assert backend.last_probe_error == "the probe function returned False"
    assert await LocalBackend("svc", []).probe() is True
    with pytest.raises(KeyError):
        await backend.call("nobody", AgentRequest())
