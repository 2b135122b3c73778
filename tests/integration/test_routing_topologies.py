"""Routes over real nodes on loopback: chains, rings, iBGP meshes, withdrawals and tie-breaks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agentmesh.bgp.messages import AgentAttributes, BackendProtocol
from agentmesh.config import Config, NodeConfig, TimersConfig
from agentmesh.rib.decision import DecisionReason
from agentmesh.speaker.node import Node
from tests.support.nodes import established, eventually, peer_with, running

TIMERS = TimersConfig(
    hold_time=9, connect_retry_time=1.0, connect_retry_initial=0.2, min_advertisement_interval=0.05
)
AGENT = AgentAttributes(
    capabilities=("weather",), description="forecasts", backend_protocol=BackendProtocol.LOCAL, region="eu"
)


def configs(asns: Sequence[int]) -> list[Config]:
    return [
        Config(
            node=NodeConfig(name=f"n{i}", asn=asn, router_id=f"10.0.0.{i + 1}", listen="127.0.0.1:0"),
            timers=TIMERS,
        )
        for i, asn in enumerate(asns)
    ]


async def link(nodes: list[Node], edges: Sequence[tuple[int, int]]) -> None:
    for a, b in edges:
        await peer_with(nodes[a], nodes[b])
    await asyncio.gather(*(established(nodes[a], nodes[b]) for a, b in edges))


async def has_route(node: Node, name: str) -> bool:
    return name in await node.loc_rib()


async def everywhere(nodes: Sequence[Node], name: str, present: bool = True, timeout: float = 10) -> None:
    async def check() -> bool:
        return all([await has_route(node, name) == present for node in nodes])

    await eventually(check, timeout)


async def test_chain_of_five_ases_carries_the_as_path_to_the_end() -> None:
    async with running(*configs([65001, 65002, 65003, 65004, 65005])) as nodes:
        await link(nodes, [(0, 1), (1, 2), (2, 3), (3, 4)])
        await nodes[0].announce_agents(["acme.weather.forecast"], AGENT)
        await everywhere(nodes, "acme.weather.forecast")

        best = (await nodes[4].loc_rib())["acme.weather.forecast"]
        assert best.attrs.as_path == (65004, 65003, 65002, 65001)
        assert best.attrs.next_hop == nodes[3].advertise_address  # eBGP: next hop is the previous node
        assert best.attrs.local_pref is None  # never sent over eBGP
        assert best.attrs.agent == AGENT

        # Withdrawn at the origin, it disappears everywhere.
        await nodes[0].withdraw_agents(["acme.weather.forecast"])
        await everywhere(nodes, "acme.weather.forecast", present=False)


async def test_ring_of_six_ases_converges_without_loops_and_withdraws() -> None:
    async with running(*configs([65001, 65002, 65003, 65004, 65005, 65006])) as nodes:
        await link(nodes, [(i, (i + 1) % 6) for i in range(6)])
        await nodes[0].announce_agents(["ring.echo"], AGENT)
        await everywhere(nodes, "ring.echo")
        await asyncio.sleep(0.3)  # let any late alternative paths settle

        for i, node in enumerate(nodes[1:], start=1):
            path = (await node.loc_rib())["ring.echo"].attrs.as_path
            assert path[-1] == 65001
            assert len(path) == len(set(path)), f"loop in {path}"
            assert len(path) == min(i, 6 - i), f"n{i} kept a longer path {path}"
        # The opposite node heard the name from both sides and keeps both candidates.
        decision = await nodes[3].explain("ring.echo")
        assert decision is not None and len(decision.ranked) == 2

        await nodes[0].withdraw_agents(["ring.echo"])
        await everywhere(nodes, "ring.echo", present=False)


async def test_full_ibgp_mesh_of_three_does_not_reflect() -> None:
    async with running(*configs([65010, 65010, 65010])) as nodes:
        await link(nodes, [(0, 1), (1, 2), (0, 2)])
        await nodes[0].announce_agents(["team.summarize"], AGENT)
        await everywhere(nodes, "team.summarize")
        for node in nodes[1:]:
            best = (await node.loc_rib())["team.summarize"]
            assert best.attrs.as_path == ()  # no prepending inside the AS
            assert best.attrs.local_pref == 100  # always present on iBGP
            assert best.attrs.next_hop == nodes[0].advertise_address  # unchanged inside the AS
            decision = await node.explain("team.summarize")
            # Learnt from n0 only: the other member does not pass on an iBGP-learnt route (RFC 4271 §9.2.1).
            assert decision is not None and [p.source.key for p in decision.ranked] == [
                nodes[0].advertise_address
            ]


async def test_two_origins_every_node_picks_the_same_path_and_says_why() -> None:
    # Four ASes in a full mesh; n0 and n1 both host `shared.echo`, n0 with the lower MED.
    async with running(*configs([65001, 65002, 65003, 65004])) as nodes:
        await link(nodes, [(a, b) for a in range(4) for b in range(a + 1, 4)])
        await nodes[0].announce_agents(["shared.echo"], AGENT, med=10)
        await nodes[1].announce_agents(["shared.echo"], AGENT, med=20)

        async def both_known() -> bool:
            decisions = [await node.explain("shared.echo") for node in nodes[2:]]
            return all(d is not None and len(d.ranked) >= 2 for d in decisions)

        await eventually(both_known, 10)
        for node in nodes[2:]:
            decision = await node.explain("shared.echo")
            assert decision is not None
            assert decision.best.attrs.as_path == (65001,)
            assert decision.best.attrs.next_hop == nodes[0].advertise_address
            assert decision.reason is DecisionReason.MED
        for origin in nodes[:2]:
            decision = await origin.explain("shared.echo")
            assert decision is not None and decision.best.source.local
            assert decision.reason is DecisionReason.LOCALLY_ORIGINATED


async def test_a_stopped_origin_takes_its_routes_with_it() -> None:
    cfgs = configs([65001, 65002, 65003])
    async with running(*cfgs[1:]) as (b, c):
        async with running(cfgs[0]) as (a,):
            await link([a, b, c], [(0, 1), (1, 2)])
            await a.announce_agents([f"fleet.agent{i}" for i in range(100)], AGENT)
            await everywhere([b, c], "fleet.agent99")
        # a is gone: b flushes a's routes and withdraws them from c.
        await everywhere([b, c], "fleet.agent0", present=False)
        assert (await c.rib_counts()).loc_rib == 0


async def test_routes_reach_a_peer_that_comes_up_later() -> None:
    async with running(*configs([65001, 65002])) as (a, b):
        await a.announce_agents([f"early.agent{i}" for i in range(500)], AGENT)
        await link([a, b], [(0, 1)])
        await eventually(lambda: _count(b, 500), 10)


async def _count(node: Node, expected: int) -> bool:
    return (await node.rib_counts()).loc_rib == expected


async def test_remote_agents_resolve_by_name_aggregate_capability_and_glob() -> None:
    async with running(*configs([65001, 65002])) as (a, b):
        await link([a, b], [(0, 1)])
        await a.announce_agents(["acme.weather.forecast", "acme.weather.radar"], AGENT)
        await a.announce_agents(["acme.billing.*"], AgentAttributes(capabilities=("billing",)))
        await everywhere([b], "acme.billing.*")
        await everywhere([b], "acme.weather.radar")

        exact = await b.resolve("acme.weather.forecast")
        assert exact is not None and exact[0] == "acme.weather.forecast"
        assert exact[1].attrs.next_hop == a.advertise_address
        covered = await b.resolve("acme.billing.invoices.q3")
        assert covered is not None and covered[0] == "acme.billing.*"
        assert await b.resolve("acme.unknown") is None
        assert [name for name, _ in await b.with_capability("weather")] == [
            "acme.weather.forecast",
            "acme.weather.radar",
        ]
        assert [name for name, _ in await b.matching("acme.*.rad?r")] == ["acme.weather.radar"]
