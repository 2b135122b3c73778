"""Route flap damping (RFC 2439) for routes learnt from neighbours, keyed by (peer key, name).

Theory of operation
-------------------
Every route that has flapped recently has a *history*: a penalty (RFC 2439's "figure of merit"),
the time it was last charged, and whether it is suppressed. The penalty is charged on each flap
(a withdrawal, RFC 2439 §4.8.2; a change of attributes, §4.8.4; optionally a re-advertisement,
§4.8.3) and decays exponentially with the configured half-life in between (§2.3, §4.2):

    penalty(now) = penalty(charged) * 2 ** -((now - charged) / half_life)

Nothing ticks. The decayed value is computed from the last charge whenever it is needed, and the two
moments that matter in the future are closed forms of the penalty at the last charge `p`:

    reuse time  = charged + half_life * log2(p / reuse_threshold)       (suppressed routes)
    forget time = charged + half_life * log2(p / (reuse_threshold / 2))

A charge never lowers the decay curve (the ceiling clips a sum that is at least the old value), so
both moments only ever move later. That lets the two queues below re-key lazily: an entry keeps the
queue slot it got when first queued, and when the slot comes due with an outdated time the entry is
queued again at its real time. Each queue holds at most one slot per entry.

- Suppression (§4.8.2, §4.8.3): a charge that brings the penalty to the suppress threshold or
  above suppresses the route, whether it is currently withdrawn or not. A suppressed route stays
  suppressed until its reuse time: the moment its decayed penalty has fallen to the reuse
  threshold. `announced` tells the caller whether the route may be used now.
- The ceiling (§4.3): the penalty never exceeds `reuse * 2 ** (max_suppress_time / half_life)`,
  so the reuse time is never more than `max_suppress_time` after the last flap.
- Reuse (§4.8.6, §4.8.7): RFC 2439 keeps suppressed routes in an array of reuse lists scanned
  every `delta-reuse` seconds. Here they are in a heap ordered by reuse time, so `next_deadline`
  is the earliest reuse time and `reusable(now)` pops exactly the routes that became usable, in
  order, at O(log n) each. A route whose reuse time has passed is not suppressed any more
  (`is_suppressed`, `announced`) even before `reusable` reports it; `reusable` is the edge event
  that tells the caller to make it a candidate again.
- Forgetting (RFC 2439 §4.8.3 frees the damping structure once the figure of merit has decayed
  away): a history whose decayed penalty has fallen below half the reuse threshold is forgotten,
  as common router implementations do, so a later flap starts from zero. Logically this happens at
  the forget time, whatever the caller does; physically the entry is removed by an amortised sweep
  of a second heap ordered by forget time: a few entries per `withdrawn`/`announced` call and all
  due entries on each `reusable` call. Memory is thus bounded by the routes that flapped within
  the last few half-lives, not by every route that ever flapped.

Session resets and removed neighbours: when a session goes down its routes are withdrawn, and the
caller charges each of them (`withdrawn`). History survives the reset, because damping exists for
exactly that case: a session that keeps resetting. RFC 2439 §4.8.5 allows accounting a lost
peering to the peer rather than to each route to save memory; one small entry per route is cheap
enough here, and keeps one rule for all flaps. A neighbour removed from the configuration takes its
history with it (`forget_peer`).

RFC 2439 §4 and §5 apply damping to routes learnt from external peers only: damping iBGP routes
can cause persistent loops. This module does not know the kind of a peer; the caller decides which
routes it damps.

Scale: the RFC's figure of merit counts 1 per flap with thresholds like 1.25 and 0.5 (§4.7); this
module uses the 1000-per-withdrawal scale of common router defaults, so configured numbers read the
same as on routers. Times are in seconds, as floats, on whatever monotonic clock the caller uses.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from heapq import heapify, heappop, heappush, heapreplace

#: Entries the amortised sweep may look at per `withdrawn`/`announced` call: more than the one entry
#: such a call can create or re-key, so the sweep keeps up with any flap rate.
SWEEP_BUDGET = 4


@dataclass(frozen=True, slots=True)
class DampingSettings:
    """One set of damping parameters (RFC 2439 §4.2), with common router defaults.

    RFC 2439 §4.1 allows several sets (for example by prefix length or by whether an alternate
    path exists); agentmesh uses one. Unlike §4.2, which decays the penalty at one rate while the
    route is reachable and at another while it is not (`decay-ok`, `decay-ng`), one half-life
    applies throughout, as in common router implementations.
    """

    #: Seconds in which the penalty halves (§4.2 "decay half-life"); 15 minutes.
    half_life: float = 900.0
    #: A suppressed route is usable again once its penalty has decayed to this (§4.2 "reuse").
    reuse_threshold: float = 750.0
    #: A charge that brings the penalty to this or above suppresses the route (§4.2 "cut").
    suppress_threshold: float = 2000.0
    #: Longest a route stays suppressed after its last flap (§4.2 "maximum hold-down time"); 1 hour.
    #: It sets the ceiling of the penalty, `reuse_threshold * 2 ** (max_suppress_time / half_life)`.
    max_suppress_time: float = 3600.0
    #: Charged when a route is withdrawn (§4.8.2: one unit of the figure of merit, scaled).
    withdrawal_penalty: float = 1000.0
    #: Charged when a route is replaced by one with different attributes. §4.8.4 treats a change as
    #: a withdrawal plus an advertisement, i.e. a full withdrawal's charge; routers commonly charge
    #: half, which agentmesh follows: a changed route is still reachable.
    change_penalty: float = 500.0
    #: Charged when a withdrawn route is advertised again. §4.8.3 only decays the figure of merit
    #: on an advertisement, and RFC 2439 charges removals, not additions: 0 by default, so one
    #: withdraw/announce cycle costs one withdrawal.
    readvertisement_penalty: float = 0.0

    def __post_init__(self) -> None:
        values = {
            "half_life": self.half_life,
            "reuse_threshold": self.reuse_threshold,
            "suppress_threshold": self.suppress_threshold,
            "max_suppress_time": self.max_suppress_time,
            "withdrawal_penalty": self.withdrawal_penalty,
            "change_penalty": self.change_penalty,
            "readvertisement_penalty": self.readvertisement_penalty,
        }
        for field_name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"damping {field_name} must be a finite number, not {value!r}")
        for field_name in ("half_life", "max_suppress_time", "reuse_threshold", "withdrawal_penalty"):
            if values[field_name] <= 0:
                raise ValueError(f"damping {field_name} must be positive, not {values[field_name]!r}")
        for field_name in ("change_penalty", "readvertisement_penalty"):
            if values[field_name] < 0:
                raise ValueError(f"damping {field_name} must be zero or positive, not {values[field_name]!r}")
        if self.suppress_threshold <= self.reuse_threshold:
            raise ValueError(
                f"damping suppress_threshold ({self.suppress_threshold!r}) must be greater than "
                f"reuse_threshold ({self.reuse_threshold!r}): a route must decay from one to the other"
            )
        try:
            ceiling = self.ceiling
        except OverflowError:
            ceiling = math.inf
        if not math.isfinite(ceiling):
            raise ValueError(
                f"damping max_suppress_time ({self.max_suppress_time!r}) is too many half-lives "
                f"({self.half_life!r} s): the ceiling reuse_threshold * 2 ** (max_suppress_time / "
                "half_life) overflows"
            )
        if self.suppress_threshold > ceiling:
            raise ValueError(
                f"damping suppress_threshold ({self.suppress_threshold!r}) is above the ceiling "
                f"{ceiling:.6g} = reuse_threshold * 2 ** (max_suppress_time / half_life): no route could "
                "ever be suppressed; raise max_suppress_time or lower suppress_threshold"
            )

    @property
    def ceiling(self) -> float:
        """Highest penalty: one that decays to the reuse threshold in exactly `max_suppress_time`."""
        return self.reuse_threshold * math.exp2(self.max_suppress_time / self.half_life)

    @property
    def forget_threshold(self) -> float:
        """A history whose decayed penalty falls below this is forgotten: half the reuse threshold."""
        return self.reuse_threshold / 2.0


@dataclass(frozen=True, slots=True)
class DampingCounts:
    """Sizes for metrics and the admin API."""

    #: History entries held in memory (forgotten ones not yet swept included).
    history: int
    #: Routes in the suppressed set: those whose reuse `reusable` has not reported yet.
    suppressed: int


@dataclass(slots=True, eq=False)
class _History:
    """The damping state of one (peer, name): RFC 2439 §4.4's per-route damping structure."""

    peer: str
    name: str
    #: Penalty at `charged`, the time of the last charge.
    penalty: float = 0.0
    charged: float = 0.0
    #: Closed-form moments, see the module docstring; `reuse_at` is meaningful while suppressed.
    reuse_at: float = 0.0
    forget_at: float = 0.0
    suppressed: bool = False
    #: The last event was a withdrawal: a repeated withdrawal is not another flap, and the next
    #: advertisement is a re-advertisement.
    withdrawn: bool = False
    #: Whether a slot in the reuse heap refers to this entry (at most one does).
    reuse_queued: bool = False
    #: False once `forget_peer` dropped the entry: its slot in the forget heap is stale.
    live: bool = True


# A heap slot: (time, tie-breaker, entry). The tie-breaker keeps equal times in queueing order and
# spares comparing entries.
_Slot = tuple[float, int, _History]


class Damping:
    """Route flap damping state of one node: penalties, suppressed routes and their reuse times."""

    def __init__(self, settings: DampingSettings) -> None:
        self.settings = settings
        self._half_life = settings.half_life
        self._reuse = settings.reuse_threshold
        self._suppress = settings.suppress_threshold
        self._ceiling = settings.ceiling
        self._forget = settings.forget_threshold
        self._history: dict[str, dict[str, _History]] = {}
        self._entries = 0
        self._suppressed = 0
        self._reuse_heap: list[_Slot] = []
        self._forget_heap: list[_Slot] = []
        self._seq = itertools.count()

    # --- events ------------------------------------------------------------------------------------

    def withdrawn(self, peer: str, name: str, now: float) -> None:
        """`peer` withdrew `name` (explicitly or with its session): a flap (RFC 2439 §4.8.2).

        Call it for the withdrawal of a route that was present; a second withdrawal with no
        advertisement in between is not another flap and is not charged again.
        """
        forget_heap = self._forget_heap
        if forget_heap and forget_heap[0][0] < now:
            self._sweep(now, SWEEP_BUDGET)
        entries = self._history.get(peer)
        if entries is None:
            entries = self._history[peer] = {}
        entry = entries.get(name)
        if entry is None:
            entry = entries[name] = _History(peer, name)
            self._entries += 1
            self._charge(entry, 0.0, self.settings.withdrawal_penalty, now)
            heappush(forget_heap, (entry.forget_at, next(self._seq), entry))
        else:
            now = max(now, entry.charged)
            decayed = self._settle(entry, now)
            if entry.withdrawn:
                return
            self._charge(entry, decayed, self.settings.withdrawal_penalty, now)
        entry.withdrawn = True

    def announced(self, peer: str, name: str, changed: bool, now: float) -> bool:
        """`peer` announced `name`; whether the route may be used now (False: it is suppressed).

        `changed` says that the announcement replaces a route from the same peer that was present
        with different attributes (an implicit withdrawal, RFC 2439 §4.8.4); it is charged the
        change penalty. Otherwise an announcement after a withdrawal is charged the
        re-advertisement penalty (§4.8.3), and any other announcement nothing. A route with no
        history that is announced unchanged gets none (§4.8.3): the common case costs one lookup.
        A suppressed route stays in the caller's Adj-RIB-In but is not a candidate for the decision
        process until `reusable` reports it (or a later `announced` returns True).
        """
        forget_heap = self._forget_heap
        if forget_heap and forget_heap[0][0] < now:
            self._sweep(now, SWEEP_BUDGET)
        settings = self.settings
        entries = self._history.get(peer)
        entry = entries.get(name) if entries is not None else None
        if entry is None:
            if not changed or settings.change_penalty == 0:
                return True
            if entries is None:
                entries = self._history[peer] = {}
            entry = entries[name] = _History(peer, name)
            self._entries += 1
            self._charge(entry, 0.0, settings.change_penalty, now)
            heappush(forget_heap, (entry.forget_at, next(self._seq), entry))
            return not entry.suppressed
        now = max(now, entry.charged)
        decayed = self._settle(entry, now)
        if changed:
            charge = settings.change_penalty
        elif entry.withdrawn:
            charge = settings.readvertisement_penalty
        else:
            charge = 0.0
        entry.withdrawn = False
        if charge:
            self._charge(entry, decayed, charge, now)
        return not entry.suppressed

    def peers(self) -> list[str]:
        """The sources that have history."""
        return list(self._history)

    def forget_peer(self, peer: str) -> None:
        """Drop all history of a neighbour removed from the configuration.

        Not for a session that merely went down: its routes' history is what damps a flapping
        session (see the module docstring).
        """
        entries = self._history.pop(peer, None)
        if not entries:
            return
        released = 0
        for entry in entries.values():
            entry.live = False
            if entry.suppressed:
                entry.suppressed = False
                released += 1
        self._entries -= len(entries)
        self._suppressed -= released
        if released:
            # Rebuild now rather than leave slots behind for up to `max_suppress_time`; a rare event.
            kept: list[_Slot] = []
            for slot in self._reuse_heap:
                if slot[2].suppressed:
                    kept.append(slot)
                else:
                    slot[2].reuse_queued = False
            heapify(kept)
            self._reuse_heap = kept
        if len(entries) * 2 > len(self._forget_heap):
            self._forget_heap = [slot for slot in self._forget_heap if slot[2].live]
            heapify(self._forget_heap)

    # --- time --------------------------------------------------------------------------------------

    def reusable(self, now: float) -> list[tuple[str, str]]:
        """Suppressed routes whose reuse time is at or before `now`, in reuse-time order.

        They leave the suppressed set: the caller makes those still in its Adj-RIB-In candidates
        again (RFC 2439 §4.8.7). A route that is currently withdrawn is reported too; there is
        then nothing to reinstate. Also sweeps every forgotten history entry that is due.
        """
        out: list[tuple[str, str]] = []
        heap = self._reuse_heap
        while heap and heap[0][0] <= now:
            due, _, entry = heappop(heap)
            entry.reuse_queued = False
            if not entry.suppressed:
                continue  # released by an event on the route itself
            if due < entry.reuse_at:
                # Charged again while suppressed: queue at the real reuse time (§4.8.6), which may
                # still be due now and is then popped in order.
                heappush(heap, (entry.reuse_at, next(self._seq), entry))
                entry.reuse_queued = True
                continue
            entry.suppressed = False
            self._suppressed -= 1
            out.append((entry.peer, entry.name))
        self._sweep(now, None)
        return out

    def next_deadline(self) -> float | None:
        """When the next suppressed route becomes reusable (call `reusable` then), or None."""
        heap = self._reuse_heap
        while heap:
            due, _, entry = heap[0]
            if not entry.suppressed:
                heappop(heap)
                entry.reuse_queued = False
            elif due < entry.reuse_at:
                heapreplace(heap, (entry.reuse_at, next(self._seq), entry))
            else:
                return due
        return None

    # --- queries -----------------------------------------------------------------------------------

    def is_suppressed(self, peer: str, name: str, now: float) -> bool:
        """Whether the route is suppressed at `now`: charged to the suppress threshold and not yet
        decayed to the reuse threshold."""
        entry = self._lookup(peer, name)
        return entry is not None and entry.suppressed and now < entry.reuse_at

    def penalty(self, peer: str, name: str, now: float) -> float:
        """The decayed penalty at `now`; 0 for a route with no history or a forgotten one."""
        entry = self._lookup(peer, name)
        if entry is None:
            return 0.0
        if now <= entry.charged:
            return entry.penalty
        if now > entry.forget_at:
            return 0.0
        return entry.penalty * math.exp2((entry.charged - now) / self._half_life)

    def suppressed(self, peer: str | None = None) -> list[tuple[str, str, float]]:
        """The suppressed set, of one peer or all, as (peer, name, reuse time) by reuse time.

        A route whose reuse time has passed stays listed until `reusable` reports it.
        """
        rows = [
            (entry.peer, entry.name, entry.reuse_at)
            for _, _, entry in self._reuse_heap
            if entry.suppressed and (peer is None or entry.peer == peer)
        ]
        rows.sort(key=lambda row: (row[2], row[0], row[1]))
        return rows

    def counts(self) -> DampingCounts:
        return DampingCounts(history=self._entries, suppressed=self._suppressed)

    # --- internals ---------------------------------------------------------------------------------

    def _lookup(self, peer: str, name: str) -> _History | None:
        entries = self._history.get(peer)
        return entries.get(name) if entries is not None else None

    def _settle(self, entry: _History, now: float) -> float:
        """Bring `entry` to `now` before a charge: end a suppression whose reuse time has passed,
        forget a decayed history; return the decayed penalty. `now` is at least `entry.charged`."""
        if entry.suppressed and now >= entry.reuse_at:
            # Logically reusable already; the caller learns it from this event's own outcome.
            entry.suppressed = False
            self._suppressed -= 1
        if now > entry.forget_at:
            entry.withdrawn = False
            return 0.0
        return entry.penalty * math.exp2((entry.charged - now) / self._half_life)

    def _charge(self, entry: _History, decayed: float, amount: float, now: float) -> None:
        """Add `amount` to the decayed penalty, clipped to the ceiling (RFC 2439 §4.3), and update
        the closed-form moments and the suppression (§4.8.2, §4.8.3)."""
        penalty = decayed + amount
        if penalty > self._ceiling:
            penalty = self._ceiling
        entry.penalty = penalty
        entry.charged = now
        forget = self._forget
        entry.forget_at = now + self._half_life * math.log2(penalty / forget) if penalty > forget else now
        if entry.suppressed:
            # Still suppressed, so the penalty is above the reuse threshold; the reuse time moves
            # later and the entry's slot is re-keyed lazily.
            entry.reuse_at = now + self._half_life * math.log2(penalty / self._reuse)
        elif penalty >= self._suppress:
            entry.suppressed = True
            self._suppressed += 1
            entry.reuse_at = now + self._half_life * math.log2(penalty / self._reuse)
            if not entry.reuse_queued:
                heappush(self._reuse_heap, (entry.reuse_at, next(self._seq), entry))
                entry.reuse_queued = True

    def _sweep(self, now: float, budget: int | None) -> None:
        """Remove history entries forgotten before `now`: at most `budget` heap steps, or all."""
        heap = self._forget_heap
        steps = 0
        while heap and heap[0][0] < now and (budget is None or steps < budget):
            steps += 1
            due, _, entry = heap[0]
            if not entry.live:
                heappop(heap)
            elif due < entry.forget_at:
                heapreplace(heap, (entry.forget_at, next(self._seq), entry))
            elif entry.suppressed:
                # Its reuse time has passed but `reusable` has not reported it yet; forgetting it
                # now would lose that report. Wait for `reusable`, which runs the sweep after it.
                break
            else:
                heappop(heap)
                entry.live = False
                entries = self._history[entry.peer]
                del entries[entry.name]
                if not entries:
                    del self._history[entry.peer]
                self._entries -= 1
