"""Multipath over real nodes: one agent hosted by three origins, calls spread and never lost.

A front node (AS65001) peers with three origins (AS65002-65004) that each host `shared.agent`,
answering with their own name. The three paths are equally good (same AS_PATH length, no MED), so
with `forwarding.maximum_paths: 3` the front node spreads calls over them by its strategy.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from agentmesh.agents.base import AgentInfo, AgentRequest, CallFailure
from agentmesh.agents.health import HealthSettings
from agentmesh.agents.local import LocalAgent, LocalBackend
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.config import Config, ForwardingConfig, NodeConfig
from agentmesh.speaker.node import Node
from tests.support.nodes import FAST_TIMERS, established, eventually, neighbor_of, node_config, running

#: Probing once a minute: these tests are about forwarding, not health.
QUIET = HealthSettings(probe_every=60.0)


def front(strategy: str) -> Config:
    node = NodeConfig(name="front", asn=65001, router_id="10.0.0.1", listen="127.0.0.1:0")
    forwarding = ForwardingConfig(maximum_paths=3, strategy=strategy)
    return Config(node=node, timers=FAST_TIMERS, forwarding=forwarding)


async def mesh(f: Node, origins: list[Node]) -> None:
    for origin in origins:
        await f.add_neighbor(neighbor_of(origin))
        await origin.add_neighbor(neighbor_of(f))
        await established(f, origin)
        agent = LocalAgent(AgentInfo("agent"), lambda request, name=origin.name: name)
        await origin.host(LocalBackend(origin.name, [agent]), "shared", rediscover_every=None, health=QUIET)
    await eventually(lambda: _paths(f, len(origins)), 10)


async def _paths(node: Node, count: int) -> bool:
    decision = await node.explain("shared.agent")
    return decision is not None and len(decision.ranked) == count


async def served_by(node: Node, calls: int) -> Counter[str]:
    replies = [
        await node.call_agent("shared.agent", AgentRequest(arguments={}), timeout=5) for _ in range(calls)
    ]
    return Counter(reply.reply.text for reply in replies)


ORIGINS = [node_config(f"o{i}", 65001 + i, f"10.0.0.{1 + i}") for i in (1, 2, 3)]


async def test_round_robin_spreads_calls_evenly() -> None:
    async with running(front("round_robin"), *ORIGINS) as (f, *origins):
        await mesh(f, origins)
        assert await served_by(f, 30) == {"o1": 10, "o2": 10, "o3": 10}
        resolution = await f.resolve_with_policy("shared.agent")
        assert resolution is not None
        assert sorted(resolution.next_hops) == sorted(origin.advertise_address for origin in origins)


@pytest.mark.parametrize("strategy", ["least_outstanding", "power_of_two", "weighted_health"])
async def test_other_strategies_spread_calls_within_a_tolerance(strategy: str) -> None:
    async with running(front(strategy), *ORIGINS) as (f, *origins):
        await mesh(f, origins)
        # Concurrent calls, so that "outstanding" means something.
        replies = await asyncio.gather(
            *(f.call_agent("shared.agent", AgentRequest(arguments={}), timeout=5) for _ in range(150))
        )
        spread = Counter(reply.reply.text for reply in replies)
        assert set(spread) == {"o1", "o2", "o3"} and all(20 <= n <= 80 for n in spread.values()), spread


async def test_without_multipath_every_call_takes_the_best_path() -> None:
    config = front("round_robin").model_copy(update={"forwarding": ForwardingConfig()})
    async with running(config, *ORIGINS) as (f, *origins):
        await mesh(f, origins)
        assert len(await served_by(f, 9)) == 1


async def test_close_meds_share_the_load_within_the_med_tolerance() -> None:
    # As health MEDs of similar backends: 10, 12 and 40. With a tolerance of 5 the first two share.
    forwarding = ForwardingConfig(maximum_paths=3, med_tolerance=5)
    config = front("round_robin").model_copy(update={"forwarding": forwarding})
    async with running(config, *ORIGINS) as (f, *origins):
        for origin, med in zip(origins, (10, 12, 40), strict=True):
            await f.add_neighbor(neighbor_of(origin))
            await origin.add_neighbor(neighbor_of(f))
            await established(f, origin)
            await origin.announce_agents(["close.agent"], AgentAttributes(), med=med)

        async def spread() -> bool:
            resolution = await f.resolve_with_policy("close.agent")
            return resolution is not None and len(resolution.next_hops) == 2

        await eventually(spread, 10)
        resolution = await f.resolve_with_policy("close.agent")
        assert resolution is not None
        assert sorted(resolution.next_hops) == sorted(o.advertise_address for o in origins[:2])


async def test_no_call_is_lost_when_an_origin_dies_under_load() -> None:
    async with running(front("round_robin"), *ORIGINS) as (f, *origins):
        await mesh(f, origins)
        failures: list[CallFailure] = []
        served: Counter[str] = Counter()

        async def load() -> None:
            while True:
                try:
                    reply = await f.call_agent("shared.agent", AgentRequest(arguments={}), timeout=5)
                    served[reply.reply.text] += 1
                except CallFailure as failure:  # a lost call is what this test looks for
                    failures.append(failure)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(load())
        try:
            await asyncio.sleep(0.3)
            # o2's server goes away at once; its routes leave the front node only when the session
            # ends. Calls that pick o2 meanwhile cannot connect, and move to another path.
            await origins[1]._server.stop()  # type: ignore[union-attr]
            before = served.copy()
            await asyncio.sleep(1.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Calls run one at a time, so at most the one in flight at o2 when it stopped can fail: it
        # had reached o2, whose agent may have run it, so it must not run again elsewhere. Every call
        # that could not reach o2 moved to another origin.
        assert len(failures) <= 1 and all(failure.delivered for failure in failures), failures
        after = served - before
        assert after["o1"] > 10 and after["o3"] > 10 and after["o2"] == 0
