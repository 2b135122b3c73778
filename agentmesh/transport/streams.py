"""gRPC bidirectional streams seen as BGP connections, for both ends of `PeeringService.Session`.

The dialling end identifies itself with the `agentmesh-peer-address` metadata; the called end
answers with response headers carrying `agentmesh-accepted` once it has taken the stream, which is
the moment the dialler reports Tcp_CR_Acked to its FSM (RFC 4271 §8.1.3, event 16).

The dialler's channel comes from a `ChannelFactory`: plaintext, or TLS checked against the
neighbour's `tls_name` (`agentmesh.transport.tls`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.transport.tls import PLAINTEXT, ChannelFactory
from agentmesh.v1 import bgp_pb2, peering_pb2, peering_pb2_grpc

PEER_ADDRESS_KEY = "agentmesh-peer-address"
ACCEPTED_KEY = "agentmesh-accepted"
#: How long a closing dialler waits for the called end to finish the call before cancelling it.
CLOSE_GRACE = 1.0
#: How long a failed dial waits for gRPC to say why it failed.
WHY_TIMEOUT = 1.0


class StreamRefused(Exception):
    """The called node did not take the stream (for example: not a configured neighbour)."""

    def __init__(self, code: grpc.StatusCode | None, details: str) -> None:
        super().__init__(f"{code.name if code else 'UNKNOWN'}: {details}")
        self.code = code

    @property
    def by_peer(self) -> bool:
        """Whether the called node itself refused, rather than the transport failing (UNAVAILABLE).

        With TLS 1.3 a client certificate the server refused shows as the connection closing.
        """
        return self.code is not grpc.StatusCode.UNAVAILABLE


class Stream(Protocol):
    """One end of a Session call: BGP messages in and out, then close."""

    async def read(self) -> bgp_pb2.BgpMessage | None:
        """The next message, or None once the other end has finished or the call failed."""
        ...

    async def write(self, message: bgp_pb2.BgpMessage) -> None: ...

    async def close(self) -> None:
        """Finish the call after what was written; never raises."""
        ...


class ServerStream:
    """The called end: wraps the servicer context. `close` lets the handler return."""

    def __init__(
        self, context: grpc.aio.ServicerContext[peering_pb2.SessionRequest, peering_pb2.SessionResponse]
    ):
        self._context = context
        self.finished = asyncio.Event()

    async def accept(self) -> None:
        await self._context.send_initial_metadata(((ACCEPTED_KEY, "1"),))

    async def read(self) -> bgp_pb2.BgpMessage | None:
        try:
            request = await self._context.read()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.RpcError):
            return None
        if not isinstance(request, peering_pb2.SessionRequest):
            return None  # grpc.aio.EOF: the dialler half-closed
        return request.message

    async def write(self, message: bgp_pb2.BgpMessage) -> None:
        await self._context.write(peering_pb2.SessionResponse(message=message))

    async def close(self) -> None:
        self.finished.set()


async def _connected(channel: grpc.aio.Channel) -> None:
    """Wait for the channel to connect; fail at the first refusal instead of waiting out gRPC's retries.

    A refused dial is Connect's TcpConnectionFails (RFC 4271 §8.2.2): the FSM, not the channel,
    decides when to try again.
    """
    state = channel.get_state(try_to_connect=True)
    while state is not grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            raise ConnectionRefusedError("peer not reachable")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


async def _why_unreachable(channel: grpc.aio.Channel) -> str:
    """gRPC's reason for the failed connection (refused, TLS handshake failed, ...).

    The connectivity state does not carry it; a call on the failed channel fails at once with it
    (without wait-for-ready), so the wait is bounded only in case gRPC already started another attempt.
    """
    # A health check, not a Session: should gRPC have connected meanwhile, the peer answers a
    # harmless question instead of seeing a Session without a claimed address.
    stub: Any = health_pb2_grpc.HealthStub(channel)  # Any: the stubs describe the sync API
    call = stub.Check(health_pb2.HealthCheckRequest(service=""))
    try:
        details: str | None = await asyncio.wait_for(call.details(), WHY_TIMEOUT)
    except (TimeoutError, grpc.aio.AioRpcError):
        details = None
    finally:
        call.cancel()
    return details or "peer not reachable"


class ClientStream:
    """The dialling end: owns its channel, one per connection attempt like a TCP connection."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        call: grpc.aio.StreamStreamCall[peering_pb2.SessionRequest, peering_pb2.SessionResponse],
    ):
        self._channel = channel
        self._call = call

    @classmethod
    async def dial(
        cls,
        target: str,
        local_address: str,
        timeout: float,
        *,
        channels: ChannelFactory = PLAINTEXT,
        tls_name: str | None = None,
    ) -> ClientStream:
        """Open a Session to `target`; raises StreamRefused or TimeoutError or ConnectionRefusedError.

        With TLS `channels`, the server's certificate must match `tls_name` (default: the target's host).
        """
        channel = channels.channel(target, tls_name)
        try:
            stub = peering_pb2_grpc.PeeringServiceStub(channel)
            try:
                await asyncio.wait_for(_connected(channel), timeout)
            except ConnectionRefusedError:
                raise ConnectionRefusedError(await _why_unreachable(channel)) from None
            call = stub.Session(metadata=((PEER_ADDRESS_KEY, local_address),))
            headers = await asyncio.wait_for(call.initial_metadata(), timeout)
            if not any(key == ACCEPTED_KEY for key, _ in (headers or ())):
                code = await call.code()
                details = await call.details()
                raise StreamRefused(code, details)
        except BaseException:
            await channel.close()
            raise
        return cls(channel, call)

    async def read(self) -> bgp_pb2.BgpMessage | None:
        try:
            response = await self._call.read()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return None
        if not isinstance(response, peering_pb2.SessionResponse):
            return None  # grpc.aio.EOF: the called end finished the call
        return response.message

    async def write(self, message: bgp_pb2.BgpMessage) -> None:
        await self._call.write(peering_pb2.SessionRequest(message=message))

    async def close(self) -> None:
        try:
            await self._call.done_writing()
            # The called end finishes the call once it has read our half-close.
            await asyncio.wait_for(self._call.code(), CLOSE_GRACE)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
            pass
        finally:
            self._call.cancel()
            await self._channel.close()
