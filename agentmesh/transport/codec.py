"""Conversion between the core's message values and the `agentmesh.v1` protobuf messages.

This is the only place where `*_pb2` types and core types meet. Decoding errors become
`DecodeError`s carrying the NOTIFICATION RFC 4271 §6 prescribes, which the speaker feeds to the
FSM as a header error (event 21).
"""

from __future__ import annotations

from agentmesh.bgp.errors import ErrorCode, HeaderSubcode
from agentmesh.bgp.messages import (
    KEEPALIVE,
    AgentAttributes,
    BackendProtocol,
    Capabilities,
    GracefulRestart,
    Health,
    Keepalive,
    LargeCommunity,
    Message,
    MultiplePaths,
    Notification,
    Open,
    Origin,
    PathAttributes,
    RouteRefresh,
    Update,
)
from agentmesh.v1 import bgp_pb2 as pb

# The protobuf enums reserve 0 for "unspecified", so wire values are the core's plus one.
_ORIGIN_TO_PB = {origin: origin.value + 1 for origin in Origin}
_ORIGIN_FROM_PB = {wire: origin for origin, wire in _ORIGIN_TO_PB.items()}


class DecodeError(Exception):
    """A message that cannot be turned into a core value; `notification` says how to answer it."""

    def __init__(self, notification: Notification, detail: str) -> None:
        super().__init__(detail)
        self.notification = notification


# -- encoding ---------------------------------------------------------------------------------


def encode(message: Message) -> pb.BgpMessage:
    """The protobuf form of a core message."""
    if isinstance(message, Keepalive):
        return pb.BgpMessage(keepalive=pb.Keepalive())
    if isinstance(message, Update):
        return pb.BgpMessage(update=_encode_update(message))
    if isinstance(message, Open):
        return pb.BgpMessage(open=_encode_open(message))
    if isinstance(message, Notification):
        return pb.BgpMessage(
            notification=pb.Notification(
                code=message.code,
                subcode=message.subcode,
                data=message.data,
                shutdown_communication=message.shutdown_communication,
            )
        )
    return pb.BgpMessage(route_refresh=pb.RouteRefresh())


def _encode_open(message: Open) -> pb.Open:
    caps = message.capabilities
    wire = pb.Open(
        version=message.version,
        asn=message.asn,
        hold_time=message.hold_time,
        bgp_identifier=message.bgp_identifier,
    )
    if caps.route_refresh:
        wire.capabilities.add(route_refresh=pb.RouteRefreshCapability())
    if caps.graceful_restart is not None:
        gr = caps.graceful_restart
        wire.capabilities.add(
            graceful_restart=pb.GracefulRestartCapability(
                restart_time=gr.restart_time,
                restarting=gr.restarting,
                forwarding_state_preserved=gr.forwarding_state_preserved,
            )
        )
    if caps.multiple_paths is not None:
        mp = caps.multiple_paths
        wire.capabilities.add(multiple_paths=pb.MultiplePathsCapability(receive=mp.receive, send=mp.send))
    return wire


def _encode_update(update: Update) -> pb.Update:
    wire = pb.Update(
        withdrawn_names=update.withdrawn,
        announced_names=update.announced,
        end_of_rib=update.end_of_rib,
        withdrawn_path_ids=update.withdrawn_path_ids,
        announced_path_ids=update.announced_path_ids,
    )
    if update.attributes is not None:
        wire.path_attributes.CopyFrom(encode_attributes(update.attributes))
    return wire


def encode_attributes(attrs: PathAttributes) -> pb.PathAttributes:
    agent = attrs.agent
    wire = pb.PathAttributes(
        origin=_ORIGIN_TO_PB[attrs.origin],  # type: ignore[arg-type]
        as_path=attrs.as_path,
        next_hop=attrs.next_hop,
        communities=attrs.communities,
        large_communities=[
            pb.LargeCommunity(
                global_administrator=c.global_administrator,
                local_data_1=c.local_data_1,
                local_data_2=c.local_data_2,
            )
            for c in attrs.large_communities
        ],
        cluster_list=attrs.cluster_list,
        agent=pb.AgentAttributes(
            capabilities=agent.capabilities,
            description=agent.description,
            backend_protocol=agent.backend_protocol.value,  # type: ignore[arg-type]
            region=agent.region,
            input_schema=agent.input_schema,
            health=pb.Health(
                latency_ms=agent.health.latency_ms,
                error_rate=agent.health.error_rate,
                load=agent.health.load,
            ),
        ),
    )
    if attrs.med is not None:
        wire.med = attrs.med
    if attrs.local_pref is not None:
        wire.local_pref = attrs.local_pref
    if attrs.originator_id is not None:
        wire.originator_id = attrs.originator_id
    return wire


# -- decoding ---------------------------------------------------------------------------------


def decode(wire: pb.BgpMessage) -> Message:
    """The core value of a received message; raises DecodeError for a message of no known kind."""
    kind = wire.WhichOneof("kind")
    if kind == "keepalive":
        return KEEPALIVE
    if kind == "update":
        return _decode_update(wire.update)
    if kind == "open":
        return _decode_open(wire.open)
    if kind == "notification":
        n = wire.notification
        return Notification(n.code, n.subcode, n.data, n.shutdown_communication)
    if kind == "route_refresh":
        return RouteRefresh()
    # RFC 4271 §6.1: an unrecognised message type is a header error, Bad Message Type.
    raise DecodeError(
        Notification(ErrorCode.MESSAGE_HEADER, HeaderSubcode.BAD_MESSAGE_TYPE),
        "message has no known kind",
    )


def _decode_open(wire: pb.Open) -> Open:
    route_refresh = False
    graceful_restart: GracefulRestart | None = None
    multiple_paths: MultiplePaths | None = None
    for cap in wire.capabilities:
        kind = cap.WhichOneof("kind")
        if kind == "route_refresh":
            route_refresh = True
        elif kind == "graceful_restart":
            gr = cap.graceful_restart
            graceful_restart = GracefulRestart(gr.restart_time, gr.restarting, gr.forwarding_state_preserved)
        elif kind == "multiple_paths":
            multiple_paths = MultiplePaths(cap.multiple_paths.receive, cap.multiple_paths.send)
        # RFC 5492 §3: a capability the speaker does not know is ignored.
    return Open(
        asn=wire.asn,
        hold_time=wire.hold_time,
        bgp_identifier=wire.bgp_identifier,
        capabilities=Capabilities(route_refresh, graceful_restart, multiple_paths),
        version=wire.version,
    )


class MalformedAttributes(ValueError):
    """Attributes that decode but cannot be used; their names are treated as withdrawn (RFC 7606)."""


def _decode_update(wire: pb.Update) -> Update:
    attributes: PathAttributes | None = None
    error = ""
    if wire.HasField("path_attributes"):
        try:
            attributes = decode_attributes(wire.path_attributes)
        except MalformedAttributes as malformed:
            error = str(malformed)
    return Update(
        withdrawn=tuple(wire.withdrawn_names),
        attributes=attributes,
        announced=tuple(wire.announced_names),
        end_of_rib=wire.end_of_rib,
        withdrawn_path_ids=tuple(wire.withdrawn_path_ids),
        announced_path_ids=tuple(wire.announced_path_ids),
        attribute_error=error,
    )


def decode_attributes(wire: pb.PathAttributes) -> PathAttributes:
    """Path attributes as received; the routing core checks the rest (bounds, loops)."""
    origin = _ORIGIN_FROM_PB.get(wire.origin)
    if origin is None:
        # ORIGIN is well-known mandatory (RFC 4271 §5.1.1); missing, it is treat-as-withdraw (RFC 7606 §3.d).
        raise MalformedAttributes("ORIGIN missing")
    return PathAttributes(
        origin=origin,
        as_path=tuple(wire.as_path),
        next_hop=wire.next_hop,
        med=wire.med if wire.HasField("med") else None,
        local_pref=wire.local_pref if wire.HasField("local_pref") else None,
        communities=tuple(wire.communities),
        large_communities=tuple(
            LargeCommunity(c.global_administrator, c.local_data_1, c.local_data_2)
            for c in wire.large_communities
        ),
        originator_id=wire.originator_id if wire.HasField("originator_id") else None,
        cluster_list=tuple(wire.cluster_list),
        agent=decode_agent(wire.agent),
    )


def decode_agent(agent: pb.AgentAttributes) -> AgentAttributes:
    health = agent.health
    return AgentAttributes(
        capabilities=tuple(agent.capabilities),
        description=agent.description,
        backend_protocol=_backend_protocol(agent.backend_protocol),
        region=agent.region,
        input_schema=agent.input_schema,
        health=Health(health.latency_ms, health.error_rate, health.load),
    )


def _backend_protocol(value: int) -> BackendProtocol:
    try:
        return BackendProtocol(value)
    except ValueError:
        return BackendProtocol.UNSPECIFIED
