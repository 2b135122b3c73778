"""Two sans-IO peers wired back to back, with a fake clock: BGP sessions without sockets.

Streams are modelled as in-order message queues. `run()` delivers queued messages and fires due
timers until nothing is left to do before the clock's horizon, so tests read like a transcript.

By default a dial completes at once at both ends. With `shuffle=True` each end of a new stream learns
that it is up later and separately (as on a network), and stream set-up events and messages on
different streams are delivered in an order drawn from the seed, so simultaneous dials really collide
(RFC 4271 §6.8). Names in `drop_to` receive nothing: messages and closes sent to them are lost.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from agentmesh.bgp.fsm import Close, Dial, Event, EventKind, Send, Settings, StateChanged, message_event
from agentmesh.bgp.messages import Message
from agentmesh.bgp.peer import Peer, PeerEffect


@dataclass
class Link:
    """One stream: a connection id at each end and the messages in flight each way."""

    ends: dict[str, int]
    inflight: dict[str, deque[Message | None]] = field(default_factory=dict)  # None = close marker
    #: Ends that were told the stream is up; messages wait until their end is. None: both at once.
    up: set[str] | None = None

    def is_up(self, name: str) -> bool:
        return name in self.ends and (self.up is None or name in self.up)


class Pair:
    """Peers `a` and `b` configured as each other's neighbour."""

    def __init__(
        self, a: Settings, b: Settings, *, seed: int = 1, reachable: bool = True, shuffle: bool = False
    ) -> None:
        rng = random.Random(seed)
        self.peers = {"a": Peer(a, rng), "b": Peer(b, rng)}
        self.now = 0.0
        self.reachable = {"a": reachable, "b": reachable}
        self.links: list[Link] = []
        self.log: list[tuple[str, PeerEffect]] = []
        self.sent: list[tuple[str, Message]] = []
        self.shuffle = shuffle
        #: Names that receive nothing (a silent or partitioned neighbour).
        self.drop_to: set[str] = set()
        #: With `shuffle`: stream-up events not yet delivered, with the end they are for.
        self.pending: list[tuple[str, Link, Event]] = []
        self._order = random.Random(seed * 7919 + 17)

    @property
    def a(self) -> Peer:
        return self.peers["a"]

    @property
    def b(self) -> Peer:
        return self.peers["b"]

    def start(self, *names: str) -> None:
        for name in names or ("a", "b"):
            self.apply(name, self.peers[name].start(self.now))

    def apply(self, name: str, effects: list[PeerEffect]) -> None:
        other = "b" if name == "a" else "a"
        for effect in effects:
            self.log.append((name, effect))
            if isinstance(effect, Dial):
                self._dial(name, other, effect.conn)
            elif isinstance(effect, Send):
                self.sent.append((name, effect.message))
                link = self._link(name, effect.conn)
                if link is not None and other not in self.drop_to:
                    link.inflight[other].append(effect.message)
            elif isinstance(effect, Close):
                link = self._link(name, effect.conn)
                if link is not None:
                    if other not in self.drop_to:
                        link.inflight[other].append(None)
                    link.ends.pop(name)

    def _dial(self, name: str, other: str, conn: int) -> None:
        if not self.reachable[other]:
            self.apply(name, self.peers[name].handle(Event(EventKind.STREAM_FAILED, conn), self.now))
            return
        remote = self.peers[other].new_connection_id()
        link = Link({name: conn, other: remote}, {name: deque(), other: deque()})
        self.links.append(link)
        if self.shuffle:
            link.up = set()
            self.pending.append((other, link, Event(EventKind.STREAM_CONFIRMED, remote)))
            self.pending.append((name, link, Event(EventKind.STREAM_REQUEST_ACKED, conn)))
            return
        self.apply(other, self.peers[other].handle(Event(EventKind.STREAM_CONFIRMED, remote), self.now))
        self.apply(name, self.peers[name].handle(Event(EventKind.STREAM_REQUEST_ACKED, conn), self.now))

    def _link(self, name: str, conn: int) -> Link | None:
        return next((link for link in self.links if link.ends.get(name) == conn), None)

    def deliver_one(self) -> bool:
        ready = [
            (link, name)
            for link in self.links
            for name, queue in link.inflight.items()
            if queue and link.is_up(name)
        ]
        if self.shuffle and (self.pending or ready):
            pick = self._order.randrange(len(self.pending) + len(ready))
            if pick < len(self.pending):
                self._stream_up(*self.pending.pop(pick))
                return True
            ready = [ready[pick - len(self.pending)]]
        elif self.pending:
            # Deferred stream-ups left when `shuffle` was turned off: in order, before any message.
            self._stream_up(*self.pending.pop(0))
            return True
        if not ready:
            return False
        link, name = ready[0]
        item = link.inflight[name].popleft()
        conn = link.ends[name]
        if item is None:
            link.ends.pop(name)
            event = Event(EventKind.STREAM_FAILED, conn)
        else:
            event = message_event(conn, item)
        self.apply(name, self.peers[name].handle(event, self.now))
        return True

    def _stream_up(self, name: str, link: Link, event: Event) -> None:
        if link.ends.get(name) != event.conn:
            return  # the dialler cancelled its dial before it was answered: nothing to acknowledge
        assert link.up is not None
        link.up.add(name)
        self.apply(name, self.peers[name].handle(event, self.now))

    def live_links(self) -> list[Link]:
        """Streams still open at both ends."""
        return [link for link in self.links if len(link.ends) == 2]

    def run(self, until: float | None = None, max_steps: int = 10_000) -> None:
        """Deliver messages and fire timers until quiet, advancing the clock no further than `until`."""
        horizon = self.now if until is None else until
        for _ in range(max_steps):
            if self.deliver_one():
                continue
            deadlines = [
                d for p in self.peers.values() if (d := p.next_deadline()) is not None and d <= horizon
            ]
            if not deadlines:
                self.now = horizon
                return
            self.now = max(self.now, min(deadlines))
            for name, peer in self.peers.items():
                self.apply(name, peer.poll(self.now))
        raise AssertionError("pair did not settle")

    def transitions(self, name: str) -> list[StateChanged]:
        return [e for n, e in self.log if n == name and isinstance(e, StateChanged)]
