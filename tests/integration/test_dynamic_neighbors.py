"""Dynamic neighbours: a node accepts peers from an address range, and forgets them with their session.

On loopback every connection comes from 127.0.0.1, which is what the ranges are matched against.
"""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from agentmesh.bgp.errors import ErrorCode, OpenSubcode
from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.config import Config, DynamicNeighborConfig, GracefulRestartConfig, NodeConfig
from agentmesh.speaker.node import Node, PeerStatus
from tests.support.nodes import FAST_TIMERS, eventually, neighbor_of, node_config, running


def reflector(*ranges: DynamicNeighborConfig) -> Config:
    node = NodeConfig(name="rr", asn=65001, router_id="10.0.0.1", listen="127.0.0.1:0")
    return Config(node=node, timers=FAST_TIMERS, dynamic_neighbors=ranges)


async def peers(node: Node) -> dict[str, PeerStatus]:
    return {peer.address: peer for peer in await node.peers()}


def refusals(logs: list[dict[str, Any]]) -> list[str]:
    return [line["why"] for line in logs if line["event"] == "connection_refused"]


async def test_a_peer_from_the_range_is_accepted_and_goes_with_its_session() -> None:
    clients = DynamicNeighborConfig(prefix="127.0.0.0/8", asn=65002, description="clients", limit=1)
    configs = (reflector(clients), node_config("c1", 65002, "10.0.0.2"), node_config("c2", 65002, "10.0.0.3"))
    async with running(*configs) as (rr, c1, c2):
        await c1.add_neighbor(neighbor_of(rr))

        async def accepted_c1() -> bool:
            accepted = (await peers(rr)).get(c1.advertise_address)
            return accepted is not None and accepted.state is State.ESTABLISHED

        await eventually(accepted_c1, timeout=10)
        accepted = (await peers(rr))[c1.advertise_address]
        assert (accepted.asn, accepted.passive) == (65002, True)
        assert accepted.description == "clients (dynamic, 127.0.0.0/8)"
        await c1.announce_agents(["team.agent"], AgentAttributes(description="c1's"))

        async def learnt() -> bool:
            return await rr.resolve("team.agent") is not None

        await eventually(learnt, timeout=10)

        # The range holds one neighbour at most: a second client is refused while the first is up.
        with capture_logs() as logs:
            await c2.add_neighbor(neighbor_of(rr))

            async def refused() -> bool:
                return bool(refusals(logs))

            await eventually(refused, timeout=10)
        assert refusals(logs)[0] == "dynamic_neighbors[0] is at its limit of 1"
        assert c2.advertise_address not in await peers(rr)

        # The first client leaves (Cease 6/3): its routes are withdrawn and the neighbour is forgotten,
        # which frees the range for the second one, whose retries now get in.
        await c1.remove_neighbor(rr.advertise_address)

        async def gone() -> bool:
            return c1.advertise_address not in await peers(rr)

        await eventually(gone, timeout=10)
        assert await rr.resolve("team.agent") is None
        await c2.wait_for_state(rr.advertise_address, State.ESTABLISHED, 10)
        assert list(await peers(rr)) == [c2.advertise_address]


async def test_a_peer_outside_every_range_is_refused_with_the_reason() -> None:
    elsewhere = DynamicNeighborConfig(prefix="127.0.0.2/32", asn=65002)
    async with running(reflector(elsewhere), node_config("c1", 65002, "10.0.0.2")) as (rr, c1):
        with capture_logs() as logs:
            await c1.add_neighbor(neighbor_of(rr))

            async def refused() -> bool:
                return bool(refusals(logs))

            await eventually(refused, timeout=10)
        assert (
            refusals(logs)[0] == "not a configured neighbour and 127.0.0.1 is in no dynamic_neighbors prefix"
        )
        assert await peers(rr) == {}
        assert (await peers(c1))[rr.advertise_address].state is not State.ESTABLISHED


async def test_the_open_must_carry_the_range_asn() -> None:
    other_as = DynamicNeighborConfig(prefix="127.0.0.0/8", asn=65009)
    async with running(reflector(other_as), node_config("c1", 65002, "10.0.0.2")) as (rr, c1):
        watch = c1.watch()
        await c1.add_neighbor(neighbor_of(rr))
        while (event := await watch.get()).notification is None:
            pass
        assert (event.notification.code, event.notification.subcode) == (
            ErrorCode.OPEN_MESSAGE,
            OpenSubcode.BAD_PEER_AS,
        )

        async def forgotten() -> bool:
            return await peers(rr) == {}

        await eventually(forgotten, timeout=10)


async def test_a_peer_claiming_an_address_it_does_not_connect_from_is_refused() -> None:
    # c1 says it is at 127.0.0.9 (its advertise address), but its connections come from 127.0.0.1.
    clients = DynamicNeighborConfig(prefix="127.0.0.0/8", asn=65002)
    liar = node_config("c1", 65002, "10.0.0.2")
    liar = liar.model_copy(
        update={"node": liar.node.model_copy(update={"advertise_address": "127.0.0.9:7000"})}
    )
    with capture_logs() as logs:
        async with running(reflector(clients), liar) as (rr, c1):
            await c1.add_neighbor(neighbor_of(rr))

            async def refused() -> bool:
                return bool(refusals(logs))

            await eventually(refused, timeout=10)
            assert refusals(logs)[0] == "it claims the address 127.0.0.9 but connects from 127.0.0.1"
            assert await peers(rr) == {}


async def test_a_peer_on_ipv6_is_matched_by_its_ipv6_source() -> None:
    node = NodeConfig(name="rr", asn=65001, router_id="10.0.0.1", listen="[::1]:0")
    rr_config = Config(
        node=node, timers=FAST_TIMERS, dynamic_neighbors=(DynamicNeighborConfig(prefix="::1/128", asn=65002),)
    )
    client = Config(
        node=NodeConfig(name="c1", asn=65002, router_id="10.0.0.2", listen="[::1]:0"), timers=FAST_TIMERS
    )
    async with running(rr_config, client) as (rr, c1):
        await c1.add_neighbor(neighbor_of(rr))
        await c1.wait_for_state(rr.advertise_address, State.ESTABLISHED, 10)
        assert list(await peers(rr)) == [c1.advertise_address]


async def test_with_graceful_restart_a_dynamic_only_node_defers_end_of_rib_to_the_readiness_timeout() -> None:
    # RFC 4724 §4.1: a restarting node sends End-of-RIB once it has its peers' routes. Peers that
    # dial in from a range cannot be waited for by name, so the readiness timeout is the deferral.
    clients = DynamicNeighborConfig(prefix="127.0.0.0/8", asn=65002)
    rr = reflector(clients)
    timers = rr.timers.model_copy(update={"readiness_timeout": 5.0})
    rr = rr.model_copy(update={"timers": timers, "graceful_restart": GracefulRestartConfig(enabled=True)})
    with capture_logs() as logs:
        async with running(rr, node_config("c1", 65002, "10.0.0.2")) as (rr_node, c1):
            await c1.add_neighbor(neighbor_of(rr_node))
            await c1.wait_for_state(rr_node.advertise_address, State.ESTABLISHED, 10)
            assert rr_node.ready  # readiness does not wait for peers nobody configured
            released = [line for line in logs if line["event"] == "end_of_rib_released"]
            assert released == []

            async def deferred() -> bool:
                return any(line["event"] == "end_of_rib_released" for line in logs)

            await eventually(deferred, timeout=10)
            [line] = [line for line in logs if line["event"] == "end_of_rib_released"]
            assert line["why"] == "readiness timeout"
