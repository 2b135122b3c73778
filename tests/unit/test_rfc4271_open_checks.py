"""RFC 4271 §6.2 OPEN checks through `Peer`, and capability negotiation in `open.negotiate`.

Each unacceptable OPEN must be answered with its NOTIFICATION and the stream closed, with no
session; acceptable ones (RFC 6286 equal identifiers across ASes, hold time 0, capabilities the
local side does not know or use) must lead to Established.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentmesh.bgp.errors import ErrorCode, OpenSubcode
from agentmesh.bgp.fsm import (
    Close,
    Dial,
    Event,
    EventKind,
    Reason,
    Send,
    SessionUp,
    Settings,
    State,
    StateChanged,
    message_event,
)
from agentmesh.bgp.messages import (
    KEEPALIVE,
    Capabilities,
    GracefulRestart,
    Keepalive,
    MultiplePaths,
    Notification,
    Open,
)
from agentmesh.bgp.open import Expectations, bad_identifier, check_open, negotiate
from agentmesh.bgp.peer import Peer, PeerEffect
from tests.support.inmemory import Pair

LOCAL_ASN, PEER_ASN = 65001, 65002
LOCAL_ID, PEER_ID = 0x0A000001, 0x0A000002


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"local_asn": LOCAL_ASN, "local_id": LOCAL_ID, "peer_asn": PEER_ASN}
    return Settings(**(values | overrides))


def state_of(peer: Peer) -> State:
    """The state read afresh: mypy would keep an earlier `assert peer.state is ...` narrowing."""
    return peer.state


def peer_in_open_sent(config: Settings) -> tuple[Peer, int]:
    """A started Peer whose dial was answered: it has sent its OPEN and waits for the peer's."""
    peer = Peer(config, random.Random(0))
    [dial] = [e for e in peer.start(0.0) if isinstance(e, Dial)]
    effects = peer.handle(Event(EventKind.STREAM_REQUEST_ACKED, dial.conn), 0.0)
    assert any(isinstance(e, Send) and isinstance(e.message, Open) for e in effects)
    assert peer.state is State.OPEN_SENT
    return peer, dial.conn


def notifications(effects: list[PeerEffect]) -> list[Notification]:
    return [e.message for e in effects if isinstance(e, Send) and isinstance(e.message, Notification)]


def peer_open(**overrides: Any) -> Open:
    values: dict[str, Any] = {"asn": PEER_ASN, "hold_time": 90, "bgp_identifier": PEER_ID}
    return Open(**(values | overrides))


# -- unacceptable OPENs ----------------------------------------------------------------------------


BAD_OPENS = [
    pytest.param(
        {},
        peer_open(version=3),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSUPPORTED_VERSION, b"\x00\x04"),
        id="version-3",
    ),
    pytest.param(
        {},
        peer_open(version=5),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSUPPORTED_VERSION, b"\x00\x04"),
        id="version-5",
    ),
    pytest.param(
        {},
        peer_open(asn=65099),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_PEER_AS),
        id="wrong-asn",
    ),
    pytest.param(
        {},
        peer_open(bgp_identifier=0),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER),
        id="identifier-0",
    ),
    pytest.param(
        {},
        peer_open(bgp_identifier=1 << 32),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER),
        id="identifier-over-32-bits",
    ),
    pytest.param(
        {"peer_asn": LOCAL_ASN},
        peer_open(asn=LOCAL_ASN, bgp_identifier=LOCAL_ID),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_BGP_IDENTIFIER),
        id="ibgp-identifier-equals-ours",
    ),
    pytest.param(
        {},
        peer_open(hold_time=1),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNACCEPTABLE_HOLD_TIME),
        id="hold-1",
    ),
    pytest.param(
        {},
        peer_open(hold_time=2),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNACCEPTABLE_HOLD_TIME),
        id="hold-2",
    ),
    pytest.param(
        {},
        peer_open(hold_time=0x10000),
        Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNACCEPTABLE_HOLD_TIME),
        id="hold-over-16-bits",
    ),
]


@pytest.mark.parametrize(("overrides", "message", "expected"), BAD_OPENS)
def test_bad_open_is_answered_with_its_notification_and_no_session(
    overrides: dict[str, Any], message: Open, expected: Notification
) -> None:
    peer, conn = peer_in_open_sent(settings(**overrides))
    effects = peer.handle(message_event(conn, message), 1.0)

    assert notifications(effects) == [expected]
    sends = [e for e in effects if isinstance(e, Send)]
    assert sends == [Send(conn, expected)], "no KEEPALIVE: the OPEN was not accepted"
    assert Close(conn) in effects
    assert StateChanged(State.OPEN_SENT, State.IDLE, Reason.OPEN_ERROR, expected) in effects
    assert not any(isinstance(e, SessionUp) for e in effects)
    # The neighbour is still enabled: it restarts, and waits in Active without a stream.
    assert peer.state is State.ACTIVE
    assert peer.primary.conn is None and peer.contender is None
    # Whatever still arrives on the dead stream cannot make a session.
    assert peer.handle(message_event(conn, KEEPALIVE), 2.0) == []
    assert peer.state is State.ACTIVE


@pytest.mark.parametrize(("overrides", "message", "expected"), BAD_OPENS)
def test_check_open_directly(overrides: dict[str, Any], message: Open, expected: Notification) -> None:
    config = settings(**overrides)
    expect = Expectations(config.local_asn, config.local_id, config.peer_asn)
    assert check_open(message, expect) == expected


def test_version_is_checked_before_everything_else() -> None:
    # RFC 4271 §6.2: the version is checked first; a v3 speaker may well send other garbage too.
    expect = Expectations(LOCAL_ASN, LOCAL_ID, PEER_ASN)
    error = check_open(Open(asn=1, hold_time=1, bgp_identifier=0, version=3), expect)
    assert error is not None and error.subcode == OpenSubcode.UNSUPPORTED_VERSION


def test_wrong_asn_between_configured_peers_never_establishes() -> None:
    # b expects AS 65099 but a is AS 65001: b rejects every OPEN of a's with 2/2.
    a = settings(hold_time=9, connect_retry_initial=1.0, connect_retry_time=4.0)
    b = Settings(local_asn=PEER_ASN, local_id=PEER_ID, peer_asn=65099, hold_time=9)
    pair = Pair(a, b)
    pair.start()
    pair.run(until=60.0)
    assert State.ESTABLISHED not in (pair.a.state, pair.b.state)
    assert not any(isinstance(e, SessionUp) for _, e in pair.log)
    from_b = [m for n, m in pair.sent if n == "b" and isinstance(m, Notification)]
    assert Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_PEER_AS) in from_b
    assert all(m.subcode == OpenSubcode.BAD_PEER_AS for m in from_b if m.code == ErrorCode.OPEN_MESSAGE)


# -- acceptable OPENs ------------------------------------------------------------------------------


def establish(peer: Peer, conn: int, message: Open) -> list[PeerEffect]:
    effects = peer.handle(message_event(conn, message), 1.0)
    assert notifications(effects) == []
    assert Send(conn, KEEPALIVE) in effects
    assert peer.state is State.OPEN_CONFIRM
    effects += peer.handle(message_event(conn, KEEPALIVE), 1.0)
    assert state_of(peer) is State.ESTABLISHED
    return effects


def test_equal_identifier_on_ebgp_is_accepted() -> None:
    # RFC 6286 §2.2: only peers in the same AS need distinct identifiers.
    peer, conn = peer_in_open_sent(settings())
    establish(peer, conn, peer_open(bgp_identifier=LOCAL_ID))
    assert bad_identifier(LOCAL_ID, Expectations(LOCAL_ASN, LOCAL_ID, PEER_ASN)) is None


def test_distinct_identifier_on_ibgp_is_accepted() -> None:
    peer, conn = peer_in_open_sent(settings(peer_asn=LOCAL_ASN))
    establish(peer, conn, peer_open(asn=LOCAL_ASN, bgp_identifier=PEER_ID))


@pytest.mark.parametrize("hold", [3, 4, 0xFFFF])
def test_hold_times_from_3_up_are_accepted(hold: int) -> None:
    peer, conn = peer_in_open_sent(settings(hold_time=90))
    establish(peer, conn, peer_open(hold_time=hold))
    assert peer.primary.negotiated is not None
    assert peer.primary.negotiated.hold_time == min(90, hold)


def test_hold_time_0_is_accepted_and_means_no_keepalives() -> None:
    peer, conn = peer_in_open_sent(settings(hold_time=90))
    effects = establish(peer, conn, peer_open(hold_time=0))
    up = [e for e in effects if isinstance(e, SessionUp)]
    assert len(up) == 1 and up[0].negotiated.hold_time == 0
    assert peer.next_deadline() is None
    later = peer.poll(86_400.0)
    assert not any(isinstance(e, Send) and isinstance(e.message, Keepalive) for e in later)
    assert peer.state is State.ESTABLISHED


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (Capabilities(route_refresh=True), Capabilities()),
        (Capabilities(), Capabilities()),
        (
            Capabilities(),
            Capabilities(
                route_refresh=True,
                graceful_restart=GracefulRestart(restart_time=120, restarting=True),
                multiple_paths=MultiplePaths(receive=True, send=True),
            ),
        ),
    ],
    ids=["peer-advertises-nothing", "nobody-advertises", "peer-advertises-what-we-do-not"],
)
def test_capabilities_never_prevent_a_session(ours: Capabilities, theirs: Capabilities) -> None:
    # RFC 5492 §5: a capability the other side does not support is simply not used.
    peer, conn = peer_in_open_sent(settings(capabilities=ours))
    effects = establish(peer, conn, peer_open(capabilities=theirs))
    [up] = [e for e in effects if isinstance(e, SessionUp)]
    assert up.negotiated.route_refresh is False
    assert up.negotiated.send_multiple_paths is False
    assert up.negotiated.receive_multiple_paths is False


# -- negotiation (RFC 2918, RFC 4724, RFC 7911) ----------------------------------------------------


def negotiated(ours: Capabilities, theirs: Capabilities) -> Any:
    return negotiate(
        Open(LOCAL_ASN, 90, LOCAL_ID, capabilities=ours),
        None,
        Open(PEER_ASN, 90, PEER_ID, capabilities=theirs),
    )


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_route_refresh_only_when_both_advertise(ours: bool, theirs: bool, expected: bool) -> None:
    result = negotiated(Capabilities(route_refresh=ours), Capabilities(route_refresh=theirs))
    assert result.route_refresh is expected


@pytest.mark.parametrize(
    ("ours", "theirs", "send", "receive"),
    [
        # We may send several paths only to a peer that receives them, and receive only from one that sends.
        (MultiplePaths(send=True), MultiplePaths(receive=True), True, False),
        (MultiplePaths(receive=True), MultiplePaths(send=True), False, True),
        (MultiplePaths(send=True, receive=True), MultiplePaths(send=True, receive=True), True, True),
        (MultiplePaths(send=True), MultiplePaths(send=True), False, False),
        (MultiplePaths(receive=True), MultiplePaths(receive=True), False, False),
        (MultiplePaths(send=True, receive=True), None, False, False),
        (None, MultiplePaths(send=True, receive=True), False, False),
    ],
)
def test_multiple_paths_cross_send_and_receive(
    ours: MultiplePaths | None, theirs: MultiplePaths | None, send: bool, receive: bool
) -> None:
    result = negotiated(Capabilities(multiple_paths=ours), Capabilities(multiple_paths=theirs))
    assert (result.send_multiple_paths, result.receive_multiple_paths) == (send, receive)


def test_graceful_restart_time_is_the_peers() -> None:
    ours = Capabilities(graceful_restart=GracefulRestart(restart_time=30))
    assert negotiated(ours, Capabilities(graceful_restart=GracefulRestart(120))).peer_restart_time == 120
    assert negotiated(ours, Capabilities()).peer_restart_time is None


def test_negotiated_identity_is_the_peers() -> None:
    result = negotiated(Capabilities(), Capabilities())
    assert (result.peer_asn, result.peer_id) == (PEER_ASN, PEER_ID)
