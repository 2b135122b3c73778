"""Route reflection over real sessions (RFC 4456): a loop between reflectors, a hierarchy, 20 clients.

Every node is in AS 65000; sessions are iBGP over gRPC on loopback with OS-chosen ports.
"""

from __future__ import annotations

from agentmesh.bgp.messages import AgentAttributes
from agentmesh.config import Config, NodeConfig, router_id_to_int
from agentmesh.speaker.node import Node, RouteTable
from tests.support.nodes import FAST_TIMERS, established, eventually, neighbor_of, node_config, running

AS = 65000


def reflector_config(name: str, router_id: str, cluster_id: str | None = None) -> Config:
    node = NodeConfig(name=name, asn=AS, router_id=router_id, listen="127.0.0.1:0", cluster_id=cluster_id)
    return Config(node=node, timers=FAST_TIMERS)


async def serve_client(reflector: Node, client: Node) -> None:
    """`client` peers with `reflector`, which treats it as a route reflector client."""
    await reflector.add_neighbor(neighbor_of(client).model_copy(update={"route_reflector_client": True}))
    await client.add_neighbor(neighbor_of(reflector))
    await established(reflector, client)


async def next_hop(node: Node, name: str) -> str | None:
    found = await node.resolve(name)
    return None if found is None else found[1].attrs.next_hop


async def test_a_reflection_loop_between_two_reflectors_is_stopped_by_cluster_list() -> None:
    # Two redundant reflectors of one cluster, peering with each other as non-clients, both serving c.
    cluster = "10.0.0.100"
    configs = [reflector_config("r1", "10.0.0.1", cluster), reflector_config("r2", "10.0.0.2", cluster)]
    configs.append(node_config("c", AS, "10.0.0.9"))
    async with running(*configs) as (r1, r2, c):
        await r1.add_neighbor(neighbor_of(r2))
        await r2.add_neighbor(neighbor_of(r1))
        await established(r1, r2)
        await serve_client(r1, c)
        await serve_client(r2, c)
        await c.announce_agents(["c.agent"], AgentAttributes())
        # Each reflects c's route to the other, which finds its own cluster in CLUSTER_LIST and drops it.
        for reflector in (r1, r2):
            await eventually(lambda reflector=reflector: _dropped_loop(reflector), 10)  # type: ignore[misc]
        for reflector, other in ((r1, r2), (r2, r1)):
            assert await reflector.routes(RouteTable.ADJ_RIB_IN, other.advertise_address, "c.agent") == []
            assert await next_hop(reflector, "c.agent") == c.advertise_address


async def _dropped_loop(node: Node) -> bool:
    return bool(node.metrics.routes_dropped.labels("reflection_loop")._value.get() >= 1)


async def _has(node: Node, name: str) -> bool:
    return await node.resolve(name) is not None


async def test_a_two_level_hierarchy_converges_with_next_hops_at_the_origins() -> None:
    configs = [reflector_config("top", "10.0.0.1")]
    configs += [reflector_config("m1", "10.0.0.11"), reflector_config("m2", "10.0.0.12")]
    configs += [node_config(name, AS, f"10.0.1.{i}") for i, name in enumerate(("a", "b", "c"), start=1)]
    async with running(*configs) as (top, m1, m2, a, b, c):
        await serve_client(top, m1)
        await serve_client(top, m2)
        await serve_client(m1, a)
        await serve_client(m1, b)
        await serve_client(m2, c)
        await a.announce_agents(["a.agent"], AgentAttributes())
        await c.announce_agents(["c.agent"], AgentAttributes())
        everyone = (top, m1, m2, a, b, c)
        await eventually(lambda: _everywhere(everyone, ("a.agent", "c.agent")), 10)
        for node in everyone:
            assert await next_hop(node, "a.agent") == a.advertise_address or node is a
            assert await next_hop(node, "c.agent") == c.advertise_address or node is c
        found = await b.resolve("c.agent")
        assert found is not None
        clusters = found[1].attrs.cluster_list  # m1, top, m2: the reflectors it passed, latest first
        assert clusters == tuple(router_id_to_int(r) for r in ("10.0.0.11", "10.0.0.1", "10.0.0.12"))


async def _everywhere(nodes: tuple[Node, ...], names: tuple[str, ...]) -> bool:
    found = [await node.resolve(name) for node in nodes for name in names]
    return all(route is not None for route in found)


async def test_twenty_clients_hold_what_a_full_mesh_would_give_them() -> None:
    clients = [node_config(f"c{i}", AS, f"10.0.2.{i}") for i in range(1, 21)]
    async with running(reflector_config("rr", "10.0.0.1"), *clients) as (rr, *members):
        for member in members:
            await serve_client(rr, member)
        for index, member in enumerate(members):
            await member.announce_agents([f"client{index}.agent"], AgentAttributes())
        names = [f"client{index}.agent" for index in range(len(members))]
        await eventually(lambda: _all_learnt(members, len(names)), 20)
        # In a full mesh each client would learn every other client's route straight from it: same
        # names, NEXT_HOP the origin, empty AS_PATH, best path from the origin. The reflector gives that.
        for member in members:
            table = await member.loc_rib()
            assert sorted(table) == sorted(names)
            for index, origin in enumerate(members):
                path = table[f"client{index}.agent"]
                assert path.attrs.next_hop == origin.advertise_address and path.attrs.as_path == ()
                if origin is not member:
                    assert path.attrs.originator_id == router_id_to_int(origin.router_id)


async def _all_learnt(members: list[Node], count: int) -> bool:
    counts = [(await member.rib_counts()).loc_rib for member in members]
    return all(n == count for n in counts)
