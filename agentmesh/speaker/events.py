"""What a node tells its watchers: neighbour state and best-path events, snapshot first.

A `Subscription` is created by the owner task in one step together with its snapshot, so no event
can fall between the snapshot and the live events. The owner then appends live events to it; the
watcher (a WatchEvents stream, a test) reads them in order. A watcher that stops reading must not
make the node hoard events without bound, so past `limit` queued events the subscription is marked
overflowed and the watcher is told, instead of silently missing events.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from agentmesh.bgp.fsm import Reason, State
from agentmesh.bgp.messages import Notification, PathAttributes
from agentmesh.rib.decision import Path
from agentmesh.rib.policy import Verdict
from agentmesh.rib.rib import ChangeReason

#: Live events a watcher may have unread before it is cut off.
DEFAULT_WATCH_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class PeerStateEvent:
    """A neighbour changed state; in a snapshot, its current state (`old` is None)."""

    address: str
    old: State | None
    new: State
    reason: Reason | None
    notification: Notification | None


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route of a table as operators see it."""

    name: str
    attrs: PathAttributes
    #: The neighbour it came from ("" when originated here); in an Adj-RIB-Out, the one it went to.
    peer: str
    best: bool
    #: Rejected by import policy (listed in the Adj-RIB-In, but no candidate).
    filtered: bool = False
    #: Held back by flap damping (listed in the Adj-RIB-In, but no candidate).
    suppressed: bool = False
    #: Kept from a lost session until the peer announces it again (graceful restart).
    stale: bool = False
    #: How policy treated it, when asked for and a policy applies.
    verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class RouteEvent:
    """A name's best path changed (`best` None: no route any more); `reason` None in a snapshot."""

    name: str
    best: RouteEntry | None
    reason: ChangeReason | None


NodeEvent = PeerStateEvent | RouteEvent


def best_entry(name: str, path: Path) -> RouteEntry:
    return RouteEntry(name, path.attrs, path.source.key, True)


class WatcherOverflow(Exception):
    """The watcher fell more than its limit behind; it must subscribe again for a fresh snapshot."""


class Subscription:
    """One watcher's events: `snapshot()`, then live events from `next()`."""

    def __init__(self, *, peers: bool, routes: bool, limit: int = DEFAULT_WATCH_LIMIT) -> None:
        self.peers = peers
        self.routes = routes
        #: Filled by the owner when it registers the subscription. The Loc-RIB is copied as it is
        #: (paths are immutable) and turned into events only as the watcher reads them, so a big
        #: table costs the owner one list copy rather than an object per route.
        self.peer_states: list[PeerStateEvent] = []
        self.best_paths: list[tuple[str, Path]] = []
        self._limit = limit
        self._queue: deque[NodeEvent] = deque()
        self._wakeup = asyncio.Event()
        self.overflowed = False

    @property
    def snapshot_size(self) -> int:
        return len(self.peer_states) + len(self.best_paths)

    def snapshot(self) -> Iterator[NodeEvent]:
        """The state when the subscription began: neighbour states, then every best path."""
        yield from self.peer_states
        for name, path in self.best_paths:
            yield RouteEvent(name, best_entry(name, path), None)

    def publish(self, event: NodeEvent) -> None:
        """Called by the owner for every live event."""
        if self.overflowed:
            return
        if len(self._queue) >= self._limit:
            self.overflowed = True
            self._queue.clear()
        else:
            self._queue.append(event)
        self._wakeup.set()

    async def next(self) -> NodeEvent:
        """The next live event; raises WatcherOverflow once the watcher fell behind."""
        while not self._queue:
            if self.overflowed:
                raise WatcherOverflow(f"more than {self._limit} events unread")
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    def drain(self) -> list[NodeEvent]:
        """Every live event queued now, without waiting (for batching)."""
        if self.overflowed:
            raise WatcherOverflow(f"more than {self._limit} events unread")
        events = list(self._queue)
        self._queue.clear()
        return events
