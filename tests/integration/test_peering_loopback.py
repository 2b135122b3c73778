"""Real nodes in one process, peering over grpc.aio bidirectional streams on loopback."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode
from agentmesh.bgp.fsm import Reason, State
from agentmesh.config import router_id_to_int
from tests.support.nodes import established, eventually, neighbor_of, node_config, peer_with, running, status


async def test_two_nodes_reach_established_over_ebgp() -> None:
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        await peer_with(a, b)
        await established(a, b)
        seen_by_a = await status(a, b.advertise_address)
        assert seen_by_a.peer_id == router_id_to_int("10.0.0.2")
        assert seen_by_a.hold_time == 3
        assert not seen_by_a.internal


async def test_internal_peers_in_one_as_reach_established() -> None:
    async with running(node_config("a", 65010, "10.0.0.1"), node_config("b", 65010, "10.0.0.2")) as (a, b):
        await peer_with(a, b)
        await established(a, b)
        assert (await status(a, b.advertise_address)).internal


@pytest.mark.parametrize(("id_a", "id_b"), [("10.0.0.1", "10.0.0.2"), ("10.0.0.9", "10.0.0.2")])
@pytest.mark.parametrize("attempt", range(3))
async def test_simultaneous_dials_end_with_exactly_one_session(id_a: str, id_b: str, attempt: int) -> None:
    async with running(node_config("a", 65001, id_a), node_config("b", 65002, id_b)) as (a, b):
        # Both sides are active and are configured at the same moment, so both dial (RFC 4271 §6.8).
        await asyncio.gather(a.add_neighbor(neighbor_of(b)), b.add_neighbor(neighbor_of(a)))
        await established(a, b)

        async def one_stream_each() -> bool:
            return (await status(a, b.advertise_address)).connections == 1 and (
                await status(b, a.advertise_address)
            ).connections == 1

        await eventually(one_stream_each, timeout=5)
        # The session survives the hold time (3 s): the streams kept by the two sides are one and the same.
        await asyncio.sleep(3.5)
        for node, other in ((a, b), (b, a)):
            peer = await status(node, other.advertise_address)
            assert peer.state is State.ESTABLISHED
            assert peer.connections == 1


async def test_passive_neighbour_only_accepts() -> None:
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        await peer_with(a, b, b_passive=True)  # a never dials b: b must dial a
        await established(a, b)


async def test_disabling_a_peer_sends_cease_with_the_shutdown_communication() -> None:
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        await peer_with(a, b)
        await established(a, b)
        watch = b.watch()
        await a.remove_neighbor(b.advertise_address)
        event = await asyncio.wait_for(watch.get(), 5)
        assert (event.old, event.new, event.reason) == (
            State.ESTABLISHED,
            State.IDLE,
            Reason.NOTIFICATION_RECEIVED,
        )
        assert event.notification is not None
        assert (event.notification.code, event.notification.subcode) == (
            ErrorCode.CEASE,
            CeaseSubcode.PEER_DECONFIGURED,
        )


async def test_node_stop_sends_administrative_shutdown() -> None:
    async with running(node_config("b", 65002, "10.0.0.2")) as (b,):
        async with running(node_config("a", 65001, "10.0.0.1")) as (a,):
            await peer_with(a, b)
            await established(a, b)
            watch = b.watch()
        # Leaving the inner block stopped a.
        event = await asyncio.wait_for(watch.get(), 5)
        assert event.notification is not None
        assert (event.notification.code, event.notification.subcode) == (
            ErrorCode.CEASE,
            CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
        )
        assert event.notification.shutdown_communication == "node shutting down"
        assert (await status(b, a.advertise_address)).state is not State.ESTABLISHED


async def test_a_stopped_node_refuses_calls_instead_of_hanging() -> None:
    async with running(node_config("a", 65001, "10.0.0.1")) as (a,):
        pass
    with pytest.raises(RuntimeError, match="not running"):
        await asyncio.wait_for(a.peers(), 2)
