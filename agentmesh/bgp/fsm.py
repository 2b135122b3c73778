"""The RFC 4271 §8 finite state machine of one BGP connection, sans-IO.

Theory of operation
-------------------
An `Fsm` is driven by two calls: `handle(event, now)` for something that happened (an operator
command, a stream coming up or failing, a decoded message) and `poll(now)` for the passage of
time. Both return effects, plain values the I/O layer carries out: `Dial` a new stream, `Send` a
message, `Close` a stream after flushing it, and reports (`StateChanged`, `SessionUp`,
`UpdateReceived`, `RouteRefreshRequested`). The FSM never reads a clock: its timers are absolute
deadlines in the caller's time base, and `next_deadline()` tells the caller when to poll again.

Every (state, event) pair has an entry in `TRANSITIONS`: the action to run and the typed reason
the resulting state change is reported with. Pairs the RFC calls errors map to explicit error
actions (NOTIFICATION 5/x, RFC 6608), so a missing entry is a bug that `test_rfc4271_fsm_table`
catches rather than a silent default.

Streams replace TCP connections: `STREAM_REQUEST_ACKED` is Tcp_CR_Acked (our dial was answered),
`STREAM_CONFIRMED` is TcpConnectionConfirmed (a peer's dial was accepted), `STREAM_FAILED` is
TcpConnectionFails. An FSM owns at most one stream; a second stream to the same peer during the
OPEN exchange is tracked by `bgp.peer.Peer` as RFC 4271 §6.8 collision processing prescribes.

Deliberate choices where RFC 4271 leaves room or is awkward for a mesh:

* A dial that fails in Connect moves to Active, as §8.2.2 does when DelayOpen is in use, so the
  peer's own dial is still accepted while we wait. In Active the ConnectRetryTimer runs with an
  exponential backoff (`connect_retry_initial` doubling up to `connect_retry_time`), a simple form
  of the peer oscillation damping of §8.1.1. A passive neighbour never arms it: it only listens.
* A received NOTIFICATION is never answered with another one (§6.4: its sender closes the
  connection right after), including in OpenSent where §8.2.2 lists event 25 among FSM errors.
* The ConnectRetryTimer and KeepaliveTimer are jittered by a factor in [0.75, 1.0] (§10).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode, FsmSubcode, OpenSubcode
from agentmesh.bgp.messages import (
    KEEPALIVE,
    Capabilities,
    Message,
    Notification,
    Open,
    RouteRefresh,
    Update,
    cease,
)
from agentmesh.bgp.open import Negotiated, negotiate

#: §8.2.2: on entering OpenSent the HoldTimer is set to "a large value"; 4 minutes is suggested.
OPEN_SENT_HOLD_TIME = 240.0


class State(Enum):
    """The six session states of RFC 4271 §8.2.2."""

    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"


class EventKind(IntEnum):
    """FSM events; values are the RFC 4271 §8.1 event numbers (ROUTE-REFRESH is RFC 2918's)."""

    MANUAL_START = 1
    MANUAL_STOP = 2
    AUTOMATIC_START = 3
    MANUAL_START_PASSIVE = 4
    AUTOMATIC_START_PASSIVE = 5
    AUTOMATIC_STOP = 8
    CONNECT_RETRY_TIMER_EXPIRES = 9
    HOLD_TIMER_EXPIRES = 10
    KEEPALIVE_TIMER_EXPIRES = 11
    STREAM_REQUEST_ACKED = 16
    STREAM_CONFIRMED = 17
    STREAM_FAILED = 18
    BGP_OPEN = 19
    BGP_HEADER_ERROR = 21
    BGP_OPEN_MESSAGE_ERROR = 22
    OPEN_COLLISION_DUMP = 23
    NOTIFICATION_VERSION_ERROR = 24
    NOTIFICATION = 25
    KEEPALIVE = 26
    UPDATE = 27
    UPDATE_MESSAGE_ERROR = 28
    ROUTE_REFRESH = 101


class Reason(Enum):
    """Why a state changed; carried by every `StateChanged` for logs, metrics and the admin API."""

    MANUAL_START = "manual_start"
    AUTOMATIC_START = "automatic_start"
    MANUAL_STOP = "manual_stop"
    AUTOMATIC_STOP = "automatic_stop"
    CONNECT_RETRY = "connect_retry_timer_expired"
    STREAM_UP = "stream_up"
    DIAL_FAILED = "dial_failed"
    STREAM_FAILED = "stream_failed"
    OPEN_ACCEPTED = "open_accepted"
    KEEPALIVE_RECEIVED = "keepalive_received"
    HOLD_TIMER_EXPIRED = "hold_timer_expired"
    NOTIFICATION_RECEIVED = "notification_received"
    HEADER_ERROR = "message_header_error"
    OPEN_ERROR = "open_message_error"
    UPDATE_ERROR = "update_message_error"
    COLLISION_LOST = "connection_collision"
    FSM_ERROR = "fsm_error"
    UNCHANGED = "unchanged"
    COLLISION_WINNER_PROMOTED = "collision_winner_promoted"


class Timer(Enum):
    """The three mandatory session timers (RFC 4271 §8, §10)."""

    CONNECT_RETRY = "connect_retry"
    HOLD = "hold"
    KEEPALIVE = "keepalive"


_TIMER_EVENTS = {
    Timer.CONNECT_RETRY: EventKind.CONNECT_RETRY_TIMER_EXPIRES,
    Timer.HOLD: EventKind.HOLD_TIMER_EXPIRES,
    Timer.KEEPALIVE: EventKind.KEEPALIVE_TIMER_EXPIRES,
}


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a session.

    `conn` names the stream a stream or message event came from. `message` is the decoded message
    for message events. `notification` is what to send for error events and stops.
    """

    kind: EventKind
    conn: int | None = None
    message: Message | None = None
    notification: Notification | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """The local side of one session: identity, proposals and timer values in seconds."""

    local_asn: int
    local_id: int
    peer_asn: int
    hold_time: int = 90
    keepalive_time: float | None = None
    connect_retry_time: float = 120.0
    connect_retry_initial: float = 1.0
    passive: bool = False
    capabilities: Capabilities = field(default_factory=Capabilities)

    def open_message(self) -> Open:
        return Open(
            asn=self.local_asn,
            hold_time=self.hold_time,
            bgp_identifier=self.local_id,
            capabilities=self.capabilities,
        )


# Effects: what the I/O layer must do or report.


@dataclass(frozen=True, slots=True)
class Dial:
    """Open a stream to the peer and report it as `conn`."""

    conn: int


@dataclass(frozen=True, slots=True)
class Send:
    """Write `message` on stream `conn`."""

    conn: int
    message: Message


@dataclass(frozen=True, slots=True)
class Close:
    """Close stream `conn` once what was sent before is flushed; cancel it if still dialling."""

    conn: int


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The session moved from `old` to `new`; `notification` is the one sent or received, if any."""

    old: State
    new: State
    reason: Reason
    notification: Notification | None = None


@dataclass(frozen=True, slots=True)
class SessionUp:
    """The session reached Established with these parameters."""

    negotiated: Negotiated


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """An UPDATE arrived on the established session."""

    update: Update


@dataclass(frozen=True, slots=True)
class RouteRefreshRequested:
    """The peer asked for our Adj-RIB-Out again (RFC 2918)."""


Effect = Dial | Send | Close | StateChanged | SessionUp | UpdateReceived | RouteRefreshRequested


class FsmError(Exception):
    """A (state, event) pair with no entry in the transition table: a bug, never a peer's fault."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One transition table entry: the action to run and the reason reported for the change."""

    action: Callable[[Fsm, Event], State]
    reason: Reason


class Fsm:
    """The state machine of one BGP connection (see the module docstring)."""

    def __init__(self, settings: Settings, rng: random.Random, connection_ids: Iterator[int]) -> None:
        self.settings = settings
        self.state = State.IDLE
        #: The stream this FSM owns (a dial in progress in Connect), None when it owns none.
        self.conn: int | None = None
        #: Whether `conn` was dialled by us: RFC 4271 §6.8 keeps the stream dialled by the higher id.
        self.outbound = False
        #: Consecutive failures since the last Established; drives the connect-retry backoff.
        self.failures = 0
        self.peer_open: Open | None = None
        self.negotiated: Negotiated | None = None
        self._rng = rng
        self._connection_ids = connection_ids
        self._deadlines: dict[Timer, float] = {}
        self._effects: list[Effect] = []
        self._now = 0.0

    # -- driving ---------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        """Run the transition for `event` and return the effects."""
        self._now = now
        rule = TRANSITIONS.get((self.state, event.kind))
        if rule is None:
            raise FsmError(f"no transition for {event.kind.name} in {self.state.value}")
        old = self.state
        self.state = rule.action(self, event)
        if self.state is not old:
            self._effects.insert(0, StateChanged(old, self.state, rule.reason, self._notification_of(event)))
        effects, self._effects = self._effects, []
        return effects

    def _notification_of(self, event: Event) -> Notification | None:
        """The NOTIFICATION this transition sent, or else the one it received."""
        for effect in self._effects:
            if isinstance(effect, Send) and isinstance(effect.message, Notification):
                return effect.message
        return event.message if isinstance(event.message, Notification) else None

    def poll(self, now: float) -> list[Effect]:
        """Fire every timer whose deadline has passed, earliest first."""
        effects: list[Effect] = []
        while (due := self._earliest_due(now)) is not None:
            del self._deadlines[due]
            effects += self.handle(Event(_TIMER_EVENTS[due], self.conn), now)
        return effects

    def next_deadline(self) -> float | None:
        """When `poll` should next be called, or None when no timer runs."""
        return min(self._deadlines.values(), default=None)

    def timer_deadline(self, timer: Timer) -> float | None:
        return self._deadlines.get(timer)

    def send(self, message: Update | RouteRefresh, now: float) -> list[Effect]:
        """Send an UPDATE or ROUTE-REFRESH on the established session."""
        if self.state is not State.ESTABLISHED or self.conn is None:
            raise FsmError(f"cannot send {type(message).__name__} in {self.state.value}")
        self._now = now
        self._emit_send(message)
        # RFC 4271 §4.4: sending an UPDATE restarts the KeepaliveTimer, so idle sessions alone pay for them.
        if isinstance(message, Update):
            self._arm_keepalive()
        effects, self._effects = self._effects, []
        return effects

    # -- timers ----------------------------------------------------------------------------

    def _earliest_due(self, now: float) -> Timer | None:
        due = [
            (deadline, timer.value, timer) for timer, deadline in self._deadlines.items() if deadline <= now
        ]
        return min(due)[2] if due else None

    def _arm(self, timer: Timer, seconds: float, *, jitter: bool = False) -> None:
        if jitter:
            seconds *= self._rng.uniform(0.75, 1.0)  # RFC 4271 §10
        self._deadlines[timer] = self._now + seconds

    def _stop(self, timer: Timer) -> None:
        self._deadlines.pop(timer, None)

    def _arm_hold(self) -> None:
        assert self.negotiated is not None
        if self.negotiated.hold_time:
            self._arm(Timer.HOLD, self.negotiated.hold_time)

    def _arm_keepalive(self) -> None:
        if self.negotiated is not None and self.negotiated.hold_time:
            self._arm(Timer.KEEPALIVE, self.negotiated.keepalive_time, jitter=True)

    def backoff(self) -> float:
        """The connect-retry delay after `failures` consecutive failures, before jitter."""
        initial, cap = self.settings.connect_retry_initial, self.settings.connect_retry_time
        return min(cap, initial * float(2 ** max(0, self.failures - 1)))

    # -- helpers shared by actions -----------------------------------------------------------

    def _emit_send(self, message: Message) -> None:
        assert self.conn is not None
        self._effects.append(Send(self.conn, message))

    def _release(self) -> None:
        """Drop the stream and every timer: the common exit to Idle (RFC 4271 §8.2.2)."""
        if self.conn is not None:
            self._effects.append(Close(self.conn))
        self.conn = None
        self._deadlines.clear()
        self.peer_open = None
        self.negotiated = None

    def _dial(self) -> None:
        self.conn = next(self._connection_ids)
        self.outbound = True
        self._effects.append(Dial(self.conn))
        self._arm(Timer.CONNECT_RETRY, self.settings.connect_retry_time, jitter=True)

    def _listen(self) -> None:
        """Wait in Active: retry the dial after the backoff unless the neighbour is passive."""
        if not self.settings.passive:
            self._arm(Timer.CONNECT_RETRY, self.backoff(), jitter=True)

    # -- actions: each returns the next state ------------------------------------------------

    def _ignore(self, event: Event) -> State:
        return self.state

    def _start(self, event: Event) -> State:
        if event.kind is EventKind.MANUAL_START:
            self.failures = 0
        self._dial()
        return State.CONNECT

    def _start_passive(self, event: Event) -> State:
        if event.kind is EventKind.MANUAL_START_PASSIVE:
            self.failures = 0
        self._listen()
        return State.ACTIVE

    def _stop_quietly(self, event: Event) -> State:
        """A stop before any OPEN was sent: nothing to tell the peer."""
        if event.kind is EventKind.MANUAL_STOP:
            self.failures = 0
        self._release()
        return State.IDLE

    def _stop_with_cease(self, event: Event) -> State:
        if event.kind is EventKind.MANUAL_STOP:
            self.failures = 0
        else:
            self.failures += 1
        self._emit_send(event.notification or cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN))
        self._release()
        return State.IDLE

    def _retry_dial(self, event: Event) -> State:
        if self.conn is not None:
            self._effects.append(Close(self.conn))
        self._dial()
        return State.CONNECT

    def _stream_up(self, event: Event) -> State:
        assert event.conn is not None
        # If our own dial is still pending it is not cancelled: should it complete, `Peer` tracks it
        # as a second connection and collision detection (§6.8) keeps the same stream on both sides.
        self.conn = event.conn
        self.outbound = event.kind is EventKind.STREAM_REQUEST_ACKED
        self._stop(Timer.CONNECT_RETRY)
        self._emit_send(self.settings.open_message())
        self._arm(Timer.HOLD, OPEN_SENT_HOLD_TIME)
        return State.OPEN_SENT

    def _dial_failed(self, event: Event) -> State:
        self.conn = None
        self.failures += 1
        self._listen()
        return State.ACTIVE

    def _reset_without_stream(self, event: Event) -> State:
        """An event that cannot happen without a stream: count it and start over from Idle."""
        self.failures += 1
        self._release()
        return State.IDLE

    def _open_received(self, event: Event) -> State:
        assert isinstance(event.message, Open)
        self._stop(Timer.CONNECT_RETRY)
        self.peer_open = event.message
        self.negotiated = negotiate(self.settings.open_message(), self.settings.keepalive_time, event.message)
        self._emit_send(KEEPALIVE)
        self._stop(Timer.HOLD)
        self._arm_hold()
        self._arm_keepalive()
        return State.OPEN_CONFIRM

    def _send_error(self, event: Event) -> State:
        """Send the NOTIFICATION the event carries, then close (RFC 4271 §6)."""
        assert event.notification is not None
        self._emit_send(event.notification)
        self.failures += 1
        self._release()
        return State.IDLE

    def _stream_lost_in_open_sent(self, event: Event) -> State:
        # §8.2.2 OpenSent, event 18: close, restart the ConnectRetryTimer and listen in Active.
        self.conn = None
        self.failures += 1
        self._release()
        self._listen()
        return State.ACTIVE

    def _drop(self, event: Event) -> State:
        if event.kind is not EventKind.NOTIFICATION_VERSION_ERROR:
            self.failures += 1
        self._release()
        return State.IDLE

    def _keepalive_due(self, event: Event) -> State:
        self._emit_send(KEEPALIVE)
        self._arm_keepalive()
        return self.state

    def _established(self, event: Event) -> State:
        assert self.negotiated is not None
        self._arm_hold()
        self.failures = 0
        self._effects.append(SessionUp(self.negotiated))
        return State.ESTABLISHED

    def _keepalive_received(self, event: Event) -> State:
        self._arm_hold()
        return State.ESTABLISHED

    def _update_received(self, event: Event) -> State:
        assert isinstance(event.message, Update)
        self._arm_hold()
        self._effects.append(UpdateReceived(event.message))
        return State.ESTABLISHED

    def _route_refresh_received(self, event: Event) -> State:
        self._arm_hold()
        # RFC 2918 §4: a speaker that did not advertise the capability ignores the request.
        if self.settings.capabilities.route_refresh:
            self._effects.append(RouteRefreshRequested())
        return State.ESTABLISHED

    def _fsm_error(self, event: Event) -> State:
        self._emit_send(Notification(ErrorCode.FSM, _fsm_subcode(self.state, event.kind)))
        self.failures += 1
        self._release()
        return State.IDLE

    def _hold_expired(self, event: Event) -> State:
        self._emit_send(Notification(ErrorCode.HOLD_TIMER_EXPIRED))
        self.failures += 1
        self._release()
        return State.IDLE

    def _collision_dump(self, event: Event) -> State:
        self._emit_send(cease(CeaseSubcode.CONNECTION_COLLISION_RESOLUTION))
        self.failures += 1
        self._release()
        return State.IDLE


#: Events raised by a received message; a malformed UPDATE is still an unexpected message (RFC 6608 §4).
_MESSAGE_EVENTS = frozenset(
    {
        EventKind.BGP_OPEN,
        EventKind.KEEPALIVE,
        EventKind.UPDATE,
        EventKind.UPDATE_MESSAGE_ERROR,
        EventKind.ROUTE_REFRESH,
        EventKind.NOTIFICATION,
    }
)


def _fsm_subcode(state: State, kind: EventKind) -> FsmSubcode:
    """RFC 6608 §3: unexpected messages name the state; other unexpected events are unspecified."""
    if kind not in _MESSAGE_EVENTS:
        return FsmSubcode.UNSPECIFIED
    return {
        State.OPEN_SENT: FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_SENT,
        State.OPEN_CONFIRM: FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM,
        State.ESTABLISHED: FsmSubcode.UNEXPECTED_MESSAGE_IN_ESTABLISHED,
    }.get(state, FsmSubcode.UNSPECIFIED)


def _build_table() -> dict[tuple[State, EventKind], Rule]:
    """The transition table of RFC 4271 §8.2.2, state by state."""
    E, S, R = EventKind, State, Reason
    table: dict[tuple[State, EventKind], Rule] = {}

    def put(
        state: State, kinds: list[EventKind], action: Callable[[Fsm, Event], State], reason: Reason
    ) -> None:
        for kind in kinds:
            assert (state, kind) not in table, (state, kind)
            table[(state, kind)] = Rule(action, reason)

    starts = [E.MANUAL_START, E.AUTOMATIC_START]
    passive_starts = [E.MANUAL_START_PASSIVE, E.AUTOMATIC_START_PASSIVE]
    stream_up = [E.STREAM_REQUEST_ACKED, E.STREAM_CONFIRMED]
    errors_with_notification = [E.BGP_HEADER_ERROR, E.BGP_OPEN_MESSAGE_ERROR, E.UPDATE_MESSAGE_ERROR]

    # Idle: only a start does anything; a stream offered to an Idle session is refused by `Peer`.
    put(S.IDLE, [E.MANUAL_START], Fsm._start, R.MANUAL_START)
    put(S.IDLE, [E.AUTOMATIC_START], Fsm._start, R.AUTOMATIC_START)
    put(S.IDLE, [E.MANUAL_START_PASSIVE], Fsm._start_passive, R.MANUAL_START)
    put(S.IDLE, [E.AUTOMATIC_START_PASSIVE], Fsm._start_passive, R.AUTOMATIC_START)
    put(S.IDLE, [k for k in E if (S.IDLE, k) not in table], Fsm._ignore, R.UNCHANGED)

    # Connect (a dial in progress) and Active (waiting for a stream): no stream yet exists, so
    # message events cannot arrive; should one, it is counted and the session restarts from Idle.
    for state in (S.CONNECT, S.ACTIVE):
        put(state, starts + passive_starts, Fsm._ignore, R.UNCHANGED)
        put(state, [E.MANUAL_STOP], Fsm._stop_quietly, R.MANUAL_STOP)
        put(state, [E.AUTOMATIC_STOP], Fsm._stop_quietly, R.AUTOMATIC_STOP)
        put(state, [E.CONNECT_RETRY_TIMER_EXPIRES], Fsm._retry_dial, R.CONNECT_RETRY)
        put(state, stream_up, Fsm._stream_up, R.STREAM_UP)
    put(S.CONNECT, [E.STREAM_FAILED], Fsm._dial_failed, R.DIAL_FAILED)
    put(S.ACTIVE, [E.STREAM_FAILED], Fsm._ignore, R.UNCHANGED)
    for state in (S.CONNECT, S.ACTIVE):
        put(state, [k for k in E if (state, k) not in table], Fsm._reset_without_stream, R.FSM_ERROR)

    # OpenSent, OpenConfirm, Established: a stream exists and an OPEN has been sent.
    for state in (S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED):
        put(state, starts + passive_starts, Fsm._ignore, R.UNCHANGED)
        put(state, [E.MANUAL_STOP], Fsm._stop_with_cease, R.MANUAL_STOP)
        put(state, [E.AUTOMATIC_STOP], Fsm._stop_with_cease, R.AUTOMATIC_STOP)
        put(state, [E.HOLD_TIMER_EXPIRES], Fsm._hold_expired, R.HOLD_TIMER_EXPIRED)
        # A second stream is tracked by collision detection (§6.8) in `Peer`, not by this FSM.
        put(state, stream_up, Fsm._ignore, R.UNCHANGED)
        put(state, [E.BGP_HEADER_ERROR], Fsm._send_error, R.HEADER_ERROR)
        put(state, [E.BGP_OPEN_MESSAGE_ERROR], Fsm._send_error, R.OPEN_ERROR)
        put(state, [E.OPEN_COLLISION_DUMP], Fsm._collision_dump, R.COLLISION_LOST)
        put(state, [E.NOTIFICATION, E.NOTIFICATION_VERSION_ERROR], Fsm._drop, R.NOTIFICATION_RECEIVED)
    put(S.OPEN_SENT, [E.STREAM_FAILED], Fsm._stream_lost_in_open_sent, R.STREAM_FAILED)
    put(S.OPEN_SENT, [E.BGP_OPEN], Fsm._open_received, R.OPEN_ACCEPTED)
    put(S.OPEN_CONFIRM, [E.STREAM_FAILED], Fsm._drop, R.STREAM_FAILED)
    put(S.OPEN_CONFIRM, [E.KEEPALIVE_TIMER_EXPIRES], Fsm._keepalive_due, R.UNCHANGED)
    put(S.OPEN_CONFIRM, [E.KEEPALIVE], Fsm._established, R.KEEPALIVE_RECEIVED)
    put(S.ESTABLISHED, [E.STREAM_FAILED], Fsm._drop, R.STREAM_FAILED)
    put(S.ESTABLISHED, [E.KEEPALIVE_TIMER_EXPIRES], Fsm._keepalive_due, R.UNCHANGED)
    put(S.ESTABLISHED, [E.KEEPALIVE], Fsm._keepalive_received, R.UNCHANGED)
    put(S.ESTABLISHED, [E.UPDATE], Fsm._update_received, R.UNCHANGED)
    put(S.ESTABLISHED, [E.UPDATE_MESSAGE_ERROR], Fsm._send_error, R.UPDATE_ERROR)
    put(S.ESTABLISHED, [E.ROUTE_REFRESH], Fsm._route_refresh_received, R.UNCHANGED)
    # Everything left over in these states is an FSM error: NOTIFICATION 5/x (RFC 6608).
    for state in (S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED):
        rest = [k for k in E if (state, k) not in table and k not in errors_with_notification]
        put(state, rest, Fsm._fsm_error, R.FSM_ERROR)
        put(
            state,
            [k for k in errors_with_notification if (state, k) not in table],
            Fsm._fsm_error,
            R.FSM_ERROR,
        )
    return table


TRANSITIONS: dict[tuple[State, EventKind], Rule] = _build_table()


def message_event(conn: int, message: Message) -> Event:
    """The FSM event a decoded message raises (RFC 4271 §8.1.4, §8.1.5)."""
    if isinstance(message, Open):
        kind = EventKind.BGP_OPEN
    elif isinstance(message, Update):
        kind = EventKind.UPDATE
    elif isinstance(message, RouteRefresh):
        kind = EventKind.ROUTE_REFRESH
    elif isinstance(message, Notification):
        version_error = (message.code, message.subcode) == (
            ErrorCode.OPEN_MESSAGE,
            OpenSubcode.UNSUPPORTED_VERSION,
        )
        kind = EventKind.NOTIFICATION_VERSION_ERROR if version_error else EventKind.NOTIFICATION
    else:
        kind = EventKind.KEEPALIVE
    return Event(kind, conn, message)
