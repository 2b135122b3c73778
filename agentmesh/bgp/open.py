"""OPEN message checks and session parameter negotiation (RFC 4271 §4.2, §6.2)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agentmesh.bgp.errors import ErrorCode, OpenSubcode
from agentmesh.bgp.messages import BGP_VERSION, Capabilities, MultiplePaths, Notification, Open


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the local side requires of a peer's OPEN."""

    local_asn: int
    local_id: int
    peer_asn: int


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Parameters of an established session: the outcome of both OPENs."""

    peer_asn: int
    peer_id: int
    hold_time: int
    keepalive_time: float
    #: Both sides advertised ROUTE-REFRESH (RFC 2918 §3), so this side may send it.
    route_refresh: bool
    #: The peer's graceful restart time in seconds, None when it did not advertise the capability.
    peer_restart_time: int | None
    #: Whether several paths per name may be sent to / received from the peer (RFC 7911 §4).
    send_multiple_paths: bool
    receive_multiple_paths: bool


def check_open(message: Open, expect: Expectations) -> Notification | None:
    """The NOTIFICATION an unacceptable OPEN must be answered with, or None (RFC 4271 §6.2)."""
    if message.version != BGP_VERSION:
        # The data field carries the largest version this speaker supports, in two octets.
        return Notification(
            ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSUPPORTED_VERSION, struct.pack("!H", BGP_VERSION)
        )
    if message.asn != expect.peer_asn:
        return Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_PEER_AS)
    if bad_identifier(message.bgp_identifier, expect) is not None:
        return Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER)
    if message.hold_time in (1, 2) or message.hold_time > 0xFFFF:
        return Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNACCEPTABLE_HOLD_TIME)
    return None


def bad_identifier(identifier: int, expect: Expectations) -> str | None:
    """Why a BGP identifier is unacceptable, or None.

    Zero is never valid; a peer in the local AS may not share the local identifier (RFC 6286 §2.2).
    Across ASes an equal identifier is legal, and collisions are then ordered by ASN (RFC 6286 §2.3).
    """
    if not 0 < identifier <= 0xFFFFFFFF:
        return "identifier must be a non-zero 32-bit value"
    if identifier == expect.local_id and expect.peer_asn == expect.local_asn:
        return "internal peer uses the local identifier"
    return None


def negotiate(local: Open, local_keepalive: float | None, peer: Open) -> Negotiated:
    """Combine both OPENs: the smaller hold time wins and keepalives run at a third of it (RFC 4271 §4.2)."""
    hold_time = min(local.hold_time, peer.hold_time)
    keepalive = hold_time / 3 if local_keepalive is None else min(local_keepalive, hold_time / 3)
    return Negotiated(
        peer_asn=peer.asn,
        peer_id=peer.bgp_identifier,
        hold_time=hold_time,
        keepalive_time=keepalive,
        route_refresh=local.capabilities.route_refresh and peer.capabilities.route_refresh,
        peer_restart_time=(
            peer.capabilities.graceful_restart.restart_time if peer.capabilities.graceful_restart else None
        ),
        send_multiple_paths=_multiple_paths(local.capabilities).send
        and _multiple_paths(peer.capabilities).receive,
        receive_multiple_paths=_multiple_paths(local.capabilities).receive
        and _multiple_paths(peer.capabilities).send,
    )


def _multiple_paths(capabilities: Capabilities) -> MultiplePaths:
    return capabilities.multiple_paths or MultiplePaths()
