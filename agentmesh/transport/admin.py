"""The AdminService: a thin gRPC adapter over the node's in-process API (DESIGN §4.3).

Every RPC converts its request, awaits one `Node` method and converts the answer; nothing here
keeps state of its own. The in-process errors map onto gRPC status codes: `UnknownPeer` is
NOT_FOUND, `PeerExists` ALREADY_EXISTS, `ValueError` INVALID_ARGUMENT, `PreconditionFailed`
FAILED_PRECONDITION. The admin server is separate from the peering server so that it can stay on
localhost while peers reach the node from elsewhere; bound elsewhere it requires a bearer token.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from agentmesh.agents.base import CallFailure
from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import AgentAttributes, BackendProtocol, Notification
from agentmesh.config import (
    ConfigError,
    NeighborConfig,
    int_to_router_id,
    is_loopback,
    join_host_port,
    parse_policy_yaml,
    policy_yaml,
    split_host_port,
)
from agentmesh.rib.policy import Verdict
from agentmesh.rib.rib import LOCAL
from agentmesh.speaker.events import NodeEvent, PeerStateEvent, RouteEntry, RouteEvent, WatcherOverflow
from agentmesh.speaker.forwarder import DEFAULT_HOP_LIMIT
from agentmesh.speaker.node import (
    Node,
    PeerExists,
    PeerStatus,
    PreconditionFailed,
    RouteTable,
    SoftReset,
    UnknownPeer,
)
from agentmesh.transport import codec
from agentmesh.transport.forwarding import decode_call, encode_error, encode_result
from agentmesh.v1 import admin_pb2 as pb
from agentmesh.v1 import admin_pb2_grpc

#: Routes per ListRoutes message unless asked otherwise, and the most allowed. At a few hundred
#: octets a route, 10 000 stay well under gRPC's 4 MiB message limit.
DEFAULT_BATCH = 1000
MAX_BATCH = 10_000
#: Grace period for in-flight RPCs when the server stops.
STOP_GRACE = 1.0

_STATES = {
    State.IDLE: pb.SESSION_STATE_IDLE,
    State.CONNECT: pb.SESSION_STATE_CONNECT,
    State.ACTIVE: pb.SESSION_STATE_ACTIVE,
    State.OPEN_SENT: pb.SESSION_STATE_OPEN_SENT,
    State.OPEN_CONFIRM: pb.SESSION_STATE_OPEN_CONFIRM,
    State.ESTABLISHED: pb.SESSION_STATE_ESTABLISHED,
}
_TABLES = {
    pb.TABLE_UNSPECIFIED: RouteTable.LOC_RIB,
    pb.TABLE_LOC_RIB: RouteTable.LOC_RIB,
    pb.TABLE_ADJ_RIB_IN: RouteTable.ADJ_RIB_IN,
    pb.TABLE_ADJ_RIB_OUT: RouteTable.ADJ_RIB_OUT,
}
_SOFT = {
    pb.SOFT_RESET_DIRECTION_UNSPECIFIED: None,
    pb.SOFT_RESET_DIRECTION_IN: SoftReset.IN,
    pb.SOFT_RESET_DIRECTION_OUT: SoftReset.OUT,
    pb.SOFT_RESET_DIRECTION_BOTH: SoftReset.BOTH,
}
_STATUS = (
    (UnknownPeer, grpc.StatusCode.NOT_FOUND),
    (PeerExists, grpc.StatusCode.ALREADY_EXISTS),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),
)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


def _version() -> str:
    try:
        return importlib.metadata.version("agentmesh")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Each RPC is one call into the node."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def _run(self, context: Context, work: Awaitable[T]) -> T:
        """Await `work`, turning the node's typed errors into the matching gRPC status."""
        try:
            return await work
        except Exception as error:
            for kind, code in _STATUS:
                if isinstance(error, kind):
                    await context.abort(code, str(error.args[0]) if error.args else str(error))
            raise

    # -- the node --------------------------------------------------------------------------

    async def GetNode(self, request: pb.GetNodeRequest, context: Context) -> pb.GetNodeResponse:
        node = self._node
        counts = await node.rib_counts()
        info = pb.NodeInfo(
            name=node.name,
            asn=node.asn,
            router_id=node.router_id,
            listen_address=node.listen_address,
            advertise_address=node.advertise_address,
            version=_version(),
            uptime_seconds=node.uptime(),
            ready=node.ready,
            rib=pb.RibCounts(
                adj_rib_in=counts.adj_rib_in,
                loc_rib=counts.loc_rib,
                adj_rib_out=counts.adj_rib_out,
                attribute_sets=counts.attribute_sets,
            ),
            backends=[
                pb.BackendInfo(
                    name=b["name"],
                    namespace=b["namespace"],
                    protocol=b["protocol"],
                    agents=b["agents"],
                    last_error=b["last_error"] or "",
                    health=_backend_health(b["health"]),
                )
                for b in node.backends()
            ],
        )
        return pb.GetNodeResponse(node=info)

    # -- peers -----------------------------------------------------------------------------

    async def ListPeers(
        self, request: pb.ListPeersRequest, context: Context
    ) -> AsyncIterator[pb.ListPeersResponse]:
        peers = await self._node.peers()
        if request.address:
            peers = [p for p in peers if p.address == request.address]
            if not peers:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no neighbour {request.address}")
        for status in sorted(peers, key=lambda p: p.address):
            yield pb.ListPeersResponse(peer=_peer(status))

    async def AddPeer(self, request: pb.AddPeerRequest, context: Context) -> pb.AddPeerResponse:
        neighbor = await self._neighbor_config(request.peer, context)
        await self._run(context, self._node.add_neighbor(neighbor))
        return pb.AddPeerResponse()

    async def DeletePeer(self, request: pb.DeletePeerRequest, context: Context) -> pb.DeletePeerResponse:
        await self._run(context, self._node.remove_neighbor(request.address))
        return pb.DeletePeerResponse()

    async def UpdatePeer(self, request: pb.UpdatePeerRequest, context: Context) -> pb.UpdatePeerResponse:
        neighbor = await self._neighbor_config(request.peer, context)
        reset = await self._run(context, self._node.update_neighbor(neighbor))
        return pb.UpdatePeerResponse(session_reset=reset)

    async def ResetPeer(self, request: pb.ResetPeerRequest, context: Context) -> pb.ResetPeerResponse:
        if request.soft not in _SOFT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"soft: unknown direction {request.soft}")
        work = self._node.reset_neighbor(request.address, _SOFT[request.soft], request.communication)
        await self._run(context, work)
        return pb.ResetPeerResponse()

    async def EnablePeer(self, request: pb.EnablePeerRequest, context: Context) -> pb.EnablePeerResponse:
        await self._run(context, self._node.enable_neighbor(request.address))
        return pb.EnablePeerResponse()

    async def DisablePeer(self, request: pb.DisablePeerRequest, context: Context) -> pb.DisablePeerResponse:
        await self._run(context, self._node.disable_neighbor(request.address, request.communication))
        return pb.DisablePeerResponse()

    async def _neighbor_config(self, peer: pb.PeerConfig, context: Context) -> NeighborConfig:
        """The config model validates an API request exactly as it validates the YAML file."""
        fields: dict[str, Any] = {
            "address": peer.address,
            "asn": peer.asn,
            "passive": peer.passive,
            "route_reflector_client": peer.route_reflector_client,
            "add_paths": peer.add_paths,
        }
        if peer.tls_name:
            fields["tls_name"] = peer.tls_name
        if peer.description:
            fields["description"] = peer.description
        if peer.hold_time:
            fields["hold_time"] = peer.hold_time
        try:
            return NeighborConfig.model_validate(fields)
        except ValidationError as error:
            problems = "; ".join(
                f"peer.{'.'.join(map(str, e['loc']))}: {_message(e['msg'])}"
                if e["loc"]
                else _message(e["msg"])
                for e in error.errors()
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problems)
            raise  # abort raises; this keeps type checkers content

    # -- routes ----------------------------------------------------------------------------

    async def ListRoutes(
        self, request: pb.ListRoutesRequest, context: Context
    ) -> AsyncIterator[pb.ListRoutesResponse]:
        batch = request.batch_size or DEFAULT_BATCH
        if not 1 <= batch <= MAX_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"batch_size must be 1-{MAX_BATCH}, got {batch}"
            )
        if request.table not in _TABLES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"table: unknown table {request.table}")
        table = _TABLES[request.table]
        work = self._node.routes(table, request.peer or None, request.name or None, explain=request.explain)
        entries = await self._run(context, work)
        for start in range(0, len(entries), batch):
            yield pb.ListRoutesResponse(routes=[_route(e) for e in entries[start : start + batch]])

    async def AnnounceAgent(
        self, request: pb.AnnounceAgentRequest, context: Context
    ) -> pb.AnnounceAgentResponse:
        if not request.names:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "names: give at least one name")
        agent = codec.decode_agent(request.agent)
        med = request.med if request.HasField("med") else None
        work = self._node.announce_agents(
            list(request.names), _local_agent(agent), med=med, communities=tuple(request.communities)
        )
        await self._run(context, work)
        return pb.AnnounceAgentResponse()

    async def WithdrawAgent(
        self, request: pb.WithdrawAgentRequest, context: Context
    ) -> pb.WithdrawAgentResponse:
        unknown = await self._run(context, self._node.withdraw_agents(list(request.names)))
        return pb.WithdrawAgentResponse(unknown=unknown)

    async def ResolveAgent(
        self, request: pb.ResolveAgentRequest, context: Context
    ) -> pb.ResolveAgentResponse:
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: give an agent name")
        found = await self._node.resolve_with_policy(request.name)
        if found is None:
            return pb.ResolveAgentResponse(found=False)
        entry, decision = found.entry, found.decision
        routes = [
            _route(RouteEntry(entry, path.attrs, path.source.key, path is decision.best, verdict=verdict))
            for path, verdict in zip(decision.ranked, found.verdicts, strict=True)
        ]
        return pb.ResolveAgentResponse(
            found=True,
            entry=entry,
            best=routes[0],
            reason=decision.reason.value,
            alternatives=routes[1:],
            next_hops=found.next_hops,
        )

    async def CallAgent(self, request: pb.CallAgentRequest, context: Context) -> pb.CallAgentResponse:
        if not request.call.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "call.name: give an agent name")
        if request.timeout_seconds < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds must not be negative")
        timeout = request.timeout_seconds or context.time_remaining()
        started = time.monotonic()
        try:
            routed = decode_call(request.call, self._node.name)
            hop_limit = routed.hop_limit or DEFAULT_HOP_LIMIT
            served = await self._node.call_agent(
                routed.name, routed.request, timeout=timeout, hop_limit=hop_limit
            )
        except CallFailure as failure:
            elapsed = time.monotonic() - started
            return pb.CallAgentResponse(error=encode_error(failure), elapsed_seconds=elapsed)
        return pb.CallAgentResponse(result=encode_result(served), elapsed_seconds=time.monotonic() - started)

    # -- events ----------------------------------------------------------------------------

    async def GetPolicy(self, request: pb.GetPolicyRequest, context: Context) -> pb.GetPolicyResponse:
        return pb.GetPolicyResponse(policy_yaml=policy_yaml(self._node.policy))

    async def SetPolicy(self, request: pb.SetPolicyRequest, context: Context) -> pb.SetPolicyResponse:
        try:
            policy = parse_policy_yaml(request.policy_yaml)
        except ConfigError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        reevaluated = await self._run(context, self._node.set_policy(policy))
        return pb.SetPolicyResponse(reevaluated=reevaluated)

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        both = not request.peers and not request.routes
        subscription = await self._node.subscribe(peers=both or request.peers, routes=both or request.routes)
        sequence = 0
        try:
            for event in subscription.snapshot():
                sequence += 1
                yield _event(sequence, event)
            sequence += 1
            end = pb.EndOfSnapshot(events=subscription.snapshot_size)
            yield pb.WatchEventsResponse(sequence=sequence, end_of_snapshot=end)
            subscription.best_paths = []  # no longer needed: a big table's copy can be freed
            while True:
                try:
                    event = await subscription.next()
                except WatcherOverflow as overflow:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, f"watcher fell behind ({overflow}); watch again"
                    )
                sequence += 1
                yield _event(sequence, event)
        finally:
            self._node.unsubscribe(subscription)


# -- conversions ------------------------------------------------------------------------------


def _backend_health(health: dict[str, Any]) -> pb.BackendHealth:
    return pb.BackendHealth(
        state=health["state"],
        reason=health["reason"],
        med=health["med"] or 0,
        latency_ms=health["latency_ms"] or 0.0,
        error_rate=health["error_rate"] or 0.0,
        load=health["load"] or 0.0,
        ejections=health["ejections"],
        last_probe_error=health["last_probe_error"] or "",
    )


def _message(text: str) -> str:
    """A validator's message without pydantic's "Value error, " prefix."""
    return text.removeprefix("Value error, ")


def _local_agent(agent: AgentAttributes) -> AgentAttributes:
    # Announced through the API rather than a backend: the protocol field says so unless given.
    if agent.backend_protocol is BackendProtocol.UNSPECIFIED:
        return AgentAttributes(
            agent.capabilities,
            agent.description,
            BackendProtocol.LOCAL,
            agent.region,
            agent.input_schema,
            agent.health,
        )
    return agent


def _notification(notification: Notification | None) -> pb.NotificationInfo | None:
    if notification is None:
        return None
    code, subcode = notification.names
    return pb.NotificationInfo(
        code=notification.code,
        subcode=notification.subcode,
        code_name=code,
        subcode_name=subcode,
        communication=notification.shutdown_communication,
    )


def _peer(status: PeerStatus) -> pb.Peer:
    return pb.Peer(
        config=pb.PeerConfig(
            address=status.address,
            asn=status.asn,
            description=status.description,
            passive=status.passive,
            hold_time=status.configured_hold_time or 0,
            route_reflector_client=status.route_reflector_client,
            add_paths=status.add_paths,
            tls_name=status.tls_name or "",
        ),
        internal=status.internal,
        enabled=status.enabled,
        state=_STATES[status.state],
        peer_router_id=int_to_router_id(status.peer_id) if status.peer_id else "",
        negotiated_hold_time=status.hold_time or 0,
        last_reason=status.last_reason.value if status.last_reason else "",
        last_notification_received=_notification(status.last_notification),
        last_down_reason=status.last_down_reason.value if status.last_down_reason else "",
        last_down_notification=_notification(status.last_down_notification),
        connections=status.connections,
        routes_received=status.routes_received,
        routes_advertised=status.routes_advertised,
        seconds_in_state=status.seconds_in_state,
        routes_stale=status.routes_stale,
        routes_suppressed=status.routes_suppressed,
        peer_restart_time=status.peer_restart_time or 0,
        sending_paths=status.sending_paths,
        receiving_paths=status.receiving_paths,
    )


def _route(entry: RouteEntry) -> pb.Route:
    peer = "" if entry.peer == LOCAL else entry.peer
    return pb.Route(
        name=entry.name,
        attributes=codec.encode_attributes(entry.attrs),
        peer=peer,
        best=entry.best,
        filtered=entry.filtered,
        suppressed=entry.suppressed,
        stale=entry.stale,
        policy_trail=_trail(entry.verdict),
    )


def _trail(verdict: Verdict | None) -> list[pb.PolicyStep]:
    if verdict is None:
        return []
    return [
        pb.PolicyStep(
            policy=step.policy,
            statement=step.statement,
            outcome=step.outcome.value,
            actions=[str(action) for action in step.actions],
        )
        for step in verdict.trail
    ]


def _event(sequence: int, event: NodeEvent) -> pb.WatchEventsResponse:
    if isinstance(event, PeerStateEvent):
        return pb.WatchEventsResponse(
            sequence=sequence,
            peer=pb.PeerEvent(
                address=event.address,
                old_state=_STATES[event.old] if event.old else pb.SESSION_STATE_UNSPECIFIED,
                new_state=_STATES[event.new],
                reason=event.reason.value if event.reason else "",
                notification=_notification(event.notification),
            ),
        )
    assert isinstance(event, RouteEvent)
    return pb.WatchEventsResponse(
        sequence=sequence,
        route=pb.RouteEvent(
            name=event.name,
            best=_route(event.best) if event.best else None,
            reason=event.reason.value if event.reason else "snapshot",
        ),
    )


# -- the server -------------------------------------------------------------------------------


#: Served without a token: health checks (probes carry none) and reflection (the schema is public,
#: and grpcurl needs it before it sends any header-carrying call).
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class _TokenCheck(grpc.aio.ServerInterceptor):
    """Requires `authorization: Bearer <token>` on every RPC but health checks and reflection."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_SERVICES) or self._authorized(details):
            return handler
        return _refusing(handler)

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        metadata: Iterable[tuple[str, str | bytes]] = details.invocation_metadata or ()
        for key, value in metadata:
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)  # no timing hint about the token
        return False


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that refuses the call."""
    message = "the admin API requires 'authorization: Bearer <token>' metadata with the configured token"

    async def unary(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # an async generator, like the handler it stands in for

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **codecs)
    return grpc.stream_stream_rpc_method_handler(streaming, **codecs)


class AdminServer:
    """The admin gRPC server of one node, with health and reflection so that grpcurl works."""

    def __init__(self, node: Node, listen: str, *, token: str | None = None) -> None:
        host = split_host_port(listen)[0]
        if token is None and not is_loopback(host):
            raise ValueError(f"the admin API on {listen} is reachable from other hosts: it needs a token")
        self._listen = listen
        self.token_required = token is not None
        interceptors = [_TokenCheck(token)] if token else []
        self._server = grpc.aio.server(interceptors=interceptors)
        self._health = health.aio.HealthServicer()
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(node), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._service = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            (self._service, health_name, reflection.SERVICE_NAME), self._server
        )
        self.address = listen

    async def start(self) -> int:
        """Bind and start; returns the bound port."""
        port = self._server.add_insecure_port(self._listen)
        if port == 0:
            raise OSError(f"cannot listen on {self._listen} for the admin API")
        await self._server.start()
        for service in ("", self._service):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.address = join_host_port(split_host_port(self._listen)[0], port)
        return port

    async def stop(self) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(STOP_GRACE)
