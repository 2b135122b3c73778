"""The node's gRPC server: PeeringService, ForwardingService, the standard health service and reflection.

All four share one port, served in plaintext or, with server credentials, over TLS (docs/security.md).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentmesh.transport.forwarding import ForwardingServicer
from agentmesh.transport.streams import PEER_ADDRESS_KEY, ServerStream
from agentmesh.transport.tls import identities
from agentmesh.v1 import forwarding_pb2, forwarding_pb2_grpc, peering_pb2, peering_pb2_grpc

#: Grace period for in-flight calls when the server stops.
STOP_GRACE = 1.0


class Pumpable(Protocol):
    async def run(self) -> None: ...

    def fail(self) -> None: ...


@dataclass(frozen=True)
class Caller:
    """What the server knows about whoever opened a Session call."""

    #: The address the dialler says it can be reached at (its advertise address), from call metadata.
    claimed_address: str | None
    #: The IP address the call's connection came from, as the transport saw it (None if unknown).
    source_host: str | None = None
    #: Identities (SAN DNS names and IP addresses) of the client certificate the TLS handshake verified;
    #: empty on a plaintext server or when the client presented none.
    identities: tuple[str, ...] = ()


#: Called with who is calling and the stream; returns the connection to pump or raises PermissionError
#: when the caller is not an acceptable neighbour.
Acceptor = Callable[[Caller, ServerStream], Awaitable[Pumpable]]


def source_host(peer: str | None) -> str | None:
    """The IP address in a grpc peer string ("ipv4:127.0.0.1:5000", "ipv6:%5B::1%5D:5000"), else None."""
    if not peer:
        return None
    kind, _, rest = urllib.parse.unquote(peer).partition(":")  # grpc URL-encodes IPv6 brackets
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]") or None
    return None


class PeeringServicer(peering_pb2_grpc.PeeringServiceServicer):
    """Hands each Session call to the node as an inbound BGP connection."""

    def __init__(self, accept: Acceptor) -> None:
        self._accept = accept

    # The handler drives the stream with context.read()/write() rather than returning an iterator.
    async def Session(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[peering_pb2.SessionRequest],
        context: grpc.aio.ServicerContext[peering_pb2.SessionRequest, peering_pb2.SessionResponse],
    ) -> None:
        claimed = next((v for k, v in context.invocation_metadata() or () if k == PEER_ADDRESS_KEY), None)
        caller = Caller(
            claimed_address=claimed if isinstance(claimed, str) else None,
            source_host=source_host(context.peer()),
            identities=identities(context.auth_context()),
        )
        stream = ServerStream(context)
        try:
            connection = await self._accept(caller, stream)
        except PermissionError as refused:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(refused))
            return
        try:
            await stream.accept()
        except BaseException:
            connection.fail()  # registered with the node but never pumped: report the stream as failed
            raise
        await connection.run()


class GrpcServer:
    """A grpc.aio server with the node's services, health and reflection."""

    def __init__(
        self,
        listen: str,
        accept: Acceptor,
        forwarding: ForwardingServicer,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self._listen = listen
        self._credentials = credentials
        self._server = grpc.aio.server()
        self.health = health.aio.HealthServicer()
        peering_pb2_grpc.add_PeeringServiceServicer_to_server(PeeringServicer(accept), self._server)
        forwarding_pb2_grpc.add_ForwardingServiceServicer_to_server(forwarding, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self._services = (
            peering_pb2.DESCRIPTOR.services_by_name["PeeringService"].full_name,
            forwarding_pb2.DESCRIPTOR.services_by_name["ForwardingService"].full_name,
        )
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            (*self._services, health_name, reflection.SERVICE_NAME), self._server
        )

    async def start(self) -> int:
        """Bind and start; returns the bound port (useful when the configured port is 0)."""
        if self._credentials is None:
            port = self._server.add_insecure_port(self._listen)
        else:
            port = self._server.add_secure_port(self._listen, self._credentials)
        if port == 0:
            raise OSError(f"cannot listen on {self._listen}")
        await self._server.start()
        # Each service is live at once (liveness); the server as a whole ("") reports readiness,
        # which the node sets once its initial table exchange is over.
        for service in self._services:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        return port

    async def set_ready(self) -> None:
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Refuse new calls and give those in flight `grace` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
