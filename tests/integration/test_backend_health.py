"""Backend health over real nodes on loopback: MED follows latency, dead backends are withdrawn mesh-wide,
failing calls eject a backend, and jitter costs no UPDATEs (DESIGN.md §2, docs/health.md)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable

import pytest

from agentmesh.agents.base import AgentInfo, AgentRequest, CallErrorCode, CallFailure, ChatMessage
from agentmesh.agents.health import HealthSettings, HealthState
from agentmesh.agents.local import LocalAgent, LocalBackend
from agentmesh.obs.logging import get_logger
from agentmesh.rib.decision import DecisionReason
from agentmesh.speaker.hosting import Hosting
from agentmesh.speaker.node import Node
from tests.integration.test_routing_topologies import configs, everywhere, link
from tests.support.nodes import eventually, running

NAME = "shared.work"
ASK = AgentRequest(messages=(ChatMessage("user", "hi"),))


class Service:
    """A local backend whose speed, liveness and call failures the test controls."""

    def __init__(self, node: str, seed: int = 0) -> None:
        self.node = node
        self.delay = 0.0
        #: Probe latency varies by this share either way (jitter).
        self.jitter = 0.0
        self.alive = True
        self.failing = False
        self.probes = 0
        self._rng = random.Random(seed)

    async def probe(self) -> bool:
        self.probes += 1
        await asyncio.sleep(self.delay * (1 + self._rng.uniform(-self.jitter, self.jitter)))
        if not self.alive:
            raise ConnectionError(f"{self.node}: connection refused")
        return True

    async def work(self, request: AgentRequest) -> str:
        await asyncio.sleep(self.delay)
        if self.failing:
            raise RuntimeError(f"{self.node}: the model server fell over")
        return f"done at {self.node}"

    def backend(self) -> LocalBackend:
        return LocalBackend("svc", [LocalAgent(AgentInfo("work"), self.work)], probe=self.probe)


@contextlib.asynccontextmanager
async def hosted(node: Node, service: Service, settings: HealthSettings) -> AsyncIterator[Hosting]:
    """Host `service` as `shared.*` on `node` with these health settings, as `Node.host` does, and run
    its probes until the block ends."""
    hosting = Hosting(
        service.backend(),
        "shared",
        node.forwarder.hosted,
        node.announce_agents,
        node.withdraw_agents,
        get_logger(node=node.name),
        health=settings,
    )
    await hosting.sync()
    task = asyncio.create_task(hosting.run(None))
    try:
        yield hosting
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def best_next_hop(node: Node) -> str | None:
    decision = await node.explain(NAME)
    return None if decision is None else decision.best.attrs.next_hop


async def candidates(node: Node) -> int:
    decision = await node.explain(NAME)
    return 0 if decision is None else len(decision.ranked)


def updates_received(node: Node, sender: Node) -> float:
    value = node.metrics.registry.get_sample_value(
        "agentmesh_peer_messages_received_total", {"peer": sender.advertise_address, "type": "update"}
    )
    return value or 0.0


FAST = HealthSettings(probe_every=0.1, probe_timeout=1.0)


async def test_a_slowed_backend_gets_a_higher_med_and_calls_move_to_the_other_origin() -> None:
    # n1 (AS 65002) and n2 (AS 65003) both serve shared.work to n0 (AS 65001); equal but for health.
    async with running(*configs([65001, 65002, 65003])) as (n0, n1, n2):
        await link([n0, n1, n2], [(0, 1), (0, 2)])
        slow, steady = Service("n1"), Service("n2")
        async with hosted(n1, slow, FAST), hosted(n2, steady, FAST):
            await eventually(lambda: equals(candidates(n0), 2), 10)
            # Both MEDs are 0: the lower router id, n1's, breaks the tie.
            assert await best_next_hop(n0) == n1.advertise_address
            assert (await n0.call_agent(NAME, ASK)).served_by == "n1"

            slow.delay = 0.3  # 300 ms per probe and per call: MED 30
            await eventually(lambda: equals(best_next_hop(n0), n2.advertise_address), 10)

            decision = await n0.explain(NAME)
            assert decision is not None and decision.reason is DecisionReason.MED
            runner_up = decision.ranked[1].attrs
            assert runner_up.next_hop == n1.advertise_address
            assert runner_up.med is not None and 25 <= runner_up.med <= 40
            # The measured values travel with the MED that was computed from them.
            assert runner_up.agent.health.latency_ms == pytest.approx(300, rel=0.15)
            assert (await n0.call_agent(NAME, ASK)).served_by == "n2"


async def test_a_dead_backend_is_withdrawn_mesh_wide_within_a_probe_interval() -> None:
    settings = HealthSettings(probe_every=0.1, failures_to_withdraw=1, successes_to_recover=1)
    async with running(*configs([65001, 65002, 65003])) as nodes:
        await link(nodes, [(0, 1), (1, 2)])
        service = Service("n2")
        async with hosted(nodes[2], service, settings) as hosting:
            await everywhere(nodes, NAME)

            service.alive = False
            started = time.monotonic()
            await everywhere(nodes, NAME, present=False, timeout=5)
            # One probe interval, the probe itself, and two hops of propagation (withdrawals are
            # never delayed behind the advertisement interval).
            assert time.monotonic() - started < settings.probe_every + 1.0
            assert hosting.health.state is HealthState.UNHEALTHY
            assert hosting.health.last_probe_error == "n2: connection refused"
            with pytest.raises(CallFailure) as failed:
                await nodes[0].call_agent(NAME, ASK)
            assert failed.value.code is CallErrorCode.NOT_FOUND

            service.alive = True
            await everywhere(nodes, NAME, timeout=5)
            assert (await nodes[0].call_agent(NAME, ASK)).served_by == "n2"


async def test_failing_calls_eject_the_backend_and_the_mesh_uses_the_other_origin() -> None:
    settings = HealthSettings(probe_every=0.1, failures_to_eject=3, ejection_time=0.5, successes_to_recover=1)
    async with running(*configs([65001, 65002, 65003])) as (n0, n1, n2):
        await link([n0, n1, n2], [(0, 1), (0, 2)])
        broken, steady = Service("n1"), Service("n2")
        async with hosted(n1, broken, settings) as hosting, hosted(n2, steady, settings):
            await eventually(lambda: equals(candidates(n0), 2), 10)
            assert await best_next_hop(n0) == n1.advertise_address

            # The probe still answers, but the calls fail: only passive detection can see it.
            broken.failing = True
            for _ in range(3):
                with pytest.raises(CallFailure) as failed:
                    await n0.call_agent(NAME, ASK)
                assert (failed.value.code, failed.value.node) == (CallErrorCode.BACKEND_ERROR, "n1")
            await eventually(lambda: equals(candidates(n0), 1), 5)
            assert await best_next_hop(n0) == n2.advertise_address
            assert (await n0.call_agent(NAME, ASK)).served_by == "n2"
            assert hosting.health.ejections == 1

            # After the ejection a good probe brings n1 back, with the failures in its error rate: a
            # worse MED, so n2 keeps the traffic.
            await eventually(lambda: equals(candidates(n0), 2), 5)
            decision = await n0.explain(NAME)
            assert decision is not None and decision.reason is DecisionReason.MED
            assert decision.best.attrs.next_hop == n2.advertise_address
            back = decision.ranked[1].attrs
            assert back.med is not None and back.med >= 300 and back.agent.health.error_rate >= 0.3


async def jittering(settings: HealthSettings, seconds: float) -> tuple[float, int]:
    """UPDATEs n0 receives while n1's backend answers probes in 100 ms ± 15 %, and the probes made."""
    async with running(*configs([65001, 65002])) as (n0, n1):
        await link([n0, n1], [(0, 1)])
        service = Service("n1", seed=11)
        service.delay, service.jitter = 0.1, 0.15
        async with hosted(n1, service, settings):
            await everywhere([n0], NAME)
            await asyncio.sleep(0.3)  # past the first probes and the End-of-RIB exchange
            before, probes = updates_received(n0, n1), service.probes
            await asyncio.sleep(seconds)
            return updates_received(n0, n1) - before, service.probes - probes


async def test_a_jittering_backend_causes_no_update_storm() -> None:
    # med_min_change 1: only the relative band and the settling keep the jitter (MED 10 ± 1.5) out.
    updates, probes = await jittering(HealthSettings(probe_every=0.05, med_min_change=1), 2.0)
    assert probes >= 10
    assert updates <= 1, f"{updates} UPDATEs for {probes} probes"


async def test_without_hysteresis_the_same_jitter_would_be_a_storm() -> None:
    # The control for the test above: no smoothing, no band, no settling; every move of a point is sent.
    raw = HealthSettings(probe_every=0.05, med_min_change=1, med_min_ratio=0, settle=1, latency_smoothing=1.0)
    updates, probes = await jittering(raw, 2.0)
    assert probes >= 10
    assert updates >= probes / 4, f"{updates} UPDATEs for {probes} probes"


async def equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected
