"""RFC 4271 §8.2.2 state by state: the transition table of `agentmesh.bgp.fsm`, driven directly.

`EXPECTED` below is this file's own reading of §8.2.2 (with RFC 6608 subcodes and the deliberate
choices listed in the fsm module docstring): one row per (state, event) pair, giving the next
state, the NOTIFICATION sent if any, and the reason the change is reported with. It is checked
against the real FSM, and it must cover exactly the pairs of `TRANSITIONS`.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, NamedTuple

import pytest

from agentmesh.bgp.errors import (
    CeaseSubcode,
    ErrorCode,
    FsmSubcode,
    HeaderSubcode,
    OpenSubcode,
    UpdateSubcode,
)
from agentmesh.bgp.fsm import (
    TRANSITIONS,
    Close,
    Dial,
    Effect,
    Event,
    EventKind,
    Fsm,
    Reason,
    RouteRefreshRequested,
    Send,
    SessionUp,
    Settings,
    State,
    StateChanged,
    Timer,
    UpdateReceived,
)
from agentmesh.bgp.messages import (
    KEEPALIVE,
    Capabilities,
    Keepalive,
    Message,
    Notification,
    Open,
    RouteRefresh,
    Update,
    cease,
)

LOCAL_ASN, PEER_ASN = 65001, 65002
LOCAL_ID, PEER_ID = 0x0A000001, 0x0A000002
PEER_OPEN = Open(asn=PEER_ASN, hold_time=90, bgp_identifier=PEER_ID)
#: A connection id no FSM in this file ever allocates: a stream dialled by the peer.
PEER_DIALLED = 1000

E, S, R = EventKind, State, Reason

# -- building and driving an FSM -------------------------------------------------------------------


def make_fsm(**overrides: Any) -> Fsm:
    settings = Settings(local_asn=LOCAL_ASN, local_id=LOCAL_ID, peer_asn=PEER_ASN, **overrides)
    return Fsm(settings, random.Random(0), itertools.count(1))


def stream(fsm: Fsm) -> int:
    """The FSM's connection id, which must exist."""
    assert fsm.conn is not None
    return fsm.conn


def state_of(fsm: Fsm) -> State:
    """The state read afresh: mypy would keep an earlier `assert fsm.state is ...` narrowing."""
    return fsm.state


def drive(fsm: Fsm, state: State, now: float = 0.0, *, passive_active: bool = False) -> None:
    """Take an Idle FSM into `state` along the §8.2.2 happy path."""
    assert state_of(fsm) is S.IDLE
    if state is S.IDLE:
        return
    if state is S.ACTIVE and passive_active:
        fsm.handle(Event(E.MANUAL_START_PASSIVE), now)
        assert state_of(fsm) is S.ACTIVE
        return
    fsm.handle(Event(E.MANUAL_START), now)
    assert state_of(fsm) is S.CONNECT and fsm.conn is not None
    if state is S.CONNECT:
        return
    if state is S.ACTIVE:
        fsm.handle(Event(E.STREAM_FAILED, fsm.conn), now)  # the dial failed
        assert state_of(fsm) is S.ACTIVE
        return
    fsm.handle(Event(E.STREAM_REQUEST_ACKED, fsm.conn), now)
    assert state_of(fsm) is S.OPEN_SENT
    if state is S.OPEN_SENT:
        return
    fsm.handle(Event(E.BGP_OPEN, fsm.conn, PEER_OPEN), now)
    assert state_of(fsm) is S.OPEN_CONFIRM
    if state is S.OPEN_CONFIRM:
        return
    fsm.handle(Event(E.KEEPALIVE, fsm.conn, KEEPALIVE), now)
    assert state_of(fsm) is S.ESTABLISHED


#: What each error event carries (RFC 4271 §6): the NOTIFICATION the FSM is asked to send.
CARRIED_NOTIFICATION = {
    E.BGP_HEADER_ERROR: Notification(ErrorCode.MESSAGE_HEADER, HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x05"),
    E.BGP_OPEN_MESSAGE_ERROR: Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.BAD_PEER_AS),
    E.UPDATE_MESSAGE_ERROR: Notification(ErrorCode.UPDATE_MESSAGE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),
}
#: A plausible message for each message event.
MESSAGE: dict[EventKind, Message] = {
    E.BGP_OPEN: PEER_OPEN,
    E.KEEPALIVE: KEEPALIVE,
    E.UPDATE: Update(withdrawn=("agent.example",)),
    E.ROUTE_REFRESH: RouteRefresh(),
    E.NOTIFICATION: cease(CeaseSubcode.PEER_DECONFIGURED, "bye"),
    E.NOTIFICATION_VERSION_ERROR: Notification(
        ErrorCode.OPEN_MESSAGE, OpenSubcode.UNSUPPORTED_VERSION, b"\x00\x04"
    ),
}


def event_for(fsm: Fsm, kind: EventKind) -> Event:
    """A plausible `kind` event for the FSM's current stream."""
    if kind is E.STREAM_CONFIRMED:
        return Event(kind, PEER_DIALLED)
    if kind is E.STREAM_REQUEST_ACKED:
        return Event(kind, fsm.conn if fsm.conn is not None else PEER_DIALLED)
    return Event(kind, fsm.conn, MESSAGE.get(kind), CARRIED_NOTIFICATION.get(kind))


def sent(effects: list[Effect]) -> list[Message]:
    return [e.message for e in effects if isinstance(e, Send)]


def notifications(effects: list[Effect]) -> list[Notification]:
    return [m for m in sent(effects) if isinstance(m, Notification)]


def state_changes(effects: list[Effect]) -> list[StateChanged]:
    return [e for e in effects if isinstance(e, StateChanged)]


# -- the expected table ---------------------------------------------------------------------------


class Row(NamedTuple):
    state: State
    kind: EventKind
    next: State
    #: (code, subcode) of the NOTIFICATION sent, CARRIED for the one the event carries, None for none.
    notification: tuple[int, int] | str | None
    reason: Reason


CARRIED = "carried"
HOLD_EXPIRED = (ErrorCode.HOLD_TIMER_EXPIRED, 0)
ADMIN_SHUTDOWN = (ErrorCode.CEASE, CeaseSubcode.ADMINISTRATIVE_SHUTDOWN)
COLLISION = (ErrorCode.CEASE, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)
FSM_UNSPECIFIED = (ErrorCode.FSM, FsmSubcode.UNSPECIFIED)
UNEXPECTED_IN_OPEN_SENT = (ErrorCode.FSM, FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_SENT)
UNEXPECTED_IN_OPEN_CONFIRM = (ErrorCode.FSM, FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM)
UNEXPECTED_IN_ESTABLISHED = (ErrorCode.FSM, FsmSubcode.UNEXPECTED_MESSAGE_IN_ESTABLISHED)

STARTS = [E.MANUAL_START, E.AUTOMATIC_START, E.MANUAL_START_PASSIVE, E.AUTOMATIC_START_PASSIVE]
STREAM_UP = [E.STREAM_REQUEST_ACKED, E.STREAM_CONFIRMED]
#: Events that need a stream: in Connect and Active none exists, so they reset the session quietly.
NEEDS_A_STREAM = [
    E.HOLD_TIMER_EXPIRES,
    E.KEEPALIVE_TIMER_EXPIRES,
    E.BGP_OPEN,
    E.BGP_HEADER_ERROR,
    E.BGP_OPEN_MESSAGE_ERROR,
    E.OPEN_COLLISION_DUMP,
    E.NOTIFICATION_VERSION_ERROR,
    E.NOTIFICATION,
    E.KEEPALIVE,
    E.UPDATE,
    E.UPDATE_MESSAGE_ERROR,
    E.ROUTE_REFRESH,
]


def _idle() -> list[Row]:
    rows = [
        Row(S.IDLE, E.MANUAL_START, S.CONNECT, None, R.MANUAL_START),
        Row(S.IDLE, E.AUTOMATIC_START, S.CONNECT, None, R.AUTOMATIC_START),
        Row(S.IDLE, E.MANUAL_START_PASSIVE, S.ACTIVE, None, R.MANUAL_START),
        Row(S.IDLE, E.AUTOMATIC_START_PASSIVE, S.ACTIVE, None, R.AUTOMATIC_START),
    ]
    # §8.2.2 Idle: "any other event ... is ignored" (a stream offered to Idle is refused by Peer).
    return rows + [Row(S.IDLE, k, S.IDLE, None, R.UNCHANGED) for k in E if k not in STARTS]


def _connect_and_active(state: State) -> list[Row]:
    rows = [Row(state, k, state, None, R.UNCHANGED) for k in STARTS]
    rows += [
        Row(state, E.MANUAL_STOP, S.IDLE, None, R.MANUAL_STOP),
        Row(state, E.AUTOMATIC_STOP, S.IDLE, None, R.AUTOMATIC_STOP),
        # Connect: drop the pending dial and dial again; Active: dial again (§8.2.2 event 9).
        Row(state, E.CONNECT_RETRY_TIMER_EXPIRES, S.CONNECT, None, R.CONNECT_RETRY),
        Row(state, E.STREAM_REQUEST_ACKED, S.OPEN_SENT, None, R.STREAM_UP),
        Row(state, E.STREAM_CONFIRMED, S.OPEN_SENT, None, R.STREAM_UP),
    ]
    if state is S.CONNECT:
        rows.append(Row(state, E.STREAM_FAILED, S.ACTIVE, None, R.DIAL_FAILED))
    else:
        rows.append(Row(state, E.STREAM_FAILED, S.ACTIVE, None, R.UNCHANGED))
    return rows + [Row(state, k, S.IDLE, None, R.FSM_ERROR) for k in NEEDS_A_STREAM]


def _with_stream(state: State) -> list[Row]:
    """Rows shared by OpenSent, OpenConfirm and Established."""
    rows = [Row(state, k, state, None, R.UNCHANGED) for k in STARTS + STREAM_UP]
    return [
        *rows,
        Row(state, E.MANUAL_STOP, S.IDLE, ADMIN_SHUTDOWN, R.MANUAL_STOP),
        Row(state, E.AUTOMATIC_STOP, S.IDLE, ADMIN_SHUTDOWN, R.AUTOMATIC_STOP),
        Row(state, E.HOLD_TIMER_EXPIRES, S.IDLE, HOLD_EXPIRED, R.HOLD_TIMER_EXPIRED),
        Row(state, E.BGP_HEADER_ERROR, S.IDLE, CARRIED, R.HEADER_ERROR),
        Row(state, E.BGP_OPEN_MESSAGE_ERROR, S.IDLE, CARRIED, R.OPEN_ERROR),
        Row(state, E.OPEN_COLLISION_DUMP, S.IDLE, COLLISION, R.COLLISION_LOST),
        # A received NOTIFICATION is never answered (§6.4; the module's documented choice for OpenSent).
        Row(state, E.NOTIFICATION, S.IDLE, None, R.NOTIFICATION_RECEIVED),
        Row(state, E.NOTIFICATION_VERSION_ERROR, S.IDLE, None, R.NOTIFICATION_RECEIVED),
        Row(state, E.CONNECT_RETRY_TIMER_EXPIRES, S.IDLE, FSM_UNSPECIFIED, R.FSM_ERROR),
    ]


def _open_sent() -> list[Any]:
    s = S.OPEN_SENT
    return [
        *_with_stream(s),
        Row(s, E.BGP_OPEN, S.OPEN_CONFIRM, None, R.OPEN_ACCEPTED),
        Row(s, E.STREAM_FAILED, S.ACTIVE, None, R.STREAM_FAILED),
        Row(s, E.KEEPALIVE_TIMER_EXPIRES, S.IDLE, FSM_UNSPECIFIED, R.FSM_ERROR),
        Row(s, E.KEEPALIVE, S.IDLE, UNEXPECTED_IN_OPEN_SENT, R.FSM_ERROR),
        Row(s, E.UPDATE, S.IDLE, UNEXPECTED_IN_OPEN_SENT, R.FSM_ERROR),
        Row(s, E.ROUTE_REFRESH, S.IDLE, UNEXPECTED_IN_OPEN_SENT, R.FSM_ERROR),
        Row(s, E.UPDATE_MESSAGE_ERROR, S.IDLE, UNEXPECTED_IN_OPEN_SENT, R.FSM_ERROR),
    ]


def _open_confirm() -> list[Any]:
    s = S.OPEN_CONFIRM
    return [
        *_with_stream(s),
        Row(s, E.KEEPALIVE, S.ESTABLISHED, None, R.KEEPALIVE_RECEIVED),
        Row(s, E.KEEPALIVE_TIMER_EXPIRES, s, None, R.UNCHANGED),
        Row(s, E.STREAM_FAILED, S.IDLE, None, R.STREAM_FAILED),
        Row(s, E.BGP_OPEN, S.IDLE, UNEXPECTED_IN_OPEN_CONFIRM, R.FSM_ERROR),
        Row(s, E.UPDATE, S.IDLE, UNEXPECTED_IN_OPEN_CONFIRM, R.FSM_ERROR),
        Row(s, E.ROUTE_REFRESH, S.IDLE, UNEXPECTED_IN_OPEN_CONFIRM, R.FSM_ERROR),
        Row(s, E.UPDATE_MESSAGE_ERROR, S.IDLE, UNEXPECTED_IN_OPEN_CONFIRM, R.FSM_ERROR),
    ]


def _established() -> list[Row]:
    s = S.ESTABLISHED
    return [
        *_with_stream(s),
        Row(s, E.KEEPALIVE, s, None, R.UNCHANGED),
        Row(s, E.UPDATE, s, None, R.UNCHANGED),
        Row(s, E.ROUTE_REFRESH, s, None, R.UNCHANGED),
        Row(s, E.KEEPALIVE_TIMER_EXPIRES, s, None, R.UNCHANGED),
        Row(s, E.STREAM_FAILED, S.IDLE, None, R.STREAM_FAILED),
        Row(s, E.UPDATE_MESSAGE_ERROR, S.IDLE, CARRIED, R.UPDATE_ERROR),
        Row(s, E.BGP_OPEN, S.IDLE, UNEXPECTED_IN_ESTABLISHED, R.FSM_ERROR),
    ]


EXPECTED: list[Any] = [
    *_idle(),
    *_connect_and_active(S.CONNECT),
    *_connect_and_active(S.ACTIVE),
    *_open_sent(),
    *_open_confirm(),
    *_established(),
]


def _row(entry: Any) -> Row:
    row = entry.values[0] if hasattr(entry, "values") else entry
    assert isinstance(row, Row)
    return row


def _params(entries: list[Any]) -> list[Any]:
    """The rows as pytest params named after their pair, keeping any xfail mark."""
    params = []
    for entry in entries:
        row, marks = _row(entry), getattr(entry, "marks", ())
        params.append(pytest.param(row, marks=marks, id=f"{row.state.value}-{row.kind.name}"))
    return params


# -- the table itself ------------------------------------------------------------------------------


def test_table_covers_every_state_and_event_pair() -> None:
    assert len(TRANSITIONS) == 6 * len(EventKind)
    missing = [(s, k) for s in State for k in EventKind if (s, k) not in TRANSITIONS]
    assert missing == []


def test_expected_rows_cover_exactly_the_table() -> None:
    pairs = [(_row(r).state, _row(r).kind) for r in EXPECTED]
    assert len(pairs) == len(set(pairs)), "a pair is listed twice"
    assert set(pairs) == set(TRANSITIONS)


# -- RFC 4271 §8.2.2, state by state ---------------------------------------------------------------


@pytest.mark.parametrize("row", _params(EXPECTED))
def test_transition(row: Row) -> None:
    fsm = make_fsm(capabilities=Capabilities(route_refresh=True))
    drive(fsm, row.state)
    event = event_for(fsm, row.kind)
    effects = fsm.handle(event, 1.0)

    assert fsm.state is row.next
    sent_notifications = notifications(effects)
    if row.notification is None:
        assert sent_notifications == []
    elif row.notification == CARRIED:
        assert sent_notifications == [event.notification]
    else:
        assert [(n.code, n.subcode) for n in sent_notifications] == [row.notification]
    changes = state_changes(effects)
    if row.next is row.state:
        assert changes == []
    else:
        assert changes == [StateChanged(row.state, row.next, row.reason, changes[0].notification)]
        assert effects[0] == changes[0], "the state change is reported first"
    assert TRANSITIONS[(row.state, row.kind)].reason is row.reason


@pytest.mark.parametrize(("state", "kind"), [(s, k) for s in State for k in EventKind])
def test_state_changed_carries_the_table_reason(state: State, kind: EventKind) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    effects = fsm.handle(event_for(fsm, kind), 1.0)
    changes = state_changes(effects)
    if fsm.state is state:
        assert changes == [], "no StateChanged for a self-transition"
    else:
        assert len(changes) == 1
        assert (changes[0].old, changes[0].new) == (state, fsm.state)
        assert changes[0].reason is TRANSITIONS[(state, kind)].reason
    if fsm.state is S.IDLE:
        # §8.2.2: every way into Idle releases the stream and every timer.
        assert fsm.conn is None
        assert fsm.next_deadline() is None


# -- details the table rows do not show ------------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k in E if k not in STARTS])
def test_idle_ignores_everything_but_starts(kind: EventKind) -> None:
    fsm = make_fsm()
    assert fsm.handle(event_for(fsm, kind), 0.0) == []
    assert fsm.state is S.IDLE and fsm.conn is None and fsm.next_deadline() is None


@pytest.mark.parametrize("state", [S.CONNECT, S.ACTIVE, S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED])
@pytest.mark.parametrize("kind", STARTS)
def test_starts_are_ignored_outside_idle(state: State, kind: EventKind) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    conn, deadline = fsm.conn, fsm.next_deadline()
    assert fsm.handle(Event(kind), 5.0) == []
    assert (fsm.state, fsm.conn, fsm.next_deadline()) == (state, conn, deadline)


@pytest.mark.parametrize("state", [S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED])
def test_hold_timer_expiry_sends_4_0_closes_and_goes_idle(state: State) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    conn = stream(fsm)
    effects = fsm.handle(Event(E.HOLD_TIMER_EXPIRES, conn), 10.0)
    assert effects[1:] == [Send(conn, Notification(ErrorCode.HOLD_TIMER_EXPIRED, 0)), Close(conn)]
    assert fsm.state is S.IDLE


@pytest.mark.parametrize("state", [S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED])
def test_manual_stop_sends_cease_2_and_counts_nothing(state: State) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    fsm.failures = 3  # earlier failures are forgotten: an operator stop is not a failure
    conn = stream(fsm)
    effects = fsm.handle(Event(E.MANUAL_STOP), 1.0)
    assert sent(effects) == [cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN)]
    assert Close(conn) in effects
    assert fsm.failures == 0
    assert fsm.state is S.IDLE


def test_manual_stop_sends_the_given_shutdown_communication() -> None:
    fsm = make_fsm()
    drive(fsm, S.ESTABLISHED)
    farewell = cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, "maintenance until 14:00")
    effects = fsm.handle(Event(E.MANUAL_STOP, notification=farewell), 1.0)
    assert sent(effects) == [farewell]
    assert state_changes(effects)[0].notification == farewell


@pytest.mark.parametrize("state", [S.CONNECT, S.ACTIVE])
def test_manual_stop_before_open_sends_nothing(state: State) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    effects = fsm.handle(Event(E.MANUAL_STOP), 1.0)
    assert sent(effects) == []
    assert fsm.state is S.IDLE and fsm.failures == 0


@pytest.mark.parametrize("state", [S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED])
@pytest.mark.parametrize("kind", [E.NOTIFICATION, E.NOTIFICATION_VERSION_ERROR])
def test_received_notification_is_not_answered(state: State, kind: EventKind) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    conn = stream(fsm)
    event = event_for(fsm, kind)
    assert isinstance(event.message, Notification)
    effects = fsm.handle(event, 1.0)
    assert sent(effects) == []
    assert effects == [StateChanged(state, S.IDLE, R.NOTIFICATION_RECEIVED, event.message), Close(conn)]


@pytest.mark.parametrize("state", [S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED])
def test_collision_dump_sends_cease_7(state: State) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    conn = stream(fsm)
    effects = fsm.handle(Event(E.OPEN_COLLISION_DUMP, conn), 1.0)
    assert sent(effects) == [cease(CeaseSubcode.CONNECTION_COLLISION_RESOLUTION)]
    assert Close(conn) in effects


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        (S.OPEN_SENT, E.BGP_HEADER_ERROR),
        (S.OPEN_SENT, E.BGP_OPEN_MESSAGE_ERROR),
        (S.OPEN_CONFIRM, E.BGP_HEADER_ERROR),
        (S.OPEN_CONFIRM, E.BGP_OPEN_MESSAGE_ERROR),
        (S.ESTABLISHED, E.BGP_HEADER_ERROR),
        (S.ESTABLISHED, E.UPDATE_MESSAGE_ERROR),
    ],
)
def test_message_errors_send_the_notification_the_event_carries(state: State, kind: EventKind) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    conn = stream(fsm)
    data_error = Notification(ErrorCode.MESSAGE_HEADER, HeaderSubcode.BAD_MESSAGE_TYPE, b"\x09")
    if kind is E.UPDATE_MESSAGE_ERROR:
        data_error = Notification(ErrorCode.UPDATE_MESSAGE, UpdateSubcode.INVALID_ORIGIN, b"\x40\x01\x01\x07")
    elif kind is E.BGP_OPEN_MESSAGE_ERROR:
        data_error = Notification(ErrorCode.OPEN_MESSAGE, OpenSubcode.UNACCEPTABLE_HOLD_TIME)
    effects = fsm.handle(Event(kind, conn, notification=data_error), 1.0)
    assert effects[1:] == [Send(conn, data_error), Close(conn)]
    assert effects[0] == StateChanged(state, S.IDLE, TRANSITIONS[(state, kind)].reason, data_error)


def test_failed_dial_in_connect_moves_to_active_with_backoff_armed() -> None:
    fsm = make_fsm(connect_retry_initial=2.0, connect_retry_time=60.0)
    drive(fsm, S.CONNECT)
    effects = fsm.handle(Event(E.STREAM_FAILED, fsm.conn), 10.0)
    assert effects == [StateChanged(S.CONNECT, S.ACTIVE, R.DIAL_FAILED)]
    assert fsm.conn is None and fsm.failures == 1
    deadline = fsm.timer_deadline(Timer.CONNECT_RETRY)
    assert deadline is not None
    assert 10.0 + 0.75 * 2.0 <= deadline <= 10.0 + 2.0
    assert fsm.next_deadline() == deadline


def test_passive_neighbour_in_active_arms_no_timer() -> None:
    fsm = make_fsm(passive=True)
    drive(fsm, S.ACTIVE, passive_active=True)
    assert fsm.next_deadline() is None
    # ... not even after a failure that would back off a non-passive neighbour.
    drive_fsm = make_fsm(passive=True)
    drive_fsm.handle(Event(E.MANUAL_START_PASSIVE), 0.0)
    drive_fsm.handle(Event(E.STREAM_CONFIRMED, PEER_DIALLED), 0.0)
    drive_fsm.handle(Event(E.STREAM_FAILED, PEER_DIALLED), 1.0)
    assert drive_fsm.state is S.ACTIVE
    assert drive_fsm.next_deadline() is None


def test_connect_retry_expiry_in_active_dials_again() -> None:
    fsm = make_fsm()
    drive(fsm, S.ACTIVE)
    deadline = fsm.next_deadline()
    assert deadline is not None
    assert fsm.poll(deadline - 1e-6) == []
    effects = fsm.poll(deadline)
    assert effects[0] == StateChanged(S.ACTIVE, S.CONNECT, R.CONNECT_RETRY)
    dials = [e for e in effects if isinstance(e, Dial)]
    assert len(dials) == 1 and dials[0].conn == fsm.conn
    assert fsm.state is S.CONNECT and fsm.outbound


def test_connect_retry_expiry_in_connect_abandons_the_pending_dial() -> None:
    fsm = make_fsm()
    drive(fsm, S.CONNECT)
    pending = stream(fsm)
    deadline = fsm.timer_deadline(Timer.CONNECT_RETRY)
    assert deadline is not None
    effects = fsm.poll(deadline)
    assert effects[0] == Close(pending)
    assert effects[1] == Dial(stream(fsm))
    assert fsm.conn != pending and fsm.state is S.CONNECT
    assert state_changes(effects) == []


@pytest.mark.parametrize("kind", STREAM_UP)
def test_stream_up_sends_our_open(kind: EventKind) -> None:
    fsm = make_fsm(hold_time=30)
    drive(fsm, S.CONNECT)
    conn = fsm.conn if kind is E.STREAM_REQUEST_ACKED else PEER_DIALLED
    effects = fsm.handle(Event(kind, conn), 0.0)
    assert sent(effects) == [Open(asn=LOCAL_ASN, hold_time=30, bgp_identifier=LOCAL_ID)]
    assert fsm.conn == conn
    assert fsm.outbound is (kind is E.STREAM_REQUEST_ACKED)
    assert fsm.timer_deadline(Timer.CONNECT_RETRY) is None


@pytest.mark.parametrize("state", [S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED])
def test_second_stream_is_left_to_peer(state: State) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    conn = stream(fsm)
    assert fsm.handle(Event(E.STREAM_CONFIRMED, PEER_DIALLED), 1.0) == []
    assert fsm.conn == conn and fsm.state is state


def test_open_in_open_sent_answers_keepalive_and_negotiates() -> None:
    fsm = make_fsm(hold_time=60)
    drive(fsm, S.OPEN_SENT)
    effects = fsm.handle(Event(E.BGP_OPEN, fsm.conn, PEER_OPEN), 0.0)
    assert sent(effects) == [KEEPALIVE]
    assert fsm.peer_open == PEER_OPEN
    assert fsm.negotiated is not None and fsm.negotiated.hold_time == 60
    assert fsm.negotiated.peer_id == PEER_ID


def test_keepalive_in_open_confirm_reports_session_up() -> None:
    fsm = make_fsm()
    drive(fsm, S.OPEN_CONFIRM)
    fsm.failures = 4
    negotiated = fsm.negotiated
    assert negotiated is not None
    effects = fsm.handle(Event(E.KEEPALIVE, fsm.conn, KEEPALIVE), 0.0)
    assert effects == [
        StateChanged(S.OPEN_CONFIRM, S.ESTABLISHED, R.KEEPALIVE_RECEIVED),
        SessionUp(negotiated),
    ]
    assert fsm.failures == 0


@pytest.mark.parametrize("state", [S.OPEN_CONFIRM, S.ESTABLISHED])
def test_keepalive_timer_sends_keepalive(state: State) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    effects = fsm.handle(Event(E.KEEPALIVE_TIMER_EXPIRES, fsm.conn), 1.0)
    assert sent(effects) == [KEEPALIVE]
    assert isinstance(sent(effects)[0], Keepalive)
    assert fsm.timer_deadline(Timer.KEEPALIVE) is not None


def test_update_in_established_is_reported() -> None:
    fsm = make_fsm()
    drive(fsm, S.ESTABLISHED)
    update = Update(withdrawn=("summarizer",))
    assert fsm.handle(Event(E.UPDATE, fsm.conn, update), 1.0) == [UpdateReceived(update)]


@pytest.mark.parametrize("advertised", [True, False])
def test_route_refresh_is_honoured_only_when_advertised(advertised: bool) -> None:
    fsm = make_fsm(capabilities=Capabilities(route_refresh=advertised))
    drive(fsm, S.ESTABLISHED)
    effects = fsm.handle(Event(E.ROUTE_REFRESH, fsm.conn, RouteRefresh()), 1.0)
    assert effects == ([RouteRefreshRequested()] if advertised else [])
    assert fsm.state is S.ESTABLISHED


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        (S.ESTABLISHED, E.HOLD_TIMER_EXPIRES),
        (S.OPEN_SENT, E.KEEPALIVE),
        (S.OPEN_CONFIRM, E.OPEN_COLLISION_DUMP),
        (S.ESTABLISHED, E.MANUAL_STOP),
    ],
)
def test_state_changed_reports_the_notification_it_sent(state: State, kind: EventKind) -> None:
    fsm = make_fsm()
    drive(fsm, state)
    effects = fsm.handle(Event(kind, fsm.conn, MESSAGE.get(kind)), 1.0)
    [notification] = notifications(effects)
    assert state_changes(effects)[0].notification == notification
