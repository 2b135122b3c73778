"""ADD-PATH over real sessions (RFC 7911): a reflector in front of a multipath client.

Three origins o1-o3 host `shared.agent`; they and a front node are route reflector clients of one
reflector (all AS 65000). Without ADD-PATH the front node learns only the reflector's best path and
sends every call to one origin; with `add_paths: 3` on the reflector's neighbour entry for the front
node, the capability negotiated in OPEN carries all three paths and the front node spreads calls.
"""

from __future__ import annotations

from collections import Counter

from agentmesh.agents.base import AgentInfo, AgentRequest
from agentmesh.agents.health import HealthSettings
from agentmesh.agents.local import LocalAgent, LocalBackend
from agentmesh.config import Config, ForwardingConfig, NodeConfig
from agentmesh.speaker.node import Node, RouteTable
from tests.support.nodes import FAST_TIMERS, established, eventually, neighbor_of, node_config, running

AS = 65000
QUIET = HealthSettings(probe_every=60.0)


def front_config() -> Config:
    node = NodeConfig(name="front", asn=AS, router_id="10.0.0.2", listen="127.0.0.1:0")
    return Config(node=node, timers=FAST_TIMERS, forwarding=ForwardingConfig(maximum_paths=3))


CONFIGS = [node_config("rr", AS, "10.0.0.1"), front_config()]
CONFIGS += [node_config(f"o{i}", AS, f"10.0.1.{i}") for i in (1, 2, 3)]


async def build(rr: Node, front: Node, origins: list[Node], add_paths: int) -> None:
    await rr.add_neighbor(
        neighbor_of(front).model_copy(update={"route_reflector_client": True, "add_paths": add_paths})
    )
    await front.add_neighbor(neighbor_of(rr))
    await established(rr, front)
    for origin in origins:
        await rr.add_neighbor(neighbor_of(origin).model_copy(update={"route_reflector_client": True}))
        await origin.add_neighbor(neighbor_of(rr))
        await established(rr, origin)
        agent = LocalAgent(AgentInfo("agent"), lambda request, name=origin.name: name)
        await origin.host(LocalBackend(origin.name, [agent]), "shared", rediscover_every=None, health=QUIET)
    await eventually(lambda: _candidates(rr, len(origins)), 10)


async def _candidates(node: Node, count: int) -> bool:
    decision = await node.explain("shared.agent")
    return decision is not None and len(decision.ranked) == count


async def _next_hops(node: Node) -> set[str]:
    resolution = await node.resolve_with_policy("shared.agent")
    return set() if resolution is None else set(resolution.next_hops)


async def served_by(node: Node, calls: int) -> Counter[str]:
    replies = [
        await node.call_agent("shared.agent", AgentRequest(arguments={}), timeout=5) for _ in range(calls)
    ]
    return Counter(reply.reply.text for reply in replies)


async def test_the_reflector_sends_every_path_and_the_client_spreads_calls_over_them() -> None:
    async with running(*CONFIGS) as (rr, front, *origins):
        await build(rr, front, origins, add_paths=3)
        hops = {origin.advertise_address for origin in origins}
        await eventually(lambda: _has_hops(front, hops), 10)
        assert await served_by(front, 30) == {"o1": 10, "o2": 10, "o3": 10}
        [status] = [peer for peer in await rr.peers() if peer.address == front.advertise_address]
        assert (status.add_paths, status.sending_paths, status.routes_advertised) == (3, 3, 3)
        [seen] = [peer for peer in await front.peers() if peer.address == rr.advertise_address]
        assert seen.receiving_paths and seen.routes_received == 3
        received = await front.routes(RouteTable.ADJ_RIB_IN, rr.advertise_address, "shared.agent")
        assert len(received) == 3

        # One origin stops hosting: only its path is withdrawn, calls go to the two left.
        await origins[1].withdraw_agents(["shared.agent"])
        await eventually(lambda: _has_hops(front, hops - {origins[1].advertise_address}), 10)
        assert await served_by(front, 10) == {"o1": 5, "o3": 5}


async def test_without_add_path_the_client_has_the_reflectors_best_path_only() -> None:
    async with running(*CONFIGS) as (rr, front, *origins):
        await build(rr, front, origins, add_paths=0)
        await eventually(lambda: _has_hops(front, {origins[0].advertise_address}), 10)
        assert await served_by(front, 6) == {"o1": 6}
        [status] = [peer for peer in await rr.peers() if peer.address == front.advertise_address]
        assert status.sending_paths == 0 and status.routes_advertised == 1


async def _has_hops(node: Node, hops: set[str]) -> bool:
    return await _next_hops(node) == hops
