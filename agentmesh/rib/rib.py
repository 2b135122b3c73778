"""The RIBs of one node: Adj-RIB-In per source, Loc-RIB, Adj-RIB-Out per peer (RFC 4271 §3.2, §9).

Theory of operation
-------------------
Routes arrive in bulk: an UPDATE carries many names that share one attribute set. `receive`
interns the set, wraps it in one `Path` (with its decision rank computed once) and then does a
short loop over the names: store the path in the sender's Adj-RIB-In, compare it with the current
best, and remember which names changed. Only when the best path itself was replaced or withdrawn
does a name need the full decision over all candidates (`_recompute`).

Changed names go into each established peer's pending set (DESIGN §4.4: queue dirty names, not
messages). `take_updates` later turns a peer's pending names into UPDATEs from the latest state,
grouping names by their exported attribute set, so a thousand flaps of one name cost one UPDATE.
Withdrawals go out at once; announcements wait for the minimum advertisement interval since the
previous announcement to that peer (RFC 4271 §9.2.1.1, which exempts withdrawals).

The locally originated routes live in the Adj-RIB-In of a pseudo-source, `LOCAL`, so the decision
process treats them like any other candidate.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from agentmesh.bgp.errors import ErrorCode, UpdateSubcode
from agentmesh.bgp.messages import AgentAttributes, Notification, Origin, PathAttributes, Update
from agentmesh.rib import names as namespace
from agentmesh.rib.attributes import (
    NO_ADVERTISE,
    NO_EXPORT,
    AttributePool,
    exported_external,
    exported_internal,
    imported,
    malformation,
    reflected,
)
from agentmesh.rib.damping import Damping
from agentmesh.rib.decision import Decision, DecisionReason, Path, Source, decide, make_path, why
from agentmesh.rib.policy import (
    AddMed,
    PolicyChain,
    RouteContext,
    RoutingPolicy,
    SetMed,
    SubtractMed,
    Verdict,
)
from agentmesh.rib.resolve import ResolutionIndex, longest_match

LOCAL = ""
#: Most names one UPDATE may carry; more is a malformed message (RFC 7606 §5.3 leaves no safe repair).
MAX_NAMES_PER_UPDATE = 200_000
#: Decision steps (of `decision.Rank`) on which paths must agree to share load: LOCAL_PREF, local
#: origination, AS_PATH length, ORIGIN, MED, and eBGP over iBGP (the IGP-cost step of RFC 4271).
MULTIPATH_STEPS = 6
#: The MED's place in `decision.Rank`, which `Rib.med_tolerance` relaxes.
MULTIPATH_MED_STEP = 4
#: Cached paths beyond which unused paths and attribute sets are collected (then twice the live count).
COLLECT_THRESHOLD = 4096
#: Budget of name octets per UPDATE built here: a few hundred KiB, well under gRPC's 4 MiB default.
UPDATE_NAME_BYTES = 256 * 1024
#: Distinct Path Identifiers one neighbour may use (RFC 7911 sets no bound; each costs a source here).
MAX_PATH_IDS = 64


class Drop(Enum):
    """Why received names were not installed."""

    AS_PATH_LOOP = "as_path_loop"
    MALFORMED_ATTRIBUTES = "malformed_attributes"
    #: ORIGINATOR_ID is this node, or CLUSTER_LIST holds its cluster (RFC 4456 §8).
    REFLECTION_LOOP = "reflection_loop"


class ChangeKind(Enum):
    """Why a name's best path changed when no decision step compared the old and the new path."""

    NEW_ROUTE = "new_route"
    WITHDRAWN = "withdrawn"
    #: The previous best was withdrawn or replaced by its own source; the new one is the best left.
    PREVIOUS_BEST_LOST = "previous_best_lost"


ChangeReason = DecisionReason | ChangeKind


@dataclass(frozen=True, slots=True)
class BestPathChange:
    """A name got a new best path, or lost its route (`best` is None)."""

    name: str
    best: Path | None
    reason: ChangeReason


@dataclass(frozen=True, slots=True)
class Dropped:
    """Names of one UPDATE that were treated as withdrawn, and why (for logs and counters)."""

    reason: Drop
    detail: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Received:
    """What `receive` did with one UPDATE."""

    announced: int = 0
    withdrawn: int = 0
    changed: int = 0
    #: Announced names that import policy rejected (kept aside for re-evaluation and explanation).
    filtered: int = 0
    dropped: Dropped | None = None
    #: When set the UPDATE cannot be repaired: reset the session with this NOTIFICATION.
    error: Notification | None = None
    end_of_rib: bool = False


@dataclass(slots=True)
class _Outbox:
    """Adj-RIB-Out of one peer and the names waiting to be (re)advertised to it."""

    source: Source
    next_hop: str
    advertised: dict[str, PathAttributes] = field(default_factory=dict)
    #: Names that lost their best path: sent as soon as the peer can take them.
    urgent: dict[str, None] = field(default_factory=dict)
    #: Names with a new best path: sent once the advertisement interval has passed.
    pending: dict[str, None] = field(default_factory=dict)
    established: bool = False
    end_of_rib_pending: bool = False
    #: The advertisement interval runs from the end of one burst of announcements to the next.
    next_announcement: float = float("-inf")
    exports: dict[Path, PathAttributes | None] = field(default_factory=dict)
    #: The export policy towards this peer, and whether its verdict can differ between the names of
    #: one path (then exports are decided per name and not cached per path).
    export_chain: PolicyChain | None = None
    export_per_name: bool = False
    #: ADD-PATH (RFC 7911) as negotiated in the session's OPEN: how many paths per name we send
    #: (0: one, without Path Identifiers), and whether the peer's UPDATEs carry Path Identifiers.
    send_paths: int = 0
    receive_paths: bool = False
    #: With `send_paths`: per name, the Path Identifiers advertised and what each carries.
    path_ids: dict[str, dict[int, PathAttributes]] = field(default_factory=dict)
    #: With `send_paths`: names whose unchanged paths must be announced again (a refresh).
    refresh: dict[str, None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RibCounts:
    adj_rib_in: int
    loc_rib: int
    adj_rib_out: int
    attribute_sets: int


class Rib:
    """Adj-RIB-In, Loc-RIB and Adj-RIB-Out of one node, with local origination and resolution."""

    def __init__(
        self,
        asn: int,
        router_id: int,
        next_hop: str,
        min_advertisement_interval: float = 0.1,
        *,
        cluster_id: int | None = None,
        damping: Damping | None = None,
        med_tolerance: int = 0,
    ) -> None:
        self.asn = asn
        self.router_id = router_id
        #: This node's CLUSTER_ID when it reflects routes (RFC 4456 §7); its router id by default.
        self.cluster_id = router_id if cluster_id is None else cluster_id
        self.next_hop = next_hop
        self.min_advertisement_interval = min_advertisement_interval
        #: Paths whose MED exceeds the best's by at most this much still count as equally good for
        #: multipath (and ADD-PATH): a health MED differs by a point or two between similar origins.
        self.med_tolerance = med_tolerance
        self._pool = AttributePool()
        self._local = Source(LOCAL, asn, router_id, internal=True, local=True)
        self._sources: dict[str, Source] = {LOCAL: self._local}
        #: Per neighbour, the sources of the paths it sent under each Path Identifier (RFC 7911).
        self._slots: dict[str, dict[int, Source]] = {}
        self._adj_in: dict[str, dict[str, Path]] = {LOCAL: {}}
        #: Per source, names its import policy rejected, with their attributes as received: what a
        #: policy change re-evaluates without asking the peer again, and what `explain` shows.
        self._filtered: dict[str, dict[str, PathAttributes]] = {LOCAL: {}}
        #: Per source whose session ended gracefully (RFC 4724 §4.2): names kept, still candidates,
        #: until the peer announces them again or they are swept.
        self._stale: dict[str, set[str]] = {}
        #: While set, End-of-RIB is not sent: a restarting node waits for its peers' tables first
        #: (RFC 4724 §4.1), so that they do not sweep routes it has not learnt again yet.
        self.hold_end_of_rib = False
        #: Route flap damping of routes from external peers (RFC 2439), None when off.
        self.damping = damping
        #: Per source, announced names damping holds back, with their attributes: not candidates.
        self._suppressed: dict[str, dict[str, PathAttributes]] = {}
        self._paths: dict[tuple[str, PathAttributes, PathAttributes | None], Path] = {}
        self.policy = RoutingPolicy()
        self._import_chains: dict[str, PolicyChain | None] = {}
        self._loc: dict[str, Path] = {}
        self._out: dict[str, _Outbox] = {}
        self.index = ResolutionIndex()
        self.loops_dropped = 0
        self._collect_at = COLLECT_THRESHOLD
        #: Best-path changes by reason, since the start (for metrics).
        self.best_path_changes: Counter[ChangeReason] = Counter()
        #: While set, every best-path change is also kept for `take_changes` (for event watchers).
        self.record_changes = False
        self._changes: list[BestPathChange] = []

    # -- peers -----------------------------------------------------------------------------

    def add_peer(self, key: str, asn: int, router_id: int, *, rr_client: bool = False) -> None:
        """Register a neighbour (before its session comes up); `rr_client` makes this node its reflector."""
        internal = asn == self.asn
        if rr_client and not internal:
            raise ValueError(f"{key} is in AS{asn}: only iBGP neighbours can be route reflector clients")
        source = Source(key, asn, router_id, internal=internal, rr_client=rr_client)
        self._sources[key] = source
        self._adj_in[key] = {}
        self._filtered[key] = {}
        self._out[key] = _Outbox(source, self.next_hop)
        self._slots[key] = {}
        self._assign_chains(key)

    def remove_peer(self, key: str) -> None:
        self.peer_down(key)  # which drops its path id sources too
        self._stale.pop(key, None)
        self._suppressed.pop(key, None)
        if self.damping is not None:
            for source_key in self.damping.peers():
                if source_key == key or source_key.startswith(f"{key}#"):  # its path ids' keys too
                    self.damping.forget_peer(source_key)
        del self._sources[key], self._adj_in[key], self._filtered[key], self._out[key], self._slots[key]
        self._import_chains.pop(key, None)

    def peer_up(self, key: str, router_id: int, *, send_paths: int = 0, receive_paths: bool = False) -> None:
        """The session is Established: queue the whole table, then End-of-RIB (RFC 4724 §2).

        `send_paths` > 1 and `receive_paths` are what the session negotiated of ADD-PATH (RFC 7911).
        """
        self._set_router_id(key, router_id)
        out = self._out[key]
        out.established = True
        out.send_paths = send_paths if send_paths > 1 else 0
        out.receive_paths = receive_paths
        out.advertised.clear()
        out.path_ids.clear()
        out.urgent.clear()
        out.pending = dict.fromkeys(self._loc)
        out.end_of_rib_pending = True
        out.next_announcement = float("-inf")

    def peer_down(self, key: str, *, keep_stale: bool = False, now: float = 0.0) -> None:
        """The session ended: flush the peer's routes and forget what was advertised to it.

        With `keep_stale` (graceful restart, RFC 4724 §4.2) the routes stay, marked stale, and are
        still used until the peer announces them again or `sweep_stale` removes them. Otherwise,
        with damping on, each route of an external peer is charged a withdrawal at `now`: a session
        that keeps dropping is a flap of every route it carried (RFC 2439).
        """
        out = self._out[key]
        out.established = False
        out.advertised.clear()
        out.path_ids.clear()
        out.refresh.clear()
        out.urgent.clear()
        out.pending.clear()
        out.exports.clear()
        out.end_of_rib_pending = False
        for source_key in self._source_keys(key):
            self._source_down(source_key, keep_stale, now)
        if not keep_stale:
            self._drop_slots(key)

    def _drop_slots(self, key: str) -> None:
        """Forget the (flushed) path id sources of a neighbour, so the next session starts with none.

        Their damping history is kept under their keys: a session that keeps dropping is damped.
        """
        for slot in self._slots[key].values():
            del self._sources[slot.key], self._adj_in[slot.key], self._filtered[slot.key]
            self._import_chains.pop(slot.key, None)
            self._stale.pop(slot.key, None)
            self._suppressed.pop(slot.key, None)
        self._slots[key].clear()

    def _source_down(self, key: str, keep_stale: bool, now: float) -> None:
        """Flush (or keep as stale) the routes of one source of a neighbour whose session ended."""
        if keep_stale:
            self._stale.setdefault(key, set()).update(self._adj_in[key])
            return
        self._stale.pop(key, None)
        adj = self._adj_in[key]
        if self.damping is not None and not self._sources[key].internal:
            self._damp_withdrawals(key, adj, list(itertools.chain(adj, self._suppressed.get(key, ()))), now)
        self._suppressed.pop(key, None)  # their history stays with the damping engine
        self._adj_in[key] = {}
        self._filtered[key] = {}
        self._paths = {k: p for k, p in self._paths.items() if k[0] != key}
        self._touch(adj)
        self._withdraw_paths(key, adj)

    def _source_keys(self, key: str) -> list[str]:
        """The neighbour's own source key, then those of the Path Identifiers it used."""
        return [key, *(slot.key for slot in self._slots[key].values())]

    def _slot(self, key: str, path_id: int) -> Source | None:
        """The source of neighbour `key`'s paths with Path Identifier `path_id` (0: the neighbour's own).

        None once the neighbour used MAX_PATH_IDS identifiers: each is a source held here.
        """
        if path_id == 0:
            return self._sources[key]
        slots = self._slots[key]
        slot = slots.get(path_id)
        if slot is None:
            if len(slots) >= MAX_PATH_IDS:
                return None
            peer = self._sources[key]
            slot = slots[path_id] = Source(
                f"{key}#{path_id}",
                peer.asn,
                peer.router_id,
                peer.internal,
                False,
                peer.rr_client,
                key,
                path_id,
            )
            self._sources[slot.key] = slot
            self._adj_in[slot.key] = {}
            self._filtered[slot.key] = {}
            self._import_chains[slot.key] = self._import_chains.get(key)
        return slot

    def _set_router_id(self, key: str, router_id: int) -> None:
        """The router id is learnt from OPEN; it feeds step 8 of the decision (so paths are remade)."""
        old = self._sources[key]
        if old.router_id != router_id:
            source = Source(key, old.asn, router_id, old.internal, rr_client=old.rr_client)
            self._sources[key] = source
            self._out[key].source = source
            for path_id, slot in self._slots[key].items():
                self._slots[key][path_id] = self._sources[slot.key] = Source(
                    slot.key, old.asn, router_id, old.internal, False, old.rr_client, key, path_id
                )

    # -- receiving -------------------------------------------------------------------------

    def receive(self, key: str, update: Update, now: float) -> Received:
        """Apply one UPDATE from neighbour `key` (RFC 4271 §9, RFC 7606 §2)."""
        if update.end_of_rib and not update.withdrawn and not update.announced:
            return Received(end_of_rib=True)
        if error := self._unrepairable(update):
            return Received(error=error)
        if self._out[key].receive_paths and (update.announced_path_ids or update.withdrawn_path_ids):
            received = self._receive_paths(key, update, now)
        else:
            received = self._receive_from(key, update, now)
        if received.error is None:
            self._touch(itertools.chain(update.withdrawn, update.announced))
        return received

    def _receive_paths(self, key: str, update: Update, now: float) -> Received:
        """An UPDATE whose names carry Path Identifiers (RFC 7911 §3): each identifier is its own source."""
        parts: dict[int, tuple[list[str], list[str]]] = {}
        for name, path_id in zip(
            update.withdrawn, update.withdrawn_path_ids or _zeros(update.withdrawn), strict=True
        ):
            parts.setdefault(path_id, ([], []))[0].append(name)
        for name, path_id in zip(
            update.announced, update.announced_path_ids or _zeros(update.announced), strict=True
        ):
            parts.setdefault(path_id, ([], []))[1].append(name)
        slots = {path_id: self._slot(key, path_id) for path_id in parts}
        if None in slots.values():
            data = f"more than {MAX_PATH_IDS} path identifiers".encode()
            return Received(
                error=Notification(ErrorCode.UPDATE_MESSAGE, UpdateSubcode.INVALID_NETWORK_FIELD, data)
            )
        total = Received()
        for path_id, (withdrawn, announced) in parts.items():
            part = Update(
                withdrawn=tuple(withdrawn),
                attributes=update.attributes if announced else None,
                announced=tuple(announced),
                attribute_error=update.attribute_error,
            )
            slot = slots[path_id]
            assert slot is not None
            total = _add(total, self._receive_from(slot.key, part, now))
        return total

    def _receive_from(self, key: str, update: Update, now: float) -> Received:
        """Apply the names of one UPDATE that belong to one source (a neighbour, or one of its path ids)."""
        withdrawn: Iterable[str] = update.withdrawn
        announced = update.announced
        dropped = None
        if announced:
            dropped = self._drop_reason(update, self._sources[key].internal)
            if dropped is not None:
                withdrawn, announced = itertools.chain(update.withdrawn, announced), ()
        changed: dict[str, Path | None] = {}
        adj = self._adj_in[key]
        filtered = self._filtered[key]
        stale = self._stale.get(key)
        if stale:
            # Announced again (or withdrawn) by the restarted peer: no longer stale (RFC 4724 §4.2).
            stale.difference_update(update.announced)
            stale.difference_update(update.withdrawn)
        source = self._sources[key]
        damped = self.damping is not None and not source.internal
        if damped:
            withdrawn = list(withdrawn)
            self._damp_withdrawals(key, adj, withdrawn, now)
        for name in withdrawn:
            path = adj.pop(name, None)
            if path is not None and self._loc.get(name) is path:
                changed[name] = path
            elif filtered:
                filtered.pop(name, None)
        rejected = 0
        if announced:
            assert update.attributes is not None
            attrs = imported(update.attributes, internal=source.internal)
            if damped:
                attrs = self._pool.intern(attrs)
                announced = self._undamped(key, adj, attrs, announced, changed, now)
            rejected = self._import(source, attrs, announced, changed)
        self._commit(changed)
        return Received(len(announced), len(update.withdrawn), len(changed), rejected, dropped)

    def _import(
        self, source: Source, attrs: PathAttributes, names: Sequence[str], changed: dict[str, Path | None]
    ) -> int:
        """Install announced names through the source's import policy; returns how many it rejected."""
        adj = self._adj_in[source.key]
        chain = self._import_chains.get(source.key)
        if chain is None:
            self._install(adj, self._path(source, attrs), names, changed)
            return 0
        attrs = self._pool.intern(attrs)
        filtered = self._filtered[source.key]
        rejected = 0
        for verdict, group in chain.evaluate_many(names, attrs, self._context(source)):
            if verdict.accepted:
                received = None if verdict.attrs is attrs else attrs
                self._install(adj, self._path(source, verdict.attrs, received), group, changed)
                if filtered:
                    for name in group:
                        filtered.pop(name, None)
                continue
            rejected += len(group)
            loc = self._loc
            for name in group:
                filtered[name] = attrs  # treated as withdrawn, kept for re-evaluation
                path = adj.pop(name, None)
                if path is not None and loc.get(name) is path:
                    changed.setdefault(name, path)
        return rejected

    def _damp_withdrawals(self, key: str, adj: dict[str, Path], names: list[str], now: float) -> None:
        """Charge each withdrawal of a route this peer had announced (RFC 2439 §4.8.2)."""
        assert self.damping is not None
        suppressed = self._suppressed.get(key, {})
        for name in names:
            if name in adj or suppressed.pop(name, None) is not None:
                self.damping.withdrawn(key, name, now)

    def _undamped(
        self,
        key: str,
        adj: dict[str, Path],
        attrs: PathAttributes,
        names: tuple[str, ...],
        changed: dict[str, Path | None],
        now: float,
    ) -> tuple[str, ...]:
        """The announced names damping lets through; the others are kept aside until reuse."""
        assert self.damping is not None
        usable: list[str] = []
        suppressed = self._suppressed.setdefault(key, {})
        loc = self._loc
        for name in names:
            previous = adj.get(name)
            change = previous is not None and (previous.received or previous.attrs) is not attrs
            if self.damping.announced(key, name, change, now):
                usable.append(name)
                continue
            suppressed[name] = attrs
            if previous is not None:  # its newest state is suppressed: the older one is no candidate
                del adj[name]
                if loc.get(name) is previous:
                    changed.setdefault(name, previous)
        return tuple(usable) if len(usable) != len(names) else names

    def reuse(self, now: float) -> int:
        """Install the suppressed routes whose penalty decayed below the reuse threshold by `now`."""
        if self.damping is None:
            return 0
        groups: dict[tuple[str, int], tuple[PathAttributes, list[str]]] = {}
        for key, name in self.damping.reusable(now):
            attrs = self._suppressed.get(key, {}).pop(name, None)
            if attrs is not None and key in self._sources:
                groups.setdefault((key, id(attrs)), (attrs, []))[1].append(name)
        changed: dict[str, Path | None] = {}
        for (key, _), (attrs, names) in groups.items():
            self._import(self._sources[key], attrs, names, changed)
            self._touch(names)
        self._commit(changed)
        return sum(len(names) for _, names in groups.values())

    def suppressed(self, key: str) -> Iterator[tuple[str, PathAttributes]]:
        """Names from `key` (any of its path ids) that damping holds back, with their attributes."""
        return itertools.chain.from_iterable(
            self._suppressed.get(k, {}).items() for k in self._source_keys(key)
        )

    def suppressed_count(self, key: str | None = None) -> int:
        """Routes damping holds back from `key`, or from every peer."""
        if key is None:
            return sum(len(names) for names in self._suppressed.values())
        return sum(len(self._suppressed.get(k, {})) for k in self._source_keys(key))

    def _context(self, peer: Source) -> RouteContext:
        return RouteContext(peer.neighbor, peer.asn, self.asn, self.next_hop)

    def _unrepairable(self, update: Update) -> Notification | None:
        """Errors in the names themselves: without trustworthy NLRI only a reset is safe (RFC 7606 §5.3)."""
        if len(update.withdrawn) + len(update.announced) > MAX_NAMES_PER_UPDATE:
            return Notification(
                ErrorCode.UPDATE_MESSAGE, UpdateSubcode.INVALID_NETWORK_FIELD, b"too many names"
            )
        bad = namespace.invalid_names(update.withdrawn) or namespace.invalid_names(update.announced)
        if bad:
            return Notification(
                ErrorCode.UPDATE_MESSAGE, UpdateSubcode.INVALID_NETWORK_FIELD, bad[0][:64].encode()
            )
        for names, path_ids in (
            (update.announced, update.announced_path_ids),
            (update.withdrawn, update.withdrawn_path_ids),
        ):
            if path_ids and len(path_ids) != len(names):
                # RFC 7911 §3: every name carries its identifier; a partial list cannot be matched up.
                return Notification(ErrorCode.UPDATE_MESSAGE, UpdateSubcode.MALFORMED_ATTRIBUTE_LIST)
        return None

    def _drop_reason(self, update: Update, internal: bool) -> Dropped | None:
        attrs = update.attributes
        problem = update.attribute_error or (
            malformation(attrs) if attrs else "announced names without attributes"
        )
        if problem:
            return Dropped(Drop.MALFORMED_ATTRIBUTES, problem, update.announced)
        assert attrs is not None
        if self.asn in attrs.as_path:
            # RFC 4271 §9.1.2: a route whose AS_PATH holds our own AS is a loop.
            self.loops_dropped += len(update.announced)
            return Dropped(
                Drop.AS_PATH_LOOP, f"AS_PATH {list(attrs.as_path)} contains AS{self.asn}", update.announced
            )
        if not internal:
            return None  # ORIGINATOR_ID and CLUSTER_LIST from outside the AS are ignored (RFC 4456 §8)
        if attrs.originator_id == self.router_id:
            # RFC 4456 §8: our own route, reflected back to us.
            return Dropped(Drop.REFLECTION_LOOP, "ORIGINATOR_ID is this node", update.announced)
        if self.cluster_id in attrs.cluster_list and self._reflects():
            return Dropped(
                Drop.REFLECTION_LOOP,
                f"CLUSTER_LIST contains this cluster ({self.cluster_id})",
                update.announced,
            )
        return None

    def _reflects(self) -> bool:
        return any(source.rr_client for source in self._sources.values())

    def _path(self, source: Source, attrs: PathAttributes, received: PathAttributes | None = None) -> Path:
        """The shared Path for an attribute set from a source, created (and ranked) once."""
        attrs = self._pool.intern(attrs)
        key = (source.key, attrs, received)
        path = self._paths.get(key)
        if path is None or path.source is not source:
            if len(self._paths) >= self._collect_at:
                self.collect()
            path = self._paths[key] = make_path(attrs, source, received)
        return path

    def collect(self) -> None:
        """Drop paths and attribute sets no route uses any more.

        Churn leaves superseded attribute sets behind; collecting whenever the cache doubles keeps
        memory proportional to what is in use at an amortised cost of O(1) per new path.
        """
        live = set(itertools.chain.from_iterable(adj.values() for adj in self._adj_in.values()))
        self._paths = {key: path for key, path in self._paths.items() if path in live}
        in_use = {id(path.attrs) for path in live}
        in_use.update(id(path.received) for path in live if path.received is not None)
        for filtered in self._filtered.values():
            in_use.update(map(id, filtered.values()))
        for out in self._out.values():
            out.exports.clear()
            in_use.update(id(attrs) for attrs in set(out.advertised.values()))
            # ADD-PATH peers: what each path id carries is compared by identity when it is sent again.
            in_use.update(id(attrs) for paths in out.path_ids.values() for attrs in paths.values())
        self._pool.collect(in_use)
        self._collect_at = max(COLLECT_THRESHOLD, 2 * len(self._paths))

    def _install(
        self, adj: dict[str, Path], path: Path, names: Iterable[str], changed: dict[str, Path | None]
    ) -> None:
        loc = self._loc
        rank = path.rank
        for name in names:
            previous = adj.get(name)
            adj[name] = path
            best = loc.get(name)
            if best is None:
                loc[name] = path
                changed[name] = None
            elif best is previous:
                # The sender replaced its own best path: every candidate must be looked at again.
                changed.setdefault(name, best)
            elif rank < best.rank:
                loc[name] = path
                changed.setdefault(name, best)

    def _withdraw_paths(self, key: str, removed: dict[str, Path]) -> None:
        loc = self._loc
        changed = {name: path for name, path in removed.items() if loc.get(name) is path}
        self._commit(changed)

    def _commit(self, changed: Mapping[str, Path | None]) -> None:
        """Settle the best path of each changed name and queue it for every established peer."""
        if not changed:
            return
        adj_in, loc = self._adj_in, self._loc
        for name, old in changed.items():
            # The incremental comparison in `_install` is exact only while the old best is still a
            # candidate: once its source replaced or withdrew it (possibly in a batch over several
            # sources, as `set_policy` and `reuse` make), only the full decision knows the best.
            displaced = old is not None and adj_in.get(old.source.key, {}).get(name) is not old
            if old is not None and (displaced or loc.get(name) in (old, None)):
                self._recompute(name)
        # Names whose best path ended up as it was (a replaced best that won again) need no UPDATE.
        moved = {name: old for name, old in changed.items() if loc.get(name) is not old}
        self.index.update(moved, loc)
        self._note_changes(moved)
        gone: dict[str, None] = {}
        by_path: dict[Path, list[str]] = {}
        for name in moved:
            best = loc.get(name)
            if best is None:
                gone[name] = None
            else:
                by_path.setdefault(best, []).append(name)
        for out in self._out.values():
            if not out.established:
                continue
            out.urgent.update(gone)
            for path, names in by_path.items():
                if out.send_paths or out.export_per_name or self._export_cached(out, path) is not None:
                    out.pending.update(dict.fromkeys(names))
                else:
                    # The new best cannot go to this peer: withdraw what it has, without delay.
                    advertised = out.advertised
                    out.urgent.update(dict.fromkeys(name for name in names if name in advertised))

    def _touch(self, names: Iterable[str]) -> None:
        """Queue names whose candidates changed for peers sent several paths: their best may be the same."""
        outs = [out for out in self._out.values() if out.send_paths and out.established]
        if outs:
            touched = dict.fromkeys(names)
            for out in outs:
                out.pending.update(touched)

    def _note_changes(self, moved: Mapping[str, Path | None]) -> None:
        """Count each best-path change by its reason, and keep it while someone watches."""
        loc, counts = self._loc, self.best_path_changes
        if self.record_changes:
            for name, old in moved.items():
                best = loc.get(name)
                reason = self._change_reason(name, old, best)
                counts[reason] += 1
                self._changes.append(BestPathChange(name, best, reason))
            return
        # Bulk learning and withdrawal are mostly new names and names gone: count those at once,
        # and look only at the names whose best path was replaced.
        replaced = [(name, old) for name, old in moved.items() if old is not None]
        still = [(name, old) for name, old in replaced if name in loc]
        for kind, count in (
            (ChangeKind.NEW_ROUTE, len(moved) - len(replaced)),
            (ChangeKind.WITHDRAWN, len(replaced) - len(still)),
        ):
            if count:
                counts[kind] += count
        for name, old in still:
            counts[self._change_reason(name, old, loc[name])] += 1

    def _change_reason(self, name: str, old: Path | None, best: Path | None) -> ChangeReason:
        if old is None:
            return ChangeKind.NEW_ROUTE
        if best is None:
            return ChangeKind.WITHDRAWN
        if self._adj_in.get(old.source.key, {}).get(name) is old:
            return why(best, old)  # the old best is still a candidate: the new one beat it
        return ChangeKind.PREVIOUS_BEST_LOST

    def take_changes(self) -> list[BestPathChange]:
        """The best-path changes recorded since the last call, oldest first."""
        changes, self._changes = self._changes, []
        return changes

    def _recompute(self, name: str) -> None:
        best: Path | None = None
        for adj in self._adj_in.values():
            path = adj.get(name)
            if path is not None and (best is None or path.rank < best.rank):
                best = path
        if best is None:
            self._loc.pop(name, None)
        else:
            self._loc[name] = best

    # -- policy ----------------------------------------------------------------------------

    def set_policy(self, policy: RoutingPolicy) -> int:
        """Apply new import and export policies to what is already held, without resetting sessions.

        Every route received is evaluated again from its attributes as received (kept in the path,
        or in the filtered set for rejected names), and every name is queued for every peer, whose
        Adj-RIB-Out then sends only what changed. Returns how many received routes were evaluated.
        """
        self.policy = policy
        changed: dict[str, Path | None] = {}
        evaluated = 0
        for key in self._out:
            self._assign_chains(key)
        for key, source in self._sources.items():
            if key != LOCAL:
                evaluated += self._reimport(source, changed)
        self._commit(changed)
        for out in self._out.values():
            out.exports.clear()
            if out.established:
                out.pending.update(dict.fromkeys(self._loc))
        return evaluated

    def _assign_chains(self, key: str) -> None:
        self._import_chains[key] = self.policy.import_chain(key)
        for slot in self._slots[key].values():
            self._import_chains[slot.key] = self._import_chains[key]
        out = self._out[key]
        out.export_chain = self.policy.export_chain(key)
        out.export_per_name = out.export_chain is not None and out.export_chain.name_dependent

    def _reimport(self, source: Source, changed: dict[str, Path | None]) -> int:
        """Run the source's routes through its import policy again, grouped by attributes as received."""
        groups: dict[int, tuple[PathAttributes, list[str]]] = {}
        received = itertools.chain(
            ((name, path.received or path.attrs) for name, path in self._adj_in[source.key].items()),
            self._filtered[source.key].items(),
        )
        for name, attrs in list(received):
            groups.setdefault(id(attrs), (attrs, []))[1].append(name)
        for attrs, names in groups.values():
            self._import(source, attrs, names, changed)
        if self._import_chains.get(source.key) is None:
            self._filtered[source.key] = {}  # accepted again by `_import` above
        return sum(len(names) for _, names in groups.values())

    def explain_import(self, key: str, name: str) -> Verdict | None:
        """How the import policy treated `name` from neighbour `key` (its first path id that has the name);
        None without a policy or route."""
        chain = self._import_chains.get(key)
        if chain is None:
            return None
        for source_key in self._source_keys(key):
            path = self._adj_in[source_key].get(name)
            attrs = (
                (path.received or path.attrs) if path is not None else self._filtered[source_key].get(name)
            )
            if attrs is not None:
                return chain.evaluate(name, attrs, self._context(self._sources[source_key]))
        return None

    def explain_export(self, key: str, name: str) -> Verdict | None:
        """How the export policy towards `key` treats the current best path of `name`."""
        out = self._out[key]
        best = self._loc.get(name)
        if out.export_chain is None or best is None or not self._may_export(out.source, best):
            return None
        return out.export_chain.evaluate(name, best.attrs, self._context(out.source))

    def filtered(self, key: str) -> Iterator[tuple[str, PathAttributes]]:
        """Names the import policy rejected from `key` (any path id), with their attributes as received."""
        return itertools.chain.from_iterable(self._filtered[k].items() for k in self._source_keys(key))

    # -- local origination -----------------------------------------------------------------

    def originate(
        self,
        names: Iterable[str],
        agent: AgentAttributes,
        *,
        med: int | None = None,
        communities: tuple[int, ...] = (),
        now: float = 0.0,
    ) -> None:
        """Announce agents hosted by this node (ORIGIN IGP, empty AS_PATH, NEXT_HOP ourselves)."""
        names = tuple(names)
        if bad := namespace.invalid_names(names):
            raise ValueError(f"invalid agent name {bad[0]!r}: labels of [A-Za-z0-9_-] joined by dots")
        attrs = PathAttributes(
            origin=Origin.IGP,
            as_path=(),
            next_hop=self.next_hop,
            med=med,
            communities=communities,
            agent=agent,
        )
        if problem := malformation(attrs):
            raise ValueError(f"invalid agent attributes: {problem}")
        changed: dict[str, Path | None] = {}
        self._install(self._adj_in[LOCAL], self._path(self._local, attrs), names, changed)
        self._commit(changed)

    def withdraw_local(self, names: Iterable[str], now: float = 0.0) -> list[str]:
        """Withdraw locally originated routes; returns the names that were not originated here."""
        adj = self._adj_in[LOCAL]
        unknown: list[str] = []
        removed: dict[str, Path] = {}
        for name in names:
            path = adj.pop(name, None)
            if path is None:
                unknown.append(name)
            else:
                removed[name] = path
        loc = self._loc
        self._commit({name: path for name, path in removed.items() if loc.get(name) is path})
        return unknown

    # -- advertising -----------------------------------------------------------------------

    def resend(self, key: str) -> None:
        """Queue the whole table for the peer again: a soft reset out, or its ROUTE-REFRESH (RFC 2918 §4).

        Names whose export is unchanged would be skipped as already advertised, so they are
        forgotten first. Names with a withdrawal still queued keep their entry, so that it is sent.
        """
        out = self._out[key]
        if not out.established:
            return
        if out.send_paths:
            out.refresh.update(dict.fromkeys(out.path_ids))
        for name in list(out.advertised):
            if self._export(out, name) is not None:
                del out.advertised[name]
        out.pending.update(dict.fromkeys(self._loc))
        out.next_announcement = float("-inf")

    def has_pending(self, key: str, now: float) -> bool:
        """Whether `take_updates` would produce something for the peer now."""
        out = self._out[key]
        if not out.established:
            return False
        due = bool(out.pending) and now >= out.next_announcement
        end_of_rib = out.end_of_rib_pending and not out.pending and not self.hold_end_of_rib
        return bool(out.urgent) or due or end_of_rib

    def next_deadline(self, now: float = float("-inf")) -> float | None:
        """When announcements held back by the advertisement interval become due, if after `now`.

        Announcements already due but not yet sent wait for their stream to drain, not for a timer.
        """
        due = [
            out.next_announcement
            for out in self._out.values()
            if out.established and out.pending and out.next_announcement > now
        ]
        if self.damping is not None and (reuse := self.damping.next_deadline()) is not None:
            due.append(reuse)
        return min(due, default=None)

    def take_updates(self, key: str, now: float, max_names: int = 50_000) -> list[Update]:
        """UPDATEs for up to `max_names` of the peer's queued names, withdrawals first."""
        out = self._out[key]
        if not out.established:
            return []
        updates = (
            self._take_paths(out, now, max_names) if out.send_paths else self._take_best(out, now, max_names)
        )
        if out.end_of_rib_pending and not out.pending and not out.urgent and not self.hold_end_of_rib:
            out.end_of_rib_pending = False
            updates.append(Update(end_of_rib=True))
        return updates

    def _take_best(self, out: _Outbox, now: float, max_names: int) -> list[Update]:
        """UPDATEs with the one best path per name (RFC 4271 §9.2)."""
        advertised = out.advertised
        withdrawn: list[str] = []
        for name in _take(out.urgent, max_names):
            # A name that came back meanwhile is also in `pending`, and is announced from there.
            if self._export(out, name) is None and advertised.pop(name, None) is not None:
                withdrawn.append(name)
        # Grouped by identity: exported sets are interned, and hashing a set per name would cost more.
        groups: dict[int, tuple[PathAttributes, list[str]]] = {}
        if out.pending and now >= out.next_announcement:
            for name in _take(out.pending, max_names - len(withdrawn)):
                exported = self._export(out, name)
                if exported is advertised.get(name):
                    continue
                if exported is None:
                    del advertised[name]
                    withdrawn.append(name)
                else:
                    advertised[name] = exported
                    group = groups.get(id(exported))
                    if group is None:
                        group = groups[id(exported)] = (exported, [])
                    group[1].append(name)
            if not out.pending:
                out.next_announcement = now + self.min_advertisement_interval
        updates = [Update(withdrawn=chunk) for chunk in _chunks(withdrawn)]
        for attrs, names in groups.values():
            updates += [Update(attributes=attrs, announced=chunk) for chunk in _chunks(names)]
        return updates

    def _take_paths(self, out: _Outbox, now: float, max_names: int) -> list[Update]:
        """UPDATEs with several paths per name, each under its Path Identifier (RFC 7911 §3)."""
        names = _take(out.urgent, max_names)
        if out.pending and now >= out.next_announcement:
            names += _take(out.pending, max_names - len(names))
            if not out.pending:
                out.next_announcement = now + self.min_advertisement_interval
        withdrawn: tuple[list[str], list[int]] = ([], [])
        groups: dict[int, tuple[PathAttributes, list[str], list[int]]] = {}
        exports = self._exports_by_candidates(out)
        for name in names:
            before = out.path_ids.pop(name, {})
            after = _assign_path_ids(before, exports(name))
            if after:
                out.path_ids[name] = after
            for path_id in before:
                if path_id not in after:  # a reused identifier replaces its old path implicitly
                    withdrawn[0].append(name)
                    withdrawn[1].append(path_id)
            forced = name in out.refresh
            if forced:
                del out.refresh[name]
            for path_id, attrs in after.items():
                if forced or before.get(path_id) is not attrs:
                    group = groups.setdefault(id(attrs), (attrs, [], []))
                    group[1].append(name)
                    group[2].append(path_id)
        updates = [
            Update(withdrawn=chunk, withdrawn_path_ids=ids) for chunk, ids in _chunks_with_ids(*withdrawn)
        ]
        for attrs, group_names, ids in groups.values():
            updates += [
                Update(attributes=attrs, announced=chunk, announced_path_ids=chunk_ids)
                for chunk, chunk_ids in _chunks_with_ids(group_names, ids)
            ]
        return updates

    def _exports_by_candidates(self, out: _Outbox) -> Callable[[str], Sequence[PathAttributes]]:
        """`_exports`, computed once for names with the same candidate paths.

        Names announced together share their Path objects, and the best path and its equals follow
        from the candidates alone, so a table's worth of names costs a few dict lookups each.
        """
        if out.export_per_name:
            return lambda name: self._exports(out, name)
        sources = list(self._adj_in.values())
        cache: dict[tuple[Path | None, ...], list[PathAttributes]] = {}

        def exports(name: str) -> list[PathAttributes]:
            key = tuple([adj.get(name) for adj in sources])
            found = cache.get(key)
            if found is None:
                found = cache[key] = self._exports(out, name)
            return found

        return exports

    def _exports(self, out: _Outbox, name: str) -> list[PathAttributes]:
        """What the peer is sent for `name` with ADD-PATH: the exports of its equally good paths."""
        best = self._loc.get(name)
        if best is None:
            return []
        exports: list[PathAttributes] = []
        for path in self._equal_paths(name, best):
            exported = (
                self._export_path(out, path, name) if out.export_per_name else self._export_cached(out, path)
            )
            if exported is not None and all(exported is not other for other in exports):
                exports.append(exported)
                if len(exports) == out.send_paths:
                    break
        return exports

    def _export(self, out: _Outbox, name: str) -> PathAttributes | None:
        best = self._loc.get(name)
        if best is None:
            return None
        if out.export_per_name:
            return self._export_path(out, best, name)
        return self._export_cached(out, best)

    def _export_cached(self, out: _Outbox, path: Path) -> PathAttributes | None:
        """What `path` is exported as to `out`'s peer, computed once per path and peer."""
        try:
            return out.exports[path]
        except KeyError:
            exported = out.exports[path] = self._export_path(out, path, "")
            return exported

    def _export_path(self, out: _Outbox, path: Path, name: str) -> PathAttributes | None:
        """What to advertise to `out`'s peer for a best path, or None to advertise nothing (RFC 4271 §9.2).

        The export policy sees the route after the mandatory rules and before the eBGP/iBGP
        transforms, so it cannot bring back what those rules hold back, and its AS-path prepends
        come after this AS's own prepend on the wire.
        """
        peer = out.source
        if not self._may_export(peer, path):
            return None
        attrs, med_set_here = path.attrs, False
        if out.export_chain is not None:
            verdict = out.export_chain.evaluate(name, attrs, self._context(peer))
            if not verdict.accepted:
                return None
            attrs, med_set_here = verdict.attrs, _sets_med(verdict)
        return self._transform(peer, path.source, attrs, med_set_here)

    def _may_export(self, peer: Source, path: Path) -> bool:
        """The export rules no policy overrides (RFC 4271 §9.2, RFC 1997)."""
        source = path.source
        communities = path.attrs.communities
        if source.neighbor == peer.key:
            return False  # never back to the neighbour it came from
        if NO_ADVERTISE in communities:
            return False  # RFC 1997
        if peer.internal and source.internal and not source.local:
            # iBGP-learned routes are not sent to iBGP peers (RFC 4271 §9.2.1), unless this node
            # reflects them (RFC 4456 §6): a client's routes to every iBGP peer, a non-client's to
            # clients only.
            return source.rr_client or peer.rr_client
        return peer.internal or NO_EXPORT not in communities  # RFC 1997: not outside the AS

    def _transform(
        self, peer: Source, source: Source, attrs: PathAttributes, med_set_here: bool
    ) -> PathAttributes | None:
        if peer.internal:
            if source.internal and not source.local:
                originator = source.router_id
                return self._pool.intern(reflected(attrs, originator, self.cluster_id))
            return self._pool.intern(exported_internal(attrs))
        # NO_EXPORT added by the export policy itself is sent: it asks the peer to keep the
        # route in its AS (RFC 1997); a route that arrived with it was held back by `_may_export`.
        exported = exported_external(
            attrs, self.asn, self.next_hop, local=source.local, med_set_here=med_set_here
        )
        return self._pool.intern(exported)

    # -- reading ---------------------------------------------------------------------------

    def best(self, name: str) -> Path | None:
        return self._loc.get(name)

    def lookup(self, name: str) -> tuple[str, Path] | None:
        """The Loc-RIB entry serving `name` (itself or its longest covering aggregate) and its path."""
        match = longest_match(name, self._loc)
        return None if match is None else (match, self._loc[match])

    def lookup_paths(self, name: str, maximum: int) -> tuple[str, list[Path]] | None:
        """The entry serving `name` and up to `maximum` equally good paths to it, best first.

        Equally good as ECMP has it: equal through the MED and eBGP-over-iBGP steps of the decision
        (`MULTIPATH_STEPS`), so only the tie-breakers (cluster list, router id, address) differ; one
        path per NEXT_HOP. A locally originated best path has no equals: local agents are served here.
        """
        match = longest_match(name, self._loc)
        if match is None:
            return None
        best = self._loc[match]
        if maximum <= 1:
            return match, [best]
        return match, list(itertools.islice(self._equal_paths(match, best), maximum))

    def _equal_paths(self, name: str, best: Path) -> Iterator[Path]:
        """`best`, then the candidates for `name` equally good (`_equally_good`), one per NEXT_HOP."""
        yield best
        if best.source.local:
            return  # local agents are served here
        equals = sorted(
            (
                path
                for adj in self._adj_in.values()
                if (path := adj.get(name)) is not None and path is not best and self._equally_good(path, best)
            ),
            key=lambda path: path.rank,
        )
        hops = {best.attrs.next_hop}
        for path in equals:
            if path.attrs.next_hop not in hops:
                hops.add(path.attrs.next_hop)
                yield path

    def _equally_good(self, path: Path, best: Path) -> bool:
        """Equal to `best` through MULTIPATH_STEPS, the MED within `med_tolerance`."""
        rank, key = path.rank, best.rank
        if not self.med_tolerance:
            return rank[:MULTIPATH_STEPS] == key[:MULTIPATH_STEPS]
        med = MULTIPATH_MED_STEP
        return (
            rank[:med] == key[:med]
            and (path.attrs.med or 0) - (best.attrs.med or 0) <= self.med_tolerance
            and rank[med + 1 : MULTIPATH_STEPS] == key[med + 1 : MULTIPATH_STEPS]
        )

    def with_capability(self, tag: str) -> list[tuple[str, Path]]:
        return sorted((name, self._loc[name]) for name in self.index.by_capability(tag))

    def matching(self, pattern: str, limit: int | None = None) -> list[tuple[str, Path]]:
        """Names matching a glob (`*`, `?`, `[...]` within a label; `**` across labels)."""
        return [(name, self._loc[name]) for name in self.index.glob(pattern, limit)]

    def explain(self, name: str) -> Decision | None:
        """The decision for an exact name: best path, reason and every candidate."""
        return decide(path for adj in self._adj_in.values() if (path := adj.get(name)) is not None)

    def loc_rib(self) -> Iterator[tuple[str, Path]]:
        return iter(self._loc.items())

    def adj_rib_in(self, key: str) -> Iterator[tuple[str, Path]]:
        """What neighbour `key` sent, every Path Identifier included (a name once per identifier)."""
        return itertools.chain.from_iterable(self._adj_in[k].items() for k in self._source_keys(key))

    def adj_rib_out(self, key: str) -> Iterator[tuple[str, PathAttributes]]:
        """What was advertised to `key`: with ADD-PATH, a name once per path."""
        out = self._out[key]
        if out.send_paths:
            return ((name, attrs) for name, paths in out.path_ids.items() for attrs in paths.values())
        return iter(out.advertised.items())

    def add_paths(self, key: str) -> tuple[int, bool]:
        """ADD-PATH as the peer's session negotiated it: paths per name sent (0: the best, without
        Path Identifiers), and whether the peer's UPDATEs carry Path Identifiers."""
        out = self._out[key]
        return (out.send_paths, out.receive_paths) if out.established else (0, False)

    def received_count(self, key: str) -> int:
        return sum(len(self._adj_in[k]) for k in self._source_keys(key))

    def sweep_stale(self, key: str) -> int:
        """Remove the routes a restarted peer did not announce again (after its End-of-RIB, or a timer)."""
        removed = 0
        for source_key in self._source_keys(key):
            stale = self._stale.pop(source_key, set())
            adj = self._adj_in[source_key]
            gone = {name: path for name in stale if (path := adj.pop(name, None)) is not None}
            self._touch(gone)
            loc = self._loc
            self._commit({name: path for name, path in gone.items() if loc.get(name) is path})
            removed += len(gone)
        return removed

    def stale_count(self, key: str | None = None) -> int:
        """Stale routes from `key`, or from every peer."""
        if key is None:
            return sum(len(names) for names in self._stale.values())
        return sum(len(self._stale.get(k, ())) for k in self._source_keys(key))

    def stale_names(self, key: str) -> frozenset[str]:
        return frozenset(
            itertools.chain.from_iterable(self._stale.get(k, ()) for k in self._source_keys(key))
        )

    def filtered_count(self, key: str) -> int:
        return sum(len(self._filtered[k]) for k in self._source_keys(key))

    def advertised_count(self, key: str) -> int:
        out = self._out[key]
        if out.send_paths:
            return sum(len(paths) for paths in out.path_ids.values())
        return len(out.advertised)

    def counts(self) -> RibCounts:
        return RibCounts(
            adj_rib_in=sum(len(adj) for key, adj in self._adj_in.items() if key != LOCAL),
            loc_rib=len(self._loc),
            adj_rib_out=sum(self.advertised_count(key) for key in self._out),
            attribute_sets=len(self._pool),
        )


def _take(queue: dict[str, None], limit: int) -> list[str]:
    """Remove and return up to `limit` names from the front of an ordered set."""
    if limit <= 0:
        return []
    if len(queue) <= limit:
        names = list(queue)
        queue.clear()
        return names
    names = list(itertools.islice(queue, limit))
    for name in names:
        del queue[name]
    return names


def _zeros(names: tuple[str, ...]) -> Iterator[int]:
    return itertools.repeat(0, len(names))


def _add(a: Received, b: Received) -> Received:
    """The sum of what two parts of one UPDATE did."""
    return Received(
        a.announced + b.announced,
        a.withdrawn + b.withdrawn,
        a.changed + b.changed,
        a.filtered + b.filtered,
        a.dropped or b.dropped,
    )


def _assign_path_ids(
    before: Mapping[int, PathAttributes], exports: Sequence[PathAttributes]
) -> dict[int, PathAttributes]:
    """Path Identifiers for a name's exports: a path keeps its identifier, a new one takes the lowest free.

    Identifiers only need to be unique per name and peer (RFC 7911 §3); keeping them stable means an
    unchanged path is never re-sent and a replaced one is an implicit withdrawal of the old.
    """
    if not before:
        return dict(enumerate(exports, 1))
    kept = {path_id: attrs for path_id, attrs in before.items() if any(attrs is e for e in exports)}
    free = (path_id for path_id in itertools.count(1) if path_id not in kept)
    after = dict(kept)
    for attrs in exports:
        if all(attrs is not other for other in kept.values()):
            after[next(free)] = attrs
    return after


def _chunks_with_ids(names: list[str], ids: list[int]) -> Iterator[tuple[tuple[str, ...], tuple[int, ...]]]:
    """`_chunks`, with each name's Path Identifier alongside."""
    start = 0
    for chunk in _chunks(names):
        yield chunk, tuple(ids[start : start + len(chunk)])
        start += len(chunk)


def _chunks(names: list[str]) -> Iterator[tuple[str, ...]]:
    """Split names into runs whose octets stay under UPDATE_NAME_BYTES."""
    if not names:
        return
    per_update = max(1, UPDATE_NAME_BYTES // (max(map(len, names)) + 4))
    for start in range(0, len(names), per_update):
        yield tuple(names[start : start + per_update])


def _sets_med(verdict: Verdict) -> bool:
    """Whether a statement of the verdict set or changed the MED (which an eBGP export then keeps)."""
    return any(isinstance(a, SetMed | AddMed | SubtractMed) for step in verdict.trail for a in step.actions)
