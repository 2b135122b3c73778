"""A hand-driven peer speaks to a real node over gRPC: each bad OPEN gets its NOTIFICATION, no session.

The test plays the dialling neighbour itself, so it sees exactly what goes over the wire: the node's
OPEN first (it sends one as soon as the stream is up), then its answer to ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from agentmesh.bgp.fsm import State
from agentmesh.config import NeighborConfig
from agentmesh.speaker.node import Node
from agentmesh.transport.streams import ACCEPTED_KEY, PEER_ADDRESS_KEY
from agentmesh.v1 import bgp_pb2 as pb
from agentmesh.v1 import peering_pb2, peering_pb2_grpc
from tests.support.nodes import node_config, running, status

#: The address the hand-driven peer claims; nothing listens there, and the neighbour is passive.
CLAIMED = "127.0.0.1:9"
NODE_ID = 0x0A000001  # 10.0.0.1


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running(node_config("a", 65001, "10.0.0.1")) as (node,):
        await node.add_neighbor(NeighborConfig(address=CLAIMED, asn=65002, passive=True))
        yield node


class RawPeer:
    """One Session call driven message by message."""

    def __init__(self, node: Node, claimed: str = CLAIMED) -> None:
        self.channel = grpc.aio.insecure_channel(node.advertise_address)
        stub = peering_pb2_grpc.PeeringServiceStub(self.channel)
        self.call = stub.Session(metadata=((PEER_ADDRESS_KEY, claimed),))

    async def send(self, message: pb.BgpMessage) -> None:
        await self.call.write(peering_pb2.SessionRequest(message=message))

    async def receive(self) -> pb.BgpMessage | None:
        response = await asyncio.wait_for(self.call.read(), 5)
        return response.message if isinstance(response, peering_pb2.SessionResponse) else None

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def open_message(**overrides: int) -> pb.BgpMessage:
    fields = {"version": 4, "asn": 65002, "hold_time": 9, "bgp_identifier": 0x0A000002} | overrides
    return pb.BgpMessage(open=pb.Open(**fields))


async def exchange(
    node: Node, first: pb.BgpMessage, then: pb.BgpMessage | None = None
) -> list[pb.BgpMessage]:
    """Send `first` (and `then`), return everything the node sent until it closed the stream."""
    peer = RawPeer(node)
    try:
        headers = await asyncio.wait_for(peer.call.initial_metadata(), 5)
        assert any(key == ACCEPTED_KEY for key, _ in headers or ())
        await peer.send(first)
        if then is not None:
            await peer.send(then)
        received = []
        while (message := await peer.receive()) is not None:
            received.append(message)
        return received
    finally:
        await peer.close()


@pytest.mark.parametrize(
    ("bad_open", "code", "subcode", "data"),
    [
        (open_message(version=3), 2, 1, b"\x00\x04"),  # unsupported version; data: the version we speak
        (open_message(asn=65099), 2, 2, b""),  # bad peer AS
        (open_message(bgp_identifier=0), 2, 3, b""),  # bad BGP identifier
        (open_message(hold_time=1), 2, 6, b""),  # unacceptable hold time
        (open_message(hold_time=2), 2, 6, b""),
    ],
    ids=["version", "peer-as", "identifier", "hold-1", "hold-2"],
)
async def test_bad_open_is_answered_with_its_notification(
    node: Node, bad_open: pb.BgpMessage, code: int, subcode: int, data: bytes
) -> None:
    received = await exchange(node, bad_open)
    assert [m.WhichOneof("kind") for m in received] == ["open", "notification"]
    notification = received[1].notification
    assert (notification.code, notification.subcode, notification.data) == (code, subcode, data)
    assert (await status(node, CLAIMED)).state is State.ACTIVE  # no session; waiting for the next try


async def test_internal_peer_with_our_identifier_is_refused() -> None:
    async with running(node_config("a", 65001, "10.0.0.1")) as (node,):
        await node.add_neighbor(NeighborConfig(address=CLAIMED, asn=65001, passive=True))
        received = await exchange(node, open_message(asn=65001, bgp_identifier=NODE_ID))
        assert (received[-1].notification.code, received[-1].notification.subcode) == (2, 3)


async def test_message_of_unknown_kind_is_a_header_error(node: Node) -> None:
    received = await exchange(node, pb.BgpMessage())
    assert (received[-1].notification.code, received[-1].notification.subcode) == (1, 3)


async def test_update_before_open_is_an_fsm_error(node: Node) -> None:
    received = await exchange(node, pb.BgpMessage(update=pb.Update(end_of_rib=True)))
    assert (received[-1].notification.code, received[-1].notification.subcode) == (5, 1)  # RFC 6608


async def test_good_open_and_keepalive_establish_the_session(node: Node) -> None:
    peer = RawPeer(node)
    try:
        await peer.send(open_message())
        first, second = await peer.receive(), await peer.receive()
        assert first is not None and first.open.asn == 65001 and first.open.bgp_identifier == NODE_ID
        assert second is not None and second.WhichOneof("kind") == "keepalive"
        await peer.send(pb.BgpMessage(keepalive=pb.Keepalive()))
        await node.wait_for_state(CLAIMED, State.ESTABLISHED, 5)
        assert (await status(node, CLAIMED)).hold_time == 3  # the smaller of 9 and the node's 3
    finally:
        await peer.close()


async def test_stream_from_an_unknown_address_is_refused(node: Node) -> None:
    peer = RawPeer(node, claimed="127.0.0.1:7")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await peer.receive()
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "not a configured neighbour" in (refused.value.details() or "")
    finally:
        await peer.close()
