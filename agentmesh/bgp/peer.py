"""One configured neighbour: its session FSM, connection collisions and automatic restart, sans-IO.

Theory of operation
-------------------
A `Peer` owns a primary `Fsm`, whose state is the neighbour's state, and during a connection
collision (RFC 4271 §6.8) a second one, the contender, for the other stream. Both sides of a pair
may dial at once; each side sends OPEN on every stream, and once the OPENs of both streams are in,
the stream dialled by the speaker with the higher BGP identifier (ties broken by ASN, RFC 6286
§2.3) survives and the other is closed with Cease/7. Both speakers apply the same rule, so they
agree on the survivor without talking about it.

One race needs care: if a KEEPALIVE completed the handshake on one stream before the OPEN of the
other arrived, the two speakers could each keep a different stream. So a KEEPALIVE that would take
a stream to Established is held back, with whatever follows it on that stream, while the other
stream still waits for its OPEN; the other stream's OPEN or failure releases them in order.
A collision with an Established session closes the newcomer.

OPEN checks (RFC 4271 §6.2) happen here, before collision detection, so an unacceptable OPEN
becomes event 22 with its NOTIFICATION and an acceptable one event 19.

While the neighbour is enabled, a primary FSM that falls to Idle restarts at once in Active, where
it accepts the peer's dial and retries its own after the connect-retry backoff.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from agentmesh.bgp.errors import CeaseSubcode
from agentmesh.bgp.fsm import (
    Close,
    Effect,
    Event,
    EventKind,
    Fsm,
    Reason,
    Send,
    Settings,
    State,
    StateChanged,
)
from agentmesh.bgp.messages import Notification, Open, RouteRefresh, Update, cease
from agentmesh.bgp.open import Expectations, check_open

_OPEN_DONE = (State.OPEN_CONFIRM, State.ESTABLISHED)
#: States in which an FSM holds a stream and has sent its OPEN.
_HANDSHAKE = (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED)


@dataclass(frozen=True, slots=True)
class ConnectionRefused:
    """Report: a stream was refused before any session existed on it."""

    conn: int
    why: str


PeerEffect = Effect | ConnectionRefused


class Peer:
    """A neighbour's session: the FSM(s), collision resolution and restart policy."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._connection_ids = itertools.count(1)
        self.primary = Fsm(settings, self._rng, self._connection_ids)
        self.contender: Fsm | None = None
        self.enabled = False
        #: Messages held back on one stream, starting with the KEEPALIVE that would complete it.
        self._held: list[Event] = []

    @property
    def state(self) -> State:
        return self.primary.state

    def new_connection_id(self) -> int:
        """An id for a stream the peer dialled to us, before offering it with `STREAM_CONFIRMED`."""
        return next(self._connection_ids)

    # -- operator commands -----------------------------------------------------------------

    def start(self, now: float) -> list[PeerEffect]:
        """Enable the neighbour (ManualStart, RFC 4271 §8.1.2 events 1 and 4)."""
        self.enabled = True
        kind = EventKind.MANUAL_START_PASSIVE if self.settings.passive else EventKind.MANUAL_START
        return self._run(self.primary, Event(kind), now)

    def stop(self, now: float, notification: Notification | None = None) -> list[PeerEffect]:
        """Disable the neighbour (ManualStop), closing with Cease/2 or the given NOTIFICATION."""
        self.enabled = False
        stop = Event(EventKind.MANUAL_STOP, notification=notification)
        effects: list[PeerEffect] = []
        if self.contender is not None:
            effects += self._run(self.contender, stop, now)
        return effects + self._run(self.primary, stop, now)

    def send(self, message: Update | RouteRefresh, now: float) -> list[PeerEffect]:
        return list(self.primary.send(message, now))

    def update_error(self, notification: Notification, now: float) -> list[PeerEffect]:
        """An UPDATE the routing core could not repair: reset the session (RFC 4271 §6.3, event 28)."""
        return self._run(
            self.primary, Event(EventKind.UPDATE_MESSAGE_ERROR, self.primary.conn, None, notification), now
        )

    # -- events ----------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[PeerEffect]:
        """Route an event from the I/O layer to the FSM owning its stream."""
        fsm = self._owner(event.conn)
        if fsm is None:
            if event.kind in (EventKind.STREAM_CONFIRMED, EventKind.STREAM_REQUEST_ACKED):
                # The peer's dial, or a dial of ours the FSM moved on from, that just came up.
                return self._new_stream(event, now)
            return []  # a stream this peer already let go of
        if self._held and event.conn == self._held[0].conn:
            if event.kind is EventKind.STREAM_FAILED:
                self._held.clear()  # what was held is moot once the stream is gone
            else:
                self._held.append(event)  # keep the stream's messages in order behind the KEEPALIVE
                return []
        if event.kind is EventKind.BGP_OPEN:
            return self._open_received(fsm, event, now)
        if event.kind is EventKind.KEEPALIVE and self._must_hold(fsm):
            self._held.append(event)
            return []
        return self._run(fsm, event, now)

    def poll(self, now: float) -> list[PeerEffect]:
        effects: list[PeerEffect] = []
        for fsm in self._fsms():
            effects += self._after(fsm, fsm.poll(now), now)
        return effects

    def next_deadline(self) -> float | None:
        deadlines = [d for fsm in self._fsms() if (d := fsm.next_deadline()) is not None]
        return min(deadlines, default=None)

    # -- internals -------------------------------------------------------------------------

    def _fsms(self) -> list[Fsm]:
        return [self.primary] if self.contender is None else [self.primary, self.contender]

    def _owner(self, conn: int | None) -> Fsm | None:
        return next((fsm for fsm in self._fsms() if conn is not None and fsm.conn == conn), None)

    def _new_stream(self, event: Event, now: float) -> list[PeerEffect]:
        """A stream no FSM owns came up: hand it to one, or refuse it."""
        assert event.conn is not None
        if self.primary.state in (State.CONNECT, State.ACTIVE):
            return self._run(self.primary, event, now)
        if self.primary.state is State.IDLE:
            return self._refuse(event.conn, "neighbour is administratively down", now)
        if self.primary.state is State.ESTABLISHED:
            # RFC 4271 §6.8: a collision with an Established session closes the new stream.
            return self._refuse(
                event.conn, "session already established", now, CeaseSubcode.CONNECTION_COLLISION_RESOLUTION
            )
        if self.contender is not None:
            return self._refuse(event.conn, "a connection collision is already being resolved", now)
        # OpenSent or OpenConfirm: track the second stream with its own FSM until its OPEN arrives.
        self.contender = Fsm(self.settings, self._rng, self._connection_ids)
        self.contender.handle(Event(EventKind.AUTOMATIC_START_PASSIVE), now)
        return self._run(self.contender, event, now)

    def _refuse(
        self, conn: int, why: str, now: float, subcode: CeaseSubcode = CeaseSubcode.CONNECTION_REJECTED
    ) -> list[PeerEffect]:
        # RFC 4486 §4: Cease/5 tells the peer its connection was rejected, not that something broke.
        return [ConnectionRefused(conn, why), Send(conn, cease(subcode, why)), Close(conn)]

    def _open_received(self, fsm: Fsm, event: Event, now: float) -> list[PeerEffect]:
        assert isinstance(event.message, Open)
        expect = Expectations(self.settings.local_asn, self.settings.local_id, self.settings.peer_asn)
        if (error := check_open(event.message, expect)) is not None:
            return self._run(
                fsm, Event(EventKind.BGP_OPEN_MESSAGE_ERROR, event.conn, event.message, error), now
            )
        other = self._other(fsm)
        collides = other is not None and other.state in _OPEN_DONE
        if collides and other is not None and self._keeps(other, event.message):
            return self._dump(fsm, now)
        # Accept the OPEN first, so that when the existing stream loses, the survivor is already
        # in OpenConfirm and the neighbour's reported state does not step back.
        effects = self._run(fsm, event, now)
        if collides and other is not None:
            effects += self._dump(other, now)
        return effects + self._release_held(now)

    def _other(self, fsm: Fsm) -> Fsm | None:
        return self.contender if fsm is self.primary else self.primary if self.contender else None

    def _keeps(self, existing: Fsm, peer_open: Open) -> bool:
        """Whether the existing stream beats the one whose OPEN just arrived (RFC 4271 §6.8)."""
        if existing.state is State.ESTABLISHED:
            return True
        local = (self.settings.local_id, self.settings.local_asn)
        remote = (peer_open.bgp_identifier, peer_open.asn)
        # Keep the stream dialled by the speaker with the higher identifier.
        return existing.outbound == (local > remote)

    def _dump(self, loser: Fsm, now: float) -> list[PeerEffect]:
        """Close the stream that lost the collision with Cease/7 (RFC 4271 §6.8, RFC 4486)."""
        effects: list[PeerEffect] = []
        if loser is self.primary:
            effects += self._promote()
        return effects + self._run(loser, Event(EventKind.OPEN_COLLISION_DUMP, loser.conn), now)

    def _promote(self) -> list[PeerEffect]:
        """Make the contender the neighbour's session; report the change if the state differs."""
        assert self.contender is not None
        old = self.primary.state
        self.primary, self.contender = self.contender, self.primary
        if self.primary.state is old:
            return []
        return [StateChanged(old, self.primary.state, Reason.COLLISION_WINNER_PROMOTED)]

    def _must_hold(self, fsm: Fsm) -> bool:
        other = self._other(fsm)
        return fsm.state is State.OPEN_CONFIRM and other is not None and other.state is State.OPEN_SENT

    def _release_held(self, now: float) -> list[PeerEffect]:
        held, self._held = self._held, []
        effects: list[PeerEffect] = []
        for event in held:
            effects += self.handle(event, now)
        return effects

    def _run(self, fsm: Fsm, event: Event, now: float) -> list[PeerEffect]:
        return self._after(fsm, fsm.handle(event, now), now)

    def _after(self, fsm: Fsm, effects: list[Effect], now: float) -> list[PeerEffect]:
        """Keep the neighbour's view coherent after an FSM acted: contenders, restarts."""
        result: list[PeerEffect] = []
        if fsm is self.primary:
            result += effects
        else:
            # The contender's state is not the neighbour's: pass on its I/O, not its transitions.
            result += [e for e in effects if not isinstance(e, StateChanged)]
        # A contender exists only while it holds a stream: one that lost it (to Idle, or to Active
        # from OpenSent) is dropped rather than left to dial on its own.
        if self.contender is not None and self.contender.state not in _HANDSHAKE:
            self.contender = None
            result += self._release_held(now)
        if self.contender is not None and self.primary.state not in _HANDSHAKE:
            result += self._promote()
            self.contender = None
            result += self._release_held(now)
        elif self.primary.state is State.IDLE and self.enabled:
            result += self.primary.handle(Event(EventKind.AUTOMATIC_START_PASSIVE), now)
        return result
