"""Property tests (hypothesis) for the session FSM and `Peer`: any sequence of events is handled.

Events are drawn from every `EventKind`, with a plausible message for message events, the
notification error events carry, and the connection id of the FSM's own stream (or a fresh one
for streams coming up). Time moves forward between events and timers fire through `poll`.
"""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode, HeaderSubcode, OpenSubcode, UpdateSubcode
from agentmesh.bgp.fsm import (
    Close,
    Dial,
    Effect,
    Event,
    EventKind,
    Fsm,
    Send,
    Settings,
    State,
    StateChanged,
    message_event,
)
from agentmesh.bgp.messages import (
    KEEPALIVE,
    Capabilities,
    GracefulRestart,
    Message,
    MultiplePaths,
    Notification,
    Open,
    RouteRefresh,
    Update,
    cease,
)
from agentmesh.bgp.peer import Peer, PeerEffect

LOCAL_ASN, PEER_ASN = 65001, 65002
LOCAL_ID, PEER_ID = 0x0A000001, 0x0A000002

OPENS = [
    Open(PEER_ASN, 90, PEER_ID),
    Open(PEER_ASN, 0, PEER_ID),
    Open(PEER_ASN, 3, PEER_ID),
    Open(PEER_ASN, 9, PEER_ID, Capabilities(True, GracefulRestart(120), MultiplePaths(True, True))),
    Open(PEER_ASN, 90, LOCAL_ID),  # equal identifier across ASes: acceptable
    # Unacceptable ones: Peer turns them into event 22; a bare Fsm accepts whatever it is given.
    Open(PEER_ASN, 90, PEER_ID, version=3),
    Open(64999, 90, PEER_ID),
    Open(PEER_ASN, 90, 0),
    Open(PEER_ASN, 2, PEER_ID),
]
NOTIFICATIONS = [
    cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, "bye"),
    cease(CeaseSubcode.CONNECTION_COLLISION_RESOLUTION),
    cease(CeaseSubcode.CONNECTION_REJECTED),
    Notification(ErrorCode.HOLD_TIMER_EXPIRED),
    Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSUPPORTED_VERSION, b"\x00\x04"),
    Notification(ErrorCode.FSM, 1),
]
ERRORS = {
    EventKind.BGP_HEADER_ERROR: Notification(ErrorCode.MESSAGE_HEADER, HeaderSubcode.BAD_MESSAGE_LENGTH),
    EventKind.BGP_OPEN_MESSAGE_ERROR: Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_PEER_AS),
    EventKind.UPDATE_MESSAGE_ERROR: Notification(ErrorCode.UPDATE_MESSAGE, UpdateSubcode.MALFORMED_AS_PATH),
}


def message_for(kind: EventKind, variant: int) -> Message | None:
    if kind is EventKind.BGP_OPEN:
        return OPENS[variant % len(OPENS)]
    if kind is EventKind.KEEPALIVE:
        return KEEPALIVE
    if kind is EventKind.UPDATE:
        return Update(withdrawn=(f"agent-{variant}",))
    if kind is EventKind.ROUTE_REFRESH:
        return RouteRefresh()
    if kind is EventKind.NOTIFICATION:
        return NOTIFICATIONS[variant % len(NOTIFICATIONS)]
    if kind is EventKind.NOTIFICATION_VERSION_ERROR:
        return NOTIFICATIONS[4]
    return None


def notification_for(kind: EventKind, variant: int) -> Notification | None:
    if kind in ERRORS:
        return ERRORS[kind]
    if kind in (EventKind.MANUAL_STOP, EventKind.AUTOMATIC_STOP) and variant % 2:
        return cease(CeaseSubcode.ADMINISTRATIVE_RESET, "reset")
    return None


def make_settings(passive: bool, route_refresh: bool) -> Settings:
    return Settings(
        local_asn=LOCAL_ASN,
        local_id=LOCAL_ID,
        peer_asn=PEER_ASN,
        hold_time=9,
        connect_retry_initial=1.0,
        connect_retry_time=8.0,
        passive=passive,
        capabilities=Capabilities(route_refresh=route_refresh),
    )


def assert_fsm_invariants(fsm: Fsm) -> None:
    assert isinstance(fsm.state, State)
    if fsm.state is State.IDLE:
        assert fsm.conn is None
        assert fsm.next_deadline() is None
    if fsm.state in (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED):
        assert fsm.conn is not None
    if fsm.state in (State.OPEN_CONFIRM, State.ESTABLISHED):
        assert fsm.negotiated is not None


def assert_effects_wellformed(effects: list[Effect] | list[PeerEffect]) -> None:
    for effect in effects:
        if isinstance(effect, StateChanged):
            assert effect.old is not effect.new
        if isinstance(effect, Send | Close | Dial):
            assert isinstance(effect.conn, int)


def drive(fsm: Fsm, state: State) -> None:
    """Start from `state` (reached along the §8.2.2 happy path) so deep states are explored too."""
    path = [
        (State.CONNECT, Event(EventKind.MANUAL_START)),
        (State.OPEN_SENT, Event(EventKind.STREAM_CONFIRMED, 5_000)),
        (State.OPEN_CONFIRM, Event(EventKind.BGP_OPEN, 5_000, OPENS[0])),
        (State.ESTABLISHED, Event(EventKind.KEEPALIVE, 5_000, KEEPALIVE)),
    ]
    if state is State.ACTIVE:
        fsm.handle(Event(EventKind.MANUAL_START_PASSIVE), 0.0)
        return
    for reached, event in path:
        if fsm.state is state:
            return
        fsm.handle(event, 0.0)
        assert fsm.state is reached


STEP = st.tuples(
    st.sampled_from(list(EventKind)),
    st.integers(min_value=0, max_value=11),  # variant: which message / conn / notification
    st.floats(min_value=0.0, max_value=20.0, allow_nan=False),  # time to let pass first
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(STEP, max_size=60),
    passive=st.booleans(),
    route_refresh=st.booleans(),
    seed=st.integers(0, 2**16),
    start_in=st.sampled_from(list(State)),
)
def test_fsm_survives_any_event_sequence(
    steps: list[tuple[EventKind, int, float]], passive: bool, route_refresh: bool, seed: int, start_in: State
) -> None:
    fsm = Fsm(make_settings(passive, route_refresh), random.Random(seed), itertools.count(1))
    drive(fsm, start_in)
    assert_fsm_invariants(fsm)
    fresh = itertools.count(10_000)
    now = 0.0
    for kind, variant, dt in steps:
        now += dt
        effects = fsm.poll(now)
        assert_fsm_invariants(fsm)
        if kind in (EventKind.STREAM_REQUEST_ACKED, EventKind.STREAM_CONFIRMED):
            own = kind is EventKind.STREAM_REQUEST_ACKED and fsm.conn is not None and variant % 2 == 0
            conn: int | None = fsm.conn if own else next(fresh)
        else:
            conn = fsm.conn
        event = Event(kind, conn, message_for(kind, variant), notification_for(kind, variant))
        effects += fsm.handle(event, now)
        assert_fsm_invariants(fsm)
        assert_effects_wellformed(effects)
        deadline = fsm.next_deadline()
        assert deadline is None or deadline >= now


# -- Peer ------------------------------------------------------------------------------------------

PEER_OPS = st.sampled_from(
    ["start", "stop", "offer", "ack", "fail", "open", "keepalive", "update", "refresh", "notify", "wait"]
)


def assert_peer_invariants(peer: Peer) -> None:
    assert isinstance(peer.state, State)
    assert isinstance(peer.primary.state, State)
    fsms = [peer.primary] if peer.contender is None else [peer.primary, peer.contender]
    assert len(fsms) <= 2  # one primary and at most one contender
    if peer.contender is not None:
        assert peer.contender is not peer.primary
        assert peer.contender.state is not State.IDLE
        if peer.contender.conn is not None:
            assert peer.contender.conn != peer.primary.conn
    for fsm in fsms:
        assert_fsm_invariants(fsm)
    if peer.enabled:
        assert peer.state is not State.IDLE, "an enabled neighbour restarts at once"
    else:
        assert peer.state is State.IDLE and peer.contender is None


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(st.tuples(PEER_OPS, st.integers(0, 11), st.floats(0.0, 20.0, allow_nan=False)), max_size=60),
    passive=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_peer_survives_any_event_sequence(
    ops: list[tuple[str, int, float]], passive: bool, seed: int
) -> None:
    peer = Peer(make_settings(passive, True), random.Random(seed))
    dialled: list[int] = []
    offered: list[int] = []
    now = 0.0

    def conns() -> list[int]:
        known = [c for c in (peer.primary.conn, peer.contender and peer.contender.conn) if c]
        return known + dialled[-2:] + offered[-2:] + [999_999]  # live, stale and unknown streams

    for op, variant, dt in ops:
        now += dt
        effects: list[PeerEffect] = peer.poll(now)
        dialled += [e.conn for e in effects if isinstance(e, Dial)]
        candidates = conns()
        conn = candidates[variant % len(candidates)]
        if op == "start":
            effects += peer.start(now)
        elif op == "stop":
            effects += peer.stop(now, notification_for(EventKind.MANUAL_STOP, variant))
        elif op == "wait":
            pass
        elif op == "offer":
            offered.append(peer.new_connection_id())
            effects += peer.handle(Event(EventKind.STREAM_CONFIRMED, offered[-1]), now)
        elif op == "ack":
            pending = dialled[-1] if dialled and variant % 2 == 0 else conn
            effects += peer.handle(Event(EventKind.STREAM_REQUEST_ACKED, pending), now)
        elif op == "fail":
            effects += peer.handle(Event(EventKind.STREAM_FAILED, conn), now)
        else:
            kind = {
                "open": EventKind.BGP_OPEN,
                "keepalive": EventKind.KEEPALIVE,
                "update": EventKind.UPDATE,
                "refresh": EventKind.ROUTE_REFRESH,
                "notify": EventKind.NOTIFICATION,
            }[op]
            message = message_for(kind, variant)
            assert message is not None
            effects += peer.handle(message_event(conn, message), now)
        dialled += [e.conn for e in effects if isinstance(e, Dial)]
        assert_effects_wellformed(effects)
        assert_peer_invariants(peer)
