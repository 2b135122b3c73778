"""The node at run time: one owner task, its peers, its gRPC server, and the in-process API.

Theory of operation
-------------------
All mutable routing state belongs to one asyncio task, the owner (DESIGN §4.2). Everything else -
gRPC servicers, stream readers, dial tasks, timers, operator commands - submits closures to the
owner's queue and, when it needs an answer, awaits a future the closure resolves. So nothing is
shared between tasks and there are no locks.

The owner drives the sans-IO `Peer`s and carries out their effects: `Dial` starts a dial task,
`Send` and `Close` go to the stream's `Connection`, reports become log lines and watch events.
After each batch of work it arms one loop timer for the earliest peer deadline.

The forwarding plane stays out of the owner on purpose: a call only asks the owner for a lookup,
then talks to a backend or a next hop in its own task. The table of hosted agents it consults is
written by `host()` and rediscovery and read by calls, each a plain dict operation between awaits
in the one event loop, so it needs no lock either.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from agentmesh.access_config import compile_call_policy
from agentmesh.agents.base import AgentRequest, Backend
from agentmesh.agents.factory import build_backend
from agentmesh.agents.health import HealthSettings
from agentmesh.bgp.errors import CeaseSubcode, ErrorCode
from agentmesh.bgp.fsm import (
    Close,
    Dial,
    Event,
    EventKind,
    Reason,
    RouteRefreshRequested,
    Send,
    SessionUp,
    Settings,
    State,
    StateChanged,
    UpdateReceived,
    message_event,
)
from agentmesh.bgp.messages import (
    AgentAttributes,
    Capabilities,
    GracefulRestart,
    MultiplePaths,
    Notification,
    Open,
    PathAttributes,
    RouteRefresh,
    Update,
    cease,
)
from agentmesh.bgp.peer import ConnectionRefused, Peer, PeerEffect
from agentmesh.config import (
    Config,
    MaxPrefixesConfig,
    NeighborConfig,
    join_host_port,
    router_id_to_int,
    split_host_port,
)
from agentmesh.obs.logging import get_logger
from agentmesh.obs.metrics import NodeMetrics
from agentmesh.policy_config import PolicyAssignment, PolicyConfig, build_routing_policy
from agentmesh.rib.damping import Damping
from agentmesh.rib.decision import Decision, Path
from agentmesh.rib.policy import PolicyChain, RoutingPolicy, Verdict
from agentmesh.rib.resolve import glob_matches
from agentmesh.rib.rib import Rib, RibCounts
from agentmesh.speaker.connection import Connection, Received
from agentmesh.speaker.events import (
    DEFAULT_WATCH_LIMIT,
    PeerStateEvent,
    RouteEntry,
    RouteEvent,
    Subscription,
    best_entry,
)
from agentmesh.speaker.forwarder import DEFAULT_HOP_LIMIT, Forwarder
from agentmesh.speaker.hosting import Hosting
from agentmesh.speaker.multipath import PathChooser, Strategy
from agentmesh.speaker.neighbors import (
    NeighborGroup,
    Resolver,
    derived_neighbor,
    dynamic_neighbor,
    in_prefix,
    is_ip_address,
    matching_range,
    resolve,
    same_ip,
    session_addresses,
)
from agentmesh.transport import codec
from agentmesh.transport.forwarding import ForwardingServicer, NextHops, Routed, Served
from agentmesh.transport.server import STOP_GRACE, Caller, GrpcServer
from agentmesh.transport.streams import ClientStream, ServerStream, StreamRefused
from agentmesh.transport.tls import NodeTls, channel_factory, identity_mismatch, tls_failure, tls_name_of

T = TypeVar("T")

#: How long `stop()` waits for the Cease NOTIFICATIONs to be flushed before closing the server.
SHUTDOWN_FLUSH_TIMEOUT = 2.0
#: UPDATEs queued on one stream before the owner stops building more and waits for the writer to drain.
#: Checked between steps of NAMES_PER_STEP names, so a step with many attribute sets can overshoot it.
SEND_WINDOW = 16
#: Names turned into UPDATEs per step, so one busy peer does not stall the owner for long.
NAMES_PER_STEP = 50_000
#: Names originated or withdrawn per owner step.
ORIGINATION_SLICE = 20_000
#: Names listed in one log line about dropped routes.
LOGGED_NAMES = 5
#: The longest one DNS resolution of a neighbour given by name may take before it counts as failed.
RESOLVE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A neighbour as the in-process API reports it."""

    address: str
    asn: int
    description: str
    internal: bool
    passive: bool
    #: The hold time configured for this neighbour, None for the node's default.
    configured_hold_time: int | None
    route_reflector_client: bool
    #: Paths per name configured to be sent with ADD-PATH (RFC 7911), 0 for the best only.
    add_paths: int
    #: The certificate identity expected of it with TLS; None for the host of its address.
    tls_name: str | None
    enabled: bool
    state: State
    peer_id: int | None
    hold_time: int | None
    last_reason: Reason | None
    last_notification: Notification | None
    #: Why the last Established session ended, and the NOTIFICATION sent or received with it.
    last_down_reason: Reason | None
    last_down_notification: Notification | None
    #: Live streams to this neighbour: 1 for a session, 2 while a collision is being resolved.
    connections: int
    routes_received: int
    routes_advertised: int
    seconds_in_state: float
    routes_stale: int
    routes_suppressed: int
    peer_restart_time: int | None
    #: ADD-PATH as the session negotiated it: paths per name sent (0: one, without identifiers),
    #: and whether the peer sends Path Identifiers.
    sending_paths: int = 0
    receiving_paths: bool = False


#: Config sections a running node cannot take on by reload.
_RESTART_SECTIONS = ("node", "timers", "mcp", "admin", "metrics", "agents", "tls")


@dataclass(slots=True)
class Reloaded:
    """What a configuration reload did."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Changed neighbours whose session had to be reset (they changed what it negotiated).
    reset: list[str] = field(default_factory=list)
    reevaluated: int = 0
    #: Sections that changed but apply only after a restart.
    restart_needed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Resolution:
    """How a name resolves: the Loc-RIB entry serving it, the decision, each candidate's import verdict."""

    entry: str
    decision: Decision
    #: Per candidate of `decision.ranked`: how import policy treated it (None: no policy applied).
    verdicts: tuple[Verdict | None, ...]
    #: The next hops calls are spread over (multipath); () for an agent hosted here.
    next_hops: tuple[str, ...] = ()


class RouteTable(Enum):
    ADJ_RIB_IN = "adj-rib-in"
    LOC_RIB = "loc-rib"
    ADJ_RIB_OUT = "adj-rib-out"


class SoftReset(Enum):
    """Which way a soft reset goes: ask the peer for its table, send ours again, or both."""

    IN = "in"
    OUT = "out"
    BOTH = "both"


class UnknownPeer(LookupError):
    """No neighbour has that address."""


class PeerExists(ValueError):
    """A neighbour with that address is already configured."""


class PreconditionFailed(RuntimeError):
    """The request cannot be served in the current state (say, a soft reset in without ROUTE-REFRESH)."""


@dataclass
class _Neighbor:
    config: NeighborConfig
    peer: Peer
    connections: dict[int, Connection] = field(default_factory=dict)
    dials: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    last_reason: Reason | None = None
    last_notification: Notification | None = None
    #: When the session last changed state (loop time).
    state_since: float = 0.0
    last_down_reason: Reason | None = None
    last_down_notification: Notification | None = None
    #: The max-prefix warning was logged for the current session.
    warned: bool = False
    restart: asyncio.TimerHandle | None = None
    #: The restart time the peer advertised (RFC 4724 §3), None when it does no graceful restart.
    peer_restart_time: int | None = None
    #: Sweeps the peer's stale routes if it does not come back (or send End-of-RIB) in time.
    stale_timer: asyncio.TimerHandle | None = None
    #: The address (`name:port`) of the `neighbors` entry this session's address was resolved from.
    group: str | None = None
    #: The `dynamic_neighbors` prefix a dynamic neighbour was accepted from; None for a configured one.
    dynamic: str | None = None


class Node:
    """An agentmesh node: BGP speaker, gRPC server and the owner of all routing state."""

    def __init__(
        self, config: Config, *, rng: random.Random | None = None, resolver: Resolver | None = None
    ) -> None:
        self.config = config
        self.name = config.node.name
        self.asn = config.node.asn
        self.router_id = config.node.router_id
        self._rng = rng or random.Random()
        self._log = get_logger(node=self.name)
        self._neighbors: dict[str, _Neighbor] = {}
        #: Neighbours given by DNS name, by their configured `name:port`; their sessions are in `_neighbors`.
        self._groups: dict[str, NeighborGroup] = {}
        #: Set once `stop` sent its Cease: no peer is admitted after that.
        self._stopping = False
        self._resolver = resolver or resolve
        self._resolving: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Callable[[], None]] = asyncio.Queue()
        self._owner: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchers: list[asyncio.Queue[PeerStateEvent]] = []
        self._subscriptions: list[Subscription] = []
        #: Configured neighbours whose initial table exchange is not over: what they still owe or await.
        self._initial_exchange: dict[str, set[str]] = {}
        self.ready = False
        self.started_at = 0.0
        self._readiness_timer: asyncio.TimerHandle | None = None
        self.metrics = NodeMetrics()
        self._server: GrpcServer | None = None
        #: The TLS credentials of the server and of every channel to other nodes; None: plaintext.
        self._tls: NodeTls | None = None
        self._hostings: list[Hosting] = []
        self._rediscovery: list[asyncio.Task[None]] = []
        self.advertise_address = config.node.advertise_address

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the gRPC server, start the owner task and enable every configured neighbour.

        Raises TlsSetupError, before binding anything, when the `tls` files cannot be used.
        """
        self._tls = NodeTls(self.config.tls, self._log) if self.config.tls is not None else None
        channels = channel_factory(self._tls)
        self.forwarder = Forwarder(
            self.name,
            self.router_id,
            self._lookup_paths,
            observe=self.metrics.call,
            asn=self.asn,
            call_policy=compile_call_policy(self.config.access),
            chooser=PathChooser(Strategy(self.config.forwarding.strategy)),
            next_hops=NextHops(self.name, channels=channels, tls_name_for=self._next_hop_tls_name),
        )
        forwarding = ForwardingServicer(self.name, self.forwarder.call, self.forwarder.stream)
        credentials = self._tls.server_credentials() if self._tls is not None else None
        self._server = GrpcServer(self.config.node.listen, self._accept_stream, forwarding, credentials)
        port = await self._server.start()
        host, advertised_port = split_host_port(self.advertise_address)
        if advertised_port == 0:
            self.advertise_address = join_host_port(host, port)
        self.listen_address = join_host_port(split_host_port(self.config.node.listen)[0], port)
        named = [n for n in self.config.neighbors if n.dns_name is not None]  # resolved before anything runs
        first = dict(
            zip([n.address for n in named], await asyncio.gather(*map(self._lookup, named)), strict=True)
        )
        self.rib = Rib(
            self.asn,
            router_id_to_int(self.router_id),
            self.advertise_address,
            self.config.timers.min_advertisement_interval,
            cluster_id=router_id_to_int(self.config.node.cluster_id) if self.config.node.cluster_id else None,
            damping=Damping(self.config.damping.settings()) if self.config.damping.enabled else None,
            med_tolerance=self.config.forwarding.med_tolerance,
        )
        self.policy = self.config.policy
        self.rib.set_policy(self._routing_policy(self.policy, list(self.config.neighbors)))
        self.started_at = self._now()
        # Readiness waits for the initial table exchange with the configured neighbours (RFC 4724 §2:
        # End-of-RIB both ways), those given by name as first resolved, or for the timeout, whichever
        # comes first.
        self._initial_exchange = {address: {"received", "sent"} for address in self._initial_peers(first)}
        # A (re)starting node with graceful restart sends End-of-RIB only once it has its peers'
        # tables (or the readiness timeout passed), so that peers sweep only what is really gone.
        # Peers that dial in from dynamic ranges cannot be waited for by name: the readiness timeout
        # is then the whole deferral (RFC 4724 §4.1's selection deferral timer).
        deferring = bool(self._initial_exchange) or bool(self.config.dynamic_neighbors)
        self.rib.hold_end_of_rib = self.config.graceful_restart.enabled and deferring
        self._owner = asyncio.create_task(self._run(), name=f"agentmesh-owner-{self.name}")
        self._log.info("node_started", listen=self.listen_address, asn=self.asn, router_id=self.router_id)
        if self._initial_exchange or self.rib.hold_end_of_rib:
            self._readiness_timer = asyncio.get_running_loop().call_later(
                self.config.timers.readiness_timeout, self._post, self._readiness_timed_out
            )
        if not self._initial_exchange:
            await self.call(lambda: self._become_ready("no configured neighbours"))
        # Neighbours given by address first: an address a name also resolves to is theirs.
        for neighbor in self.config.neighbors:
            if neighbor.dns_name is None:
                await self.add_neighbor(neighbor)
        for neighbor in named:
            await self.call(functools.partial(self._add_group, neighbor, first[neighbor.address]))
        self._resolving = asyncio.create_task(self._resolve_forever(), name=f"agentmesh-resolver-{self.name}")
        for index, backend_config in enumerate(self.config.agents):
            backend = build_backend(index, backend_config)
            await self.host(
                backend,
                backend_config.namespace,
                rediscover_every=backend_config.rediscover_every,
                health=backend_config.health.settings(),
            )

    async def stop(self, communication: str = "node shutting down") -> None:
        """Send every peer Cease/Administrative Shutdown (RFC 4486, RFC 8203), then stop."""
        if self._owner is None:
            return
        background = [*self._rediscovery, *([self._resolving] if self._resolving else [])]
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self._rediscovery.clear()
        self._resolving = None
        notification = cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, communication)
        await self.call(lambda: self._stop_all(notification))
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=SHUTDOWN_FLUSH_TIMEOUT)
        if self._server is not None:
            # Drain: the peers withdrew this node's routes on the Cease, so new calls go elsewhere;
            # calls already here finish (forwarding them may still need the owner, so it runs on).
            drain = self.config.timers.drain_time
            await self._server.stop(STOP_GRACE if drain is None else drain)
        self._owner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._owner
        self._owner = None
        for timer in (self._timer, self._readiness_timer):
            if timer is not None:
                timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_FLUSH_TIMEOUT)
        await self.forwarder.close()
        closing = await asyncio.gather(*(h.backend.close() for h in self._hostings), return_exceptions=True)
        for hosting, outcome in zip(self._hostings, closing, strict=True):
            if isinstance(outcome, BaseException):
                self._log.warning("backend_close_failed", backend=hosting.backend.name, error=repr(outcome))
        self._log.info("node_stopped")

    # -- in-process API --------------------------------------------------------------------

    async def call(self, command: Callable[[], T]) -> T:
        """Run `command` in the owner task and return its result."""
        if self._owner is None or self._owner.done():
            raise RuntimeError(f"node {self.name} is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def run() -> None:
            if future.cancelled():
                return  # the caller went away: do not act for it (a dialler that hung up, say)
            try:
                result = command()
            except Exception as error:  # reported to the caller, never kills the owner
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)

        self._inbox.put_nowait(run)
        return await future

    async def add_neighbor(self, neighbor: NeighborConfig) -> None:
        """Configure and enable a neighbour; it takes effect at once.

        One given by DNS name is resolved first: it gets a session per address the name resolves to.
        """
        if neighbor.dns_name is None:
            await self.call(lambda: self._add_neighbor(neighbor))
            return
        addresses = await self._lookup(neighbor)
        await self.call(lambda: self._add_group(neighbor, addresses))

    async def remove_neighbor(self, address: str) -> None:
        """Close the session with Cease/Peer De-configured (RFC 4486) and forget the neighbour.

        For a neighbour given by name (`address` is its `name:port`), every session it resolved to.
        """
        await self.call(lambda: self._delete(address, cease(CeaseSubcode.PEER_DECONFIGURED)))

    async def update_neighbor(self, neighbor: NeighborConfig) -> bool:
        """Change a neighbour's configuration; returns whether its session (or one of a name's) restarted."""
        return await self.call(lambda: self._update(neighbor))

    async def enable_neighbor(self, address: str) -> None:
        await self.call(lambda: self._enable(address))

    async def disable_neighbor(self, address: str, communication: str = "") -> None:
        """End the session with Cease/Administrative Shutdown (RFC 4486, RFC 8203) and keep it down."""
        await self.call(lambda: self._disable(address, communication))

    async def reset_neighbor(
        self, address: str, soft: SoftReset | None = None, communication: str = ""
    ) -> None:
        """Hard reset (Cease/Administrative Reset, then a new session) or soft reset in, out or both."""
        await self.call(lambda: self._reset(address, soft, communication))

    async def sample_metrics(self) -> None:
        """Bring the gauges that mirror owner state up to date (called per Prometheus scrape)."""

        def sample() -> None:
            counts = self.rib.counts()
            tables = {
                "adj_rib_in": counts.adj_rib_in,
                "loc_rib": counts.loc_rib,
                "adj_rib_out": counts.adj_rib_out,
                "suppressed": self.rib.suppressed_count(),
                "stale": self.rib.stale_count(),
            }
            changes = {reason.value: n for reason, n in self.rib.best_path_changes.items()}
            self.metrics.sample_rib(tables, counts.attribute_sets, changes)

        await self.call(sample)
        self.metrics.sample_backends(self.backends())

    def uptime(self) -> float:
        return self._now() - self.started_at

    async def peers(self) -> list[PeerStatus]:
        return await self.call(lambda: [self._status(n) for n in self._neighbors.values()])

    async def subscribe(
        self, *, peers: bool = True, routes: bool = True, limit: int = DEFAULT_WATCH_LIMIT
    ) -> Subscription:
        """A snapshot of neighbour states and best paths, and from then on every change; see events.py."""
        subscription = Subscription(peers=peers, routes=routes, limit=limit)
        return await self.call(lambda: self._subscribe(subscription))

    def unsubscribe(self, subscription: Subscription) -> None:
        if self._owner is not None:
            self._post(lambda: self._unsubscribe(subscription))

    async def routes(
        self, table: RouteTable, peer: str | None = None, pattern: str | None = None, *, explain: bool = False
    ) -> list[RouteEntry]:
        """A table's routes sorted by name; `peer` is required for the per-neighbour tables.

        The Adj-RIB-In lists the routes import policy rejected too (`filtered`). With `explain`, each
        route carries its policy verdict. The owner only copies the table; filtering and sorting
        happen outside it.
        """
        if table is not RouteTable.LOC_RIB and not peer:
            raise ValueError(f"the {table.value} is kept per neighbour: give a peer")
        entries: list[RouteEntry]
        if table is RouteTable.LOC_RIB:
            best = await self.call(
                lambda: self.rib.matching(pattern) if pattern else list(self.rib.loc_rib())
            )
            entries = [best_entry(name, path) for name, path in best if not peer or path.source.key == peer]
        elif table is RouteTable.ADJ_RIB_IN:
            assert peer is not None
            received = await self.call(lambda: self._adj_rib_in(peer))
            stale = await self.call(lambda: self.rib.stale_names(peer))
            entries = [
                RouteEntry(
                    name,
                    attrs,
                    peer,
                    chosen,
                    filtered=why == "filtered",
                    suppressed=why == "suppressed",
                    stale=name in stale,
                )
                for name, attrs, chosen, why in received
            ]
        else:
            assert peer is not None
            sent = await self.call(lambda: self._adj_rib_out(peer))
            entries = [RouteEntry(name, attrs, peer, True) for name, attrs in sent]
        if pattern and table is not RouteTable.LOC_RIB:
            entries = [entry for entry in entries if glob_matches(pattern, entry.name)]
        entries.sort(key=lambda entry: entry.name)
        if explain:
            export = table is RouteTable.ADJ_RIB_OUT
            verdicts = await self.call(
                lambda: [self._verdict(e.peer, e.name, export=export) for e in entries]
            )
            entries = [dataclasses.replace(e, verdict=v) for e, v in zip(entries, verdicts, strict=True)]
        return entries

    async def reload(self, config: Config) -> Reloaded:
        """Apply a changed configuration file: neighbours and policy at once, without a restart.

        Neighbours that appeared are added and those gone are removed (Cease/Peer De-configured);
        changed ones are updated, their session reset only if it negotiated what changed (for one
        given by name, each of its sessions). Dynamic ranges apply to the peers accepted afterwards.
        The policy is then replaced as by `set_policy`. Other sections need a restart: they are
        reported.
        """
        old = {n.address: n for n in self.config.neighbors}
        new = {n.address: n for n in config.neighbors}
        report = Reloaded(
            added=sorted(new.keys() - old.keys()),
            removed=sorted(old.keys() - new.keys()),
            restart_needed=[
                key for key in _RESTART_SECTIONS if getattr(config, key) != getattr(self.config, key)
            ],
        )
        for address in report.removed:
            with contextlib.suppress(UnknownPeer):  # removed through the admin API already
                await self.remove_neighbor(address)
        for address, neighbor in new.items():
            if address in old and neighbor != old[address]:
                report.reset += [address] if await self._reload_neighbor(neighbor) else []
        for address in report.added:
            with contextlib.suppress(PeerExists):  # added through the admin API already
                await self.add_neighbor(new[address])
        # Dynamic ranges apply to the peers accepted from now on; those up keep their settings.
        self.config = self.config.model_copy(
            update={
                "neighbors": config.neighbors,
                "dynamic_neighbors": config.dynamic_neighbors,
                "policy": config.policy,
            }
        )
        report.reevaluated = await self.set_policy(config.policy)
        return report

    async def _reload_neighbor(self, neighbor: NeighborConfig) -> bool:
        try:
            return await self.update_neighbor(neighbor)
        except UnknownPeer:  # deleted through the admin API meanwhile: the file brings it back
            await self.add_neighbor(neighbor)
            return False

    async def set_policy(self, policy: PolicyConfig) -> int:
        """Replace the routing policy; returns how many received routes were evaluated again.

        Per-neighbour assignments stay as configured; raises ValueError if one names a policy the
        new section does not define.
        """
        return await self.call(lambda: self._set_policy(policy))

    def watch(self) -> asyncio.Queue[PeerStateEvent]:
        """A queue that receives every neighbour state change from now on."""
        queue: asyncio.Queue[PeerStateEvent] = asyncio.Queue()
        self._watchers.append(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[PeerStateEvent]) -> None:
        with contextlib.suppress(ValueError):
            self._watchers.remove(queue)

    async def wait_for_state(self, address: str, state: State, timeout: float) -> None:
        """Wait until neighbour `address` is in `state`; raises TimeoutError."""
        queue = self.watch()
        try:
            async with asyncio.timeout(timeout):
                while (await self.call(lambda: self._neighbors[address].peer.state)) is not state:
                    await queue.get()
        finally:
            self.unwatch(queue)

    async def announce_agents(
        self,
        names: list[str],
        agent: AgentAttributes,
        *,
        med: int | None = None,
        communities: tuple[int, ...] = (),
    ) -> None:
        """Originate routes for agents hosted here; raises ValueError for a bad name or attribute.

        Large batches go to the owner in slices, so that sessions keep being served meanwhile.
        """
        for start in range(0, len(names), ORIGINATION_SLICE):
            chunk = names[start : start + ORIGINATION_SLICE]
            await self.call(functools.partial(self._originate, chunk, agent, med, communities))

    async def withdraw_agents(self, names: list[str]) -> list[str]:
        """Withdraw routes originated here; returns the names that were not (nothing to withdraw)."""
        unknown: list[str] = []
        for start in range(0, len(names), ORIGINATION_SLICE):
            chunk = names[start : start + ORIGINATION_SLICE]
            unknown += await self.call(functools.partial(self._withdraw_local, chunk))
        return unknown

    async def host(
        self,
        backend: Backend,
        namespace: str,
        *,
        rediscover_every: float | None = 30.0,
        health: HealthSettings | None = None,
    ) -> list[str]:
        """Announce every agent `backend` has, as `namespace.<agent id>`, and serve calls to them here.

        The backend is asked again every `rediscover_every` seconds: new agents are announced and
        vanished ones withdrawn. Returns the names announced now.
        """
        hosting = Hosting(
            backend,
            namespace,
            self.forwarder.hosted,
            self.announce_agents,
            self.withdraw_agents,
            self._log,
            health=health,
        )
        await hosting.sync()
        self._hostings.append(hosting)
        # Always run: without rediscovery it still probes the backend and acts on ejections.
        self._rediscovery.append(asyncio.create_task(hosting.run(rediscover_every)))
        return list(hosting.announced)

    def backends(self) -> list[dict[str, Any]]:
        """Each hosted backend: its namespace, protocol, agents and the error of its last discovery."""
        return [
            {
                "name": hosting.backend.name,
                "namespace": hosting.namespace,
                "protocol": hosting.backend.protocol.name.lower(),
                "agents": sorted(hosting.announced),
                "last_error": hosting.last_error,
                "health": hosting.health.to_dict(),
            }
            for hosting in self._hostings
        ]

    async def call_agent(
        self,
        name: str,
        request: AgentRequest,
        *,
        timeout: float | None = None,
        hop_limit: int = DEFAULT_HOP_LIMIT,
    ) -> Served:
        """Call an agent anywhere in the mesh; raises CallFailure with the code and the node that decided."""
        return await self.forwarder.call(Routed(name, request, hop_limit, ()), timeout)

    def stream_agent(
        self,
        name: str,
        request: AgentRequest,
        *,
        timeout: float | None = None,
        hop_limit: int = DEFAULT_HOP_LIMIT,
    ) -> AsyncIterator[str | Served]:
        """Like `call_agent`, yielding text chunks and then the final `Served`."""
        return self.forwarder.stream(Routed(name, request, hop_limit, ()), timeout)

    async def _lookup_paths(self, name: str) -> tuple[str, list[Path]] | None:
        """What a call needs: the entry serving `name` and its equally good paths (multipath)."""
        maximum = self.config.forwarding.maximum_paths
        return await self.call(lambda: self.rib.lookup_paths(name, maximum))

    async def resolve(self, name: str) -> tuple[str, Path] | None:
        """Longest match of `name` in the Loc-RIB: the entry serving it and its best path."""
        return await self.call(lambda: self.rib.lookup(name))

    async def with_capability(self, tag: str) -> list[tuple[str, Path]]:
        return await self.call(lambda: self.rib.with_capability(tag))

    async def matching(self, pattern: str, limit: int | None = None) -> list[tuple[str, Path]]:
        return await self.call(lambda: self.rib.matching(pattern, limit))

    async def explain(self, name: str) -> Decision | None:
        return await self.call(lambda: self.rib.explain(name))

    async def resolve_with_policy(self, name: str) -> Resolution | None:
        """`resolve` and `explain` of the entry found, with each candidate's import policy verdict.

        One owner step, so that all of it describes the same table.
        """

        def lookup() -> Resolution | None:
            found = self.rib.lookup(name)
            decision = None if found is None else self.rib.explain(found[0])
            if found is None or decision is None:
                return None
            entry = found[0]
            verdicts = tuple(self._verdict(path.source.key, entry, export=False) for path in decision.ranked)
            multipath = self.rib.lookup_paths(entry, self.config.forwarding.maximum_paths)
            equals = multipath[1] if multipath is not None else []
            hops = tuple(path.attrs.next_hop for path in equals if not path.source.local)
            return Resolution(entry, decision, verdicts, hops)

        return await self.call(lookup)

    async def loc_rib(self) -> dict[str, Path]:
        return await self.call(lambda: dict(self.rib.loc_rib()))

    async def rib_counts(self) -> RibCounts:
        return await self.call(self.rib.counts)

    # -- neighbours given by DNS name: resolution, outside the owner ------------------------

    async def _lookup(self, entry: NeighborConfig) -> list[str] | None:
        """The `ip:port` addresses `entry`'s name resolves to now; None (logged) when it does not."""
        host, port = split_host_port(entry.address)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                endpoints = await self._resolver(host, port)
            addresses = session_addresses(endpoints)
        except (OSError, TimeoutError, ValueError) as error:
            why = str(error) or type(error).__name__
            self._log.warning("neighbor_unresolved", peer=entry.address, error=why)
            return None
        if not addresses:
            self._log.warning("neighbor_unresolved", peer=entry.address, error="no addresses")
            return None
        return addresses

    async def _resolve_forever(self) -> None:
        """Resolve every neighbour given by name again each `timers.resolve_interval` seconds.

        A failed lookup keeps the sessions the name had: a DNS outage should not take the mesh
        down with it. Only an answer changes them.
        """
        while True:
            await asyncio.sleep(self.config.timers.resolve_interval)
            try:
                entries = await self.call(lambda: [group.config for group in self._groups.values()])
                found = await asyncio.gather(*map(self._lookup, entries))
                for entry, addresses in zip(entries, found, strict=True):
                    if addresses is not None:
                        await self.call(functools.partial(self._resolved, entry.address, addresses))
            except Exception:  # one bad round must not end re-resolution for good
                self._log.exception("neighbor_resolution_failed")

    def _initial_peers(self, resolved: dict[str, list[str] | None]) -> set[str]:
        """The neighbours readiness waits for: those configured by address, and those names resolved to."""
        peers = {n.address for n in self.config.neighbors if n.dns_name is None}
        peers.update(address for addresses in resolved.values() for address in addresses or ())
        return peers - {self.advertise_address}

    # -- the owner task --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._execute(await self._inbox.get())
            while not self._inbox.empty():
                self._execute(self._inbox.get_nowait())
            self._execute(self._poll_timers)
            self._execute(self._publish_route_changes)
            self._execute(self._advertise)
            self._execute(self._arm_timer)

    def _execute(self, command: Callable[[], None]) -> None:
        # A bug in one command must not take the owner, and with it the whole node, down silently.
        try:
            command()
        except Exception:
            self._log.exception("owner_command_failed")

    def _post(self, command: Callable[[], None]) -> None:
        self._inbox.put_nowait(command)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _poll_timers(self) -> None:
        now = self._now()
        if reused := self.rib.reuse(now):
            self._log.info("damped_routes_reused", routes=reused)
        for neighbor in list(self._neighbors.values()):
            self._apply(neighbor, neighbor.peer.poll(now))

    def _arm_timer(self) -> None:
        """One loop timer for the earliest deadline of any peer or of the advertisement interval."""
        deadlines = [d for n in self._neighbors.values() if (d := n.peer.next_deadline()) is not None]
        if (rib_due := self.rib.next_deadline(self._now())) is not None:
            deadlines.append(rib_due)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            # An empty command wakes the owner, which polls the timers after every batch.
            self._timer = asyncio.get_running_loop().call_at(min(deadlines), self._post, lambda: None)

    # -- owner-side commands ---------------------------------------------------------------

    def _originate(
        self, names: list[str], agent: AgentAttributes, med: int | None, communities: tuple[int, ...]
    ) -> None:
        self.rib.originate(names, agent, med=med, communities=communities, now=self._now())

    def _withdraw_local(self, names: list[str]) -> list[str]:
        return self.rib.withdraw_local(names, self._now())

    def _settings(self, neighbor: NeighborConfig) -> Settings:
        timers = self.config.timers
        keepalive = self.config.keepalive_time_for(neighbor)
        return Settings(
            local_asn=self.asn,
            local_id=router_id_to_int(self.router_id),
            peer_asn=neighbor.asn,
            hold_time=self.config.hold_time_for(neighbor),
            keepalive_time=keepalive if timers.keepalive_time is not None else None,
            connect_retry_time=timers.connect_retry_time,
            connect_retry_initial=timers.connect_retry_initial,
            passive=neighbor.passive,
            # ROUTE-REFRESH is answered by re-sending the table (RFC 2918 §4); soft reset in uses it.
            capabilities=Capabilities(
                route_refresh=True,
                graceful_restart=self._graceful_restart(),
                # RFC 7911 §4: every node takes several paths per name (multipath uses them); it
                # sends several only where configured, e.g. a reflector to its multipath clients.
                multiple_paths=MultiplePaths(receive=True, send=neighbor.add_paths > 1),
            ),
        )

    def _neighbor(self, address: str) -> _Neighbor:
        neighbor = self._neighbors.get(address)
        if neighbor is None:
            group = self._groups.get(address)
            if group is not None:
                sessions = ", ".join(sorted(group.members)) or "none yet"
                raise UnknownPeer(
                    f"{address} is a neighbour given by name; name one of its sessions: {sessions}"
                )
            raise UnknownPeer(f"no neighbour {address}")
        return neighbor

    def _add_neighbor(self, config: NeighborConfig, *, enable: bool = True, group: str | None = None) -> None:
        if config.address in self._neighbors or config.address in self._groups:
            raise PeerExists(f"neighbour {config.address} is already configured")
        if config.address == self.advertise_address:
            raise ValueError(f"neighbour {config.address} is this node's own address")
        neighbor = _Neighbor(config, Peer(self._settings(config), self._rng), group=group)
        self._register(neighbor)
        if enable:
            self._apply(neighbor, neighbor.peer.start(self._now()))

    def _register(self, neighbor: _Neighbor) -> None:
        config = neighbor.config
        self._neighbors[config.address] = neighbor
        self._set_chains(config)
        self.rib.add_peer(config.address, config.asn, router_id=0, rr_client=config.route_reflector_client)
        if (group := self._groups.get(neighbor.group or "")) is not None:
            group.members.add(config.address)
        neighbor.state_since = self._now()
        self.metrics.state(config.address, neighbor.peer.state)
        origin = {"resolved_from": neighbor.group} if neighbor.group else {}
        origin |= {"dynamic": neighbor.dynamic} if neighbor.dynamic else {}
        self._log.info(
            "peer_added", peer=config.address, peer_asn=config.asn, passive=config.passive, **origin
        )

    def _remove_neighbor(self, address: str, notification: Notification) -> None:
        neighbor = self._neighbor(address)
        self._stop_peer(neighbor, notification)
        del self._neighbors[address]
        self._forget(neighbor, "peer_removed")

    def _forget(self, neighbor: _Neighbor, event: str) -> None:
        """Drop what the node keeps for a neighbour already taken out of `_neighbors`."""
        address = neighbor.config.address
        self._cancel_restart(neighbor)
        if neighbor.stale_timer is not None:
            neighbor.stale_timer.cancel()
        self.rib.remove_peer(address)
        self.rib.policy = self.rib.policy.with_neighbor(address, None, None)
        if (group := self._groups.get(neighbor.group or "")) is not None:
            group.members.discard(address)
        self._initial_done(address, "received", "sent")
        self.metrics.forget_peer(address)
        self._log.info(event, peer=address)

    def _set_chains(self, config: NeighborConfig) -> None:
        """Give a neighbour its own import and export chains, if it has any, before it has routes.

        The routes held need no new evaluation (`Rib.set_policy`): the neighbour has none yet. An
        assignment naming a policy the current section lacks is left to the `set_policy` a reload
        makes right after adding the neighbours it brings (it may bring the policy too).
        """
        address, current = config.address, self.rib.policy
        chains: tuple[PolicyChain | None, PolicyChain | None] = (None, None)
        if config.import_policy is not None or config.export_policy is not None:
            with contextlib.suppress(ValueError):
                own = build_routing_policy(
                    self.policy, {address: (config.import_policy, config.export_policy)}
                )
                chains = (own.import_chain(address), own.export_chain(address))
        if chains != (None, None) or address in current.neighbor_import or address in current.neighbor_export:
            self.rib.policy = current.with_neighbor(address, *chains)

    def _update_neighbor(self, config: NeighborConfig) -> bool:
        neighbor = self._neighbor(config.address)
        if _session_settings(config) == _session_settings(neighbor.config):
            # Nothing the session negotiated changed: no reason to disturb it. A changed policy
            # assignment takes effect with the next `set_policy`, which re-evaluates the routes.
            neighbor.config = config
            return False
        enabled = neighbor.peer.enabled
        self._remove_neighbor(config.address, cease(CeaseSubcode.OTHER_CONFIGURATION_CHANGE))
        self._add_neighbor(config, enable=enabled, group=neighbor.group)
        return True

    # Neighbours given by DNS name (NeighborGroup) and dynamic neighbours: see speaker/neighbors.py.
    # Configuration commands (add, delete, update) take the entry's `name:port` and act on all its
    # sessions; session commands (enable, disable, reset, tables) take one session's `ip:port`.

    def _add_group(self, config: NeighborConfig, addresses: list[str] | None) -> None:
        if config.address in self._groups or config.address in self._neighbors:
            raise PeerExists(f"neighbour {config.address} is already configured")
        self._groups[config.address] = NeighborGroup(config)
        self._log.info("peer_group_added", peer=config.address, peer_asn=config.asn)
        if addresses is not None:
            self._resolved(config.address, addresses)

    def _resolved(self, name: str, addresses: list[str]) -> None:
        """Make a name's sessions those of the addresses it resolves to now."""
        group = self._groups.get(name)
        if group is None:
            return  # deleted while it was being resolved
        # A StatefulSet pod resolving its own headless Service finds itself among its peers.
        wanted = set(addresses) - {self.advertise_address}
        for gone in sorted(group.members - wanted):
            self._log.info("resolved_address_gone", peer=gone, name=name)
            self._remove_neighbor(gone, cease(CeaseSubcode.PEER_DECONFIGURED))
        for new in sorted(wanted - group.members):
            if new in self._neighbors:
                # Configured by address too, or resolved from another name first: that one keeps it.
                self._log.debug("resolved_address_taken", peer=new, name=name)
                continue
            self._add_neighbor(derived_neighbor(group.config, new), group=name)

    def _delete(self, address: str, notification: Notification) -> None:
        group = self._groups.pop(address, None)
        if group is not None:
            for member in sorted(group.members):
                self._remove_neighbor(member, notification)
            self._log.info("peer_group_removed", peer=address)
            return
        neighbor = self._neighbor(address)
        if neighbor.group is not None:
            raise PreconditionFailed(
                f"{address} is an address {neighbor.group} resolves to: delete {neighbor.group} instead"
            )
        self._remove_neighbor(address, notification)

    def _update(self, config: NeighborConfig) -> bool:
        group = self._groups.get(config.address)
        if group is not None:
            group.config = config
            resets = [self._update_neighbor(derived_neighbor(config, m)) for m in sorted(group.members)]
            return any(resets)
        neighbor = self._neighbor(config.address)
        if neighbor.group is not None:
            raise PreconditionFailed(
                f"{config.address} is an address {neighbor.group} resolves to:"
                f" update {neighbor.group} instead"
            )
        if neighbor.dynamic is not None:
            raise PreconditionFailed(
                f"{config.address} is a dynamic neighbour (from {neighbor.dynamic}):"
                " its settings come from dynamic_neighbors"
            )
        return self._update_neighbor(config)

    def _enable(self, address: str) -> None:
        neighbor = self._neighbor(address)
        self._cancel_restart(neighbor)
        if not neighbor.peer.enabled:
            self._log.info("peer_enabled", peer=address)
            self._apply(neighbor, neighbor.peer.start(self._now()))

    def _disable(self, address: str, communication: str) -> None:
        neighbor = self._neighbor(address)
        self._cancel_restart(neighbor)
        if neighbor.peer.enabled:
            self._log.info("peer_disabled", peer=address, communication=communication)
            self._stop_peer(neighbor, cease(CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, communication))

    def _reset(self, address: str, soft: SoftReset | None, communication: str) -> None:
        neighbor = self._neighbor(address)
        if not neighbor.peer.enabled:
            raise PreconditionFailed(f"neighbour {address} is disabled: enable it instead")
        if soft is None:
            self._log.info("peer_reset", peer=address, communication=communication)
            self._stop_peer(neighbor, cease(CeaseSubcode.ADMINISTRATIVE_RESET, communication))
            self._apply(neighbor, neighbor.peer.start(self._now()))
            return
        negotiated = neighbor.peer.primary.negotiated
        if neighbor.peer.state is not State.ESTABLISHED or negotiated is None:
            raise PreconditionFailed(
                f"no session with {address} to soft-reset (it is {neighbor.peer.state.value})"
            )
        if soft in (SoftReset.IN, SoftReset.BOTH) and not negotiated.route_refresh:
            raise PreconditionFailed(
                f"{address} did not advertise ROUTE-REFRESH (RFC 2918): soft reset in needs it"
            )
        self._log.info("peer_soft_reset", peer=address, direction=soft.value)
        if soft in (SoftReset.IN, SoftReset.BOTH):
            self._apply(neighbor, neighbor.peer.send(RouteRefresh(), self._now()))
        if soft in (SoftReset.OUT, SoftReset.BOTH):
            self.rib.resend(address)

    def _subscribe(self, subscription: Subscription) -> Subscription:
        self._publish_route_changes()  # changes made before this subscription are not its events
        if subscription.peers:
            subscription.peer_states = [
                self._current_state(address, n) for address, n in self._neighbors.items()
            ]
        if subscription.routes:
            subscription.best_paths = list(self.rib.loc_rib())
        self._subscriptions.append(subscription)
        self.rib.record_changes = any(s.routes for s in self._subscriptions)
        return subscription

    def _current_state(self, address: str, neighbor: _Neighbor) -> PeerStateEvent:
        # The last NOTIFICATION explains a session that is down; once it is up again it is history
        # (often just the Cease of a stream closed by collision resolution).
        up = neighbor.peer.state is State.ESTABLISHED
        notification = None if up else neighbor.last_notification
        return PeerStateEvent(address, None, neighbor.peer.state, neighbor.last_reason, notification)

    def _unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)
        self.rib.record_changes = any(s.routes for s in self._subscriptions)
        if not self.rib.record_changes:
            self.rib.take_changes()  # recorded for the watcher that just left: nobody will read them

    def _publish_route_changes(self) -> None:
        if not self.rib.record_changes:
            return
        watchers = [s for s in self._subscriptions if s.routes]
        for change in self.rib.take_changes():
            best = None if change.best is None else best_entry(change.name, change.best)
            event = RouteEvent(change.name, best, change.reason)
            for watcher in watchers:
                watcher.publish(event)

    def _adj_rib_out(self, peer: str) -> list[tuple[str, PathAttributes]]:
        self._neighbor(peer)
        return list(self.rib.adj_rib_out(peer))

    def _adj_rib_in(self, peer: str) -> list[tuple[str, PathAttributes, bool, str]]:
        """The neighbour's Adj-RIB-In: (name, attributes, best, "" or why it is no candidate)."""
        self._neighbor(peer)
        best = self.rib.best
        rows = [(name, path.attrs, best(name) is path, "") for name, path in self.rib.adj_rib_in(peer)]
        rows += [(name, attrs, False, "filtered") for name, attrs in self.rib.filtered(peer)]
        return rows + [(name, attrs, False, "suppressed") for name, attrs in self.rib.suppressed(peer)]

    def _verdict(self, peer: str, name: str, *, export: bool) -> Verdict | None:
        if not peer:
            return None  # originated here: no import policy applies
        return self.rib.explain_export(peer, name) if export else self.rib.explain_import(peer, name)

    def _routing_policy(self, policy: PolicyConfig, neighbors: list[NeighborConfig]) -> RoutingPolicy:
        assignments = {n.address: (n.import_policy, n.export_policy) for n in neighbors}
        return build_routing_policy(policy, assignments)

    def _set_policy(self, policy: PolicyConfig) -> int:
        self._check_templates(policy)
        built = self._routing_policy(policy, [n.config for n in self._neighbors.values()])
        self.policy = policy
        counts = self.rib.set_policy(built)
        self._log.info("policy_changed", reevaluated=counts)
        return counts

    def _check_templates(self, policy: PolicyConfig) -> None:
        """Raise ValueError if a name's entry or a dynamic range assigns a policy `policy` lacks.

        Their sessions are made later, each with the policy current then, so a policy they need must
        not go away (the configuration's own validation checks the same for the file).
        """
        templates: list[tuple[str, PolicyAssignment | None]] = []
        for group in self._groups.values():
            templates += [(f"neighbour {group.config.address}", group.config.import_policy)]
            templates += [(f"neighbour {group.config.address}", group.config.export_policy)]
        for index, entry in enumerate(self.config.dynamic_neighbors):
            templates += [
                (f"dynamic_neighbors[{index}]", a) for a in (entry.import_policy, entry.export_policy)
            ]
        for where, assignment in templates:
            problems = [] if assignment is None else policy.assignment_problems(assignment)
            if problems:
                raise ValueError(f"{where}: {problems[0][1]}")

    def _become_ready(self, why: str) -> None:
        if self.ready:
            return
        self.ready = True
        if self._readiness_timer is not None and not self.rib.hold_end_of_rib:
            self._readiness_timer.cancel()  # (still needed to end an End-of-RIB deferral)
        self._log.info("node_ready", why=why)
        if self._server is not None:
            self._spawn(self._server.set_ready())

    def _release_end_of_rib(self, why: str) -> None:
        if self.rib.hold_end_of_rib:
            self.rib.hold_end_of_rib = False
            self._log.info("end_of_rib_released", why=why)

    def _readiness_timed_out(self) -> None:
        self._release_end_of_rib("readiness timeout")
        if not self.ready:
            self._log.warning("readiness_timeout", waiting_for=sorted(self._initial_exchange))
            self._become_ready("readiness timeout")

    def _initial_done(self, address: str, *steps: str) -> None:
        """Note a step of a configured neighbour's initial exchange: End-of-RIB received or sent."""
        waiting = self._initial_exchange.get(address)
        if waiting is None:
            return
        waiting.difference_update(steps)
        received_all = not any("received" in left for left in self._initial_exchange.values())
        if received_all and not self.config.dynamic_neighbors:  # else the deferral timer ends it
            self._release_end_of_rib("End-of-RIB received from every configured neighbour")
        if not waiting:
            del self._initial_exchange[address]
            if not self._initial_exchange:
                self._become_ready("initial table exchange done")

    def _stop_all(self, notification: Notification) -> None:
        self._stopping = True
        for neighbor in self._neighbors.values():
            self._cancel_restart(neighbor)
            if neighbor.stale_timer is not None:
                neighbor.stale_timer.cancel()
            self._stop_peer(neighbor, notification)

    def _graceful_restart(self) -> GracefulRestart | None:
        """The capability this node advertises (RFC 4724 §3), None when graceful restart is off.

        A node that started less than its restart time ago says it is restarting (R bit): peers that
        kept its routes then wait for its End-of-RIB. Its forwarding state is its hosted agents and
        its configuration, which survive a restart, hence the F bit.
        """
        settings = self.config.graceful_restart
        if not settings.enabled:
            return None
        restarting = self._now() - self.started_at < settings.restart_time
        return GracefulRestart(settings.restart_time, restarting=restarting, forwarding_state_preserved=True)

    def _arm_stale_timer(self, neighbor: _Neighbor, delay: float) -> None:
        if neighbor.stale_timer is not None:
            neighbor.stale_timer.cancel()
        sweep = functools.partial(self._post, lambda: self._sweep_stale(neighbor, "timer"))
        neighbor.stale_timer = asyncio.get_running_loop().call_later(delay, sweep)

    def _sweep_stale(self, neighbor: _Neighbor, why: str) -> None:
        if neighbor.stale_timer is not None:
            neighbor.stale_timer.cancel()
            neighbor.stale_timer = None
        address = neighbor.config.address
        if self._neighbors.get(address) is not neighbor:
            return
        swept = self.rib.sweep_stale(address)
        self._log.info("stale_routes_swept", peer=address, routes=swept, why=why)

    def _cancel_restart(self, neighbor: _Neighbor) -> None:
        """An operator's decision (or the node stopping) replaces a pending max-prefix restart."""
        if neighbor.restart is not None:
            neighbor.restart.cancel()
            neighbor.restart = None

    def _stop_peer(self, neighbor: _Neighbor, notification: Notification) -> None:
        self._apply(neighbor, neighbor.peer.stop(self._now(), notification))

    def _status(self, n: _Neighbor) -> PeerStatus:
        negotiated = n.peer.primary.negotiated
        sending_paths, receiving_paths = self.rib.add_paths(n.config.address)
        return PeerStatus(
            address=n.config.address,
            asn=n.config.asn,
            description=n.config.description,
            internal=self.config.is_internal(n.config),
            passive=n.config.passive,
            configured_hold_time=n.config.hold_time,
            route_reflector_client=n.config.route_reflector_client,
            add_paths=n.config.add_paths,
            tls_name=n.config.tls_name,
            enabled=n.peer.enabled,
            state=n.peer.state,
            peer_id=negotiated.peer_id if negotiated else None,
            hold_time=negotiated.hold_time if negotiated else None,
            last_reason=n.last_reason,
            last_notification=n.last_notification,
            last_down_reason=n.last_down_reason,
            last_down_notification=n.last_down_notification,
            connections=len(n.connections),
            routes_received=self.rib.received_count(n.config.address),
            routes_advertised=self.rib.advertised_count(n.config.address),
            seconds_in_state=self._now() - n.state_since,
            routes_stale=self.rib.stale_count(n.config.address),
            routes_suppressed=self.rib.suppressed_count(n.config.address),
            peer_restart_time=n.peer_restart_time,
            sending_paths=sending_paths,
            receiving_paths=receiving_paths,
        )

    # -- streams ---------------------------------------------------------------------------

    async def _accept_stream(self, caller: Caller, stream: ServerStream) -> Connection:
        """Offer a peer's Session call to its neighbour; raises PermissionError to refuse it."""
        return await self.call(lambda: self._offer(caller, stream))

    def _offer(self, caller: Caller, stream: ServerStream) -> Connection:
        if self._stopping:
            raise self._refused(caller, "the node is shutting down")
        claimed_address = caller.claimed_address
        neighbor = self._neighbors.get(claimed_address or "")
        if neighbor is None:
            neighbor = self._dynamic_neighbor(caller)  # or PermissionError
        elif neighbor.dynamic is not None:
            self._check_dynamic_caller(neighbor.dynamic, caller)  # every stream, not only the first
        self._check_identity(neighbor, caller)
        conn = neighbor.peer.new_connection_id()
        connection = Connection(conn, stream, self._receiver(neighbor), self._refill)
        neighbor.connections[conn] = connection
        if self._neighbors.get(neighbor.config.address) is not neighbor:
            self._admit(neighbor)  # a dynamic neighbour, once every check passed
        self._log.debug("stream_offered", peer=neighbor.config.address, conn=conn)
        self._apply(neighbor, neighbor.peer.handle(Event(EventKind.STREAM_CONFIRMED, conn), self._now()))
        return connection

    def _check_identity(self, neighbor: _Neighbor, caller: Caller) -> None:
        """With mutual TLS, refuse a caller whose certificate does not name the neighbour it claims to be.

        The claimed address is only call metadata; the certificate the handshake verified is what
        proves it. Without client certificates (plaintext, or `require_client_cert: false`) there is
        nothing to check, and the OPEN's ASN is the only test (RFC 4271 §6.2).
        """
        if self._tls is None or not self._tls.verifies_clients:
            return
        expected = tls_name_of(neighbor.config.address, neighbor.config.tls_name)
        why = identity_mismatch(expected, caller.identities)
        if why is not None:
            self._log.warning(
                "connection_refused", peer=neighbor.config.address, source=caller.source_host, why=why
            )
            raise PermissionError(why)

    def _next_hop_tls_name(self, address: str) -> str | None:
        """The identity a next hop's certificate must carry: its neighbour's `tls_name`, else its host."""
        neighbor = self._neighbors.get(address)
        tls_name = None if neighbor is None else neighbor.config.tls_name
        # A wildcard describes callers; a server is checked against one name, here the host dialled.
        return None if tls_name is None or tls_name.startswith("*.") else tls_name

    def _dynamic_neighbor(self, caller: Caller) -> _Neighbor:
        """A new passive neighbour for a caller in a `dynamic_neighbors` range; PermissionError if none.

        The range is chosen by the IP address the connection comes from, which the caller cannot
        choose as it chooses its claimed address; the first range holding it decides.
        """
        ranges = self.config.dynamic_neighbors
        source = caller.source_host
        if not ranges:
            raise self._refused(caller, "not a configured neighbour")
        if source is None:
            raise self._refused(caller, "not a configured neighbour and its source address is unknown")
        index = matching_range(ranges, source)
        if index is None:
            raise self._refused(
                caller, f"not a configured neighbour and {source} is in no dynamic_neighbors prefix"
            )
        entry = ranges[index]
        self._check_dynamic_caller(entry.prefix, caller)
        if sum(n.dynamic == entry.prefix for n in self._neighbors.values()) >= entry.limit:
            raise self._refused(caller, f"dynamic_neighbors[{index}] is at its limit of {entry.limit}")
        claimed = caller.claimed_address or ""
        try:
            config = dynamic_neighbor(entry, claimed)
        except ValueError:
            config = None
        # The key must be what the peer claims on every stream, so only a canonical address will do.
        taken = claimed == self.advertise_address or claimed in self._groups
        if config is None or config.address != claimed or taken:
            raise self._refused(caller, f"the claimed address {claimed!r} cannot be a neighbour's address")
        return _Neighbor(config, Peer(self._settings(config), self._rng), dynamic=entry.prefix)

    def _check_dynamic_caller(self, prefix: str, caller: Caller) -> None:
        """Refuse a caller of a dynamic range unless it comes from the range and is what it claims to be.

        A configured neighbour is trusted to be at its configured address; a dynamic one names its
        own, so the claim is tied to the connection: an IP address must be the one the connection
        comes from, and a DNS name must be in the certificate mutual TLS verified (without it, a name
        is taken on trust, as everything is in plaintext).
        """
        source = caller.source_host
        if source is None or not in_prefix(source, prefix):
            raise self._refused(caller, f"its source address {source} is not in dynamic range {prefix}")
        try:
            host = split_host_port(caller.claimed_address or "")[0]
        except ValueError:
            raise self._refused(
                caller, f"the claimed address {caller.claimed_address!r} is no host:port"
            ) from None
        if is_ip_address(host):
            if not same_ip(host, source):
                raise self._refused(caller, f"it claims the address {host} but connects from {source}")
        elif self._tls is not None and self._tls.verifies_clients:
            why = identity_mismatch(host, caller.identities)
            if why is not None:
                raise self._refused(caller, f"its claimed name is not in its certificate: {why}")

    def _refused(self, caller: Caller, why: str) -> PermissionError:
        claimed = caller.claimed_address
        self._log.warning("connection_refused", peer=claimed, source=caller.source_host, why=why)
        return PermissionError(f"{claimed!r} is refused by {self.advertise_address}: {why}")

    def _admit(self, neighbor: _Neighbor) -> None:
        """Register and start a dynamic neighbour; it already holds the stream it came with."""
        self._register(neighbor)
        self._apply(neighbor, neighbor.peer.start(self._now()))

    def _retire(self, neighbor: _Neighbor) -> None:
        """Forget a dynamic neighbour whose session is over, as BGP dynamic neighbours go with it."""
        address = neighbor.config.address
        idle = neighbor.peer.state in (State.IDLE, State.ACTIVE) and not neighbor.connections
        if self._neighbors.get(address) is neighbor and idle:
            del self._neighbors[address]
            self._forget(neighbor, "dynamic_peer_removed")

    def _receiver(self, neighbor: _Neighbor) -> Callable[[int, Received], None]:
        def deliver(conn: int, received: Received) -> None:
            self._post(lambda: self._received(neighbor, conn, received))

        return deliver

    def _received(self, neighbor: _Neighbor, conn: int, received: Received) -> None:
        if self._neighbors.get(neighbor.config.address) is not neighbor:
            return  # the neighbour was removed meanwhile
        self._log.debug("received", peer=neighbor.config.address, conn=conn, message=repr(received)[:60])
        if received is None:
            neighbor.connections.pop(conn, None)
            event = Event(EventKind.STREAM_FAILED, conn)
        elif isinstance(received, codec.DecodeError):
            self._log.warning("message_error", peer=neighbor.config.address, error=str(received))
            kind = (
                EventKind.UPDATE_MESSAGE_ERROR
                if received.notification.code == ErrorCode.UPDATE_MESSAGE
                else EventKind.BGP_HEADER_ERROR
            )
            event = Event(kind, conn, notification=received.notification)
        else:
            self.metrics.received(neighbor.config.address, received)
            if isinstance(received, Notification):
                self._log_notification("notification_received", neighbor, received)
                neighbor.last_notification = received
            elif isinstance(received, Open) and received.asn != neighbor.config.asn:
                # The FSM answers with NOTIFICATION 2/2 Bad Peer AS (RFC 4271 §6.2); say why here.
                self._log.warning(
                    "connection_refused",
                    peer=neighbor.config.address,
                    conn=conn,
                    why=f"its OPEN carries AS{received.asn}, not AS{neighbor.config.asn} as configured",
                )
            event = message_event(conn, received)
        self._apply(neighbor, neighbor.peer.handle(event, self._now()))

    async def _dial(self, neighbor: _Neighbor, conn: int) -> None:
        address = neighbor.config.address
        timeout = self.config.timers.connect_retry_time
        try:
            stream = await ClientStream.dial(
                address,
                self.advertise_address,
                timeout,
                channels=channel_factory(self._tls),
                tls_name=tls_name_of(address, neighbor.config.tls_name) if self._tls is not None else None,
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._log_dial_failure(address, error)
            self._post(lambda: self._dial_done(neighbor, conn, None))
            return
        self._post(lambda: self._dial_done(neighbor, conn, stream))

    def _log_dial_failure(self, address: str, error: Exception) -> None:
        """Log why a dial failed: a warning when the neighbour or TLS refused us, as that needs an operator.

        A neighbour that is down is routine (the FSM retries) and only worth a debug line.
        """
        text = str(error) or type(error).__name__
        why = tls_failure(text) if self._tls is not None else None
        if isinstance(error, StreamRefused) and error.by_peer:
            self._log.warning("dial_refused", peer=address, error=text)
        elif why is not None:
            self._log.warning("tls_handshake_failed", peer=address, why=why, error=text)
        else:
            self._log.debug("dial_failed", peer=address, error=text)

    def _dial_done(self, neighbor: _Neighbor, conn: int, stream: ClientStream | None) -> None:
        dial = neighbor.dials.pop(conn, None)
        current = self._neighbors.get(neighbor.config.address) is neighbor
        if stream is None:
            if current and dial is not None:
                self._apply(neighbor, neighbor.peer.handle(Event(EventKind.STREAM_FAILED, conn), self._now()))
            return
        if not current or dial is None:
            self._spawn(stream.close())  # cancelled while dialling
            return
        connection = Connection(conn, stream, self._receiver(neighbor), self._refill)
        neighbor.connections[conn] = connection
        self._log.debug("dial_answered", peer=neighbor.config.address, conn=conn)
        self._spawn(self._pump(neighbor, connection))
        self._apply(neighbor, neighbor.peer.handle(Event(EventKind.STREAM_REQUEST_ACKED, conn), self._now()))

    async def _pump(self, neighbor: _Neighbor, connection: Connection) -> None:
        await connection.run()

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- effects ---------------------------------------------------------------------------

    def _apply(self, neighbor: _Neighbor, effects: list[PeerEffect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                connection = neighbor.connections.get(effect.conn)
                if connection is not None:
                    if isinstance(effect.message, Notification):
                        self._log_notification("notification_sent", neighbor, effect.message)
                    self.metrics.sent(neighbor.config.address, effect.message)
                    connection.send(effect.message)
            elif isinstance(effect, Close):
                self._close(neighbor, effect.conn)
            elif isinstance(effect, Dial):
                self._log.debug("dialling", peer=neighbor.config.address, conn=effect.conn)
                neighbor.dials[effect.conn] = self._spawn(self._dial(neighbor, effect.conn))
            elif isinstance(effect, StateChanged):
                self._state_changed(neighbor, effect)
            elif isinstance(effect, SessionUp):
                n = effect.negotiated
                neighbor.peer_restart_time = (
                    n.peer_restart_time if self.config.graceful_restart.enabled else None
                )
                self.rib.peer_up(
                    neighbor.config.address,
                    n.peer_id,
                    send_paths=neighbor.config.add_paths if n.send_multiple_paths else 0,
                    receive_paths=n.receive_multiple_paths,
                )
                if self.rib.stale_count(neighbor.config.address):
                    # Back in time: its stale routes wait for its End-of-RIB, but not for ever.
                    self._arm_stale_timer(neighbor, self.config.graceful_restart.stale_routes_time)
                self._log.info(
                    "session_established",
                    peer=neighbor.config.address,
                    peer_asn=n.peer_asn,
                    hold_time=n.hold_time,
                    keepalive_time=n.keepalive_time,
                )
            elif isinstance(effect, ConnectionRefused):
                self._log.info("connection_refused", peer=neighbor.config.address, why=effect.why)
            elif isinstance(effect, UpdateReceived):
                self._update_received(neighbor, effect.update)
            elif isinstance(effect, RouteRefreshRequested):
                self._log.info("route_refresh_received", peer=neighbor.config.address)
                self.rib.resend(neighbor.config.address)

    def _update_received(self, neighbor: _Neighbor, update: Update) -> None:
        address = neighbor.config.address
        result = self.rib.receive(address, update, self._now())
        if result.error is not None:
            self._log.warning("update_error", peer=address, notification=str(result.error))
            self._apply(neighbor, neighbor.peer.update_error(result.error, self._now()))
            return
        if result.end_of_rib:
            self._log.info("end_of_rib_received", peer=address)
            self._initial_done(address, "received")
            if self.rib.stale_count(address):
                self._sweep_stale(neighbor, "end_of_rib")
        if (dropped := result.dropped) is not None:
            self.metrics.routes_dropped.labels(dropped.reason.value).inc(len(dropped.names))
            self._log_dropped(address, dropped.reason.value, dropped.detail, dropped.names)
        if neighbor.config.max_prefixes is not None and result.announced:
            self._check_max_prefixes(neighbor, neighbor.config.max_prefixes)

    def _check_max_prefixes(self, neighbor: _Neighbor, bound: MaxPrefixesConfig) -> None:
        """Warn near the limit; past it end the session with Cease 6/1 (RFC 4486 §4), maybe to retry later.

        Routes the import policy filtered count too: they are what the neighbour sent.
        """
        address = neighbor.config.address
        received = self.rib.received_count(address) + self.rib.filtered_count(address)
        if received > bound.limit:
            self._log.warning("max_prefixes_exceeded", peer=address, received=received, limit=bound.limit)
            text = f"more than {bound.limit} routes received"
            self._stop_peer(neighbor, cease(CeaseSubcode.MAXIMUM_NUMBER_OF_PREFIXES_REACHED, text))
            if bound.restart_after is not None:
                restart = functools.partial(self._post, lambda: self._restart_after_limit(neighbor))
                neighbor.restart = asyncio.get_running_loop().call_later(bound.restart_after, restart)
        elif not neighbor.warned and received * 100 >= bound.limit * bound.warning_percent:
            neighbor.warned = True
            self._log.warning("max_prefixes_warning", peer=address, received=received, limit=bound.limit)

    def _restart_after_limit(self, neighbor: _Neighbor) -> None:
        neighbor.restart = None
        if self._neighbors.get(neighbor.config.address) is neighbor and not neighbor.peer.enabled:
            self._log.info("peer_restarted_after_max_prefixes", peer=neighbor.config.address)
            self._apply(neighbor, neighbor.peer.start(self._now()))

    def _log_dropped(self, address: str, reason: str, detail: str, names: tuple[str, ...]) -> None:
        # One line per UPDATE, never one per name: a bad table must not flood the log.
        self._log.warning(
            "routes_dropped",
            peer=address,
            reason=reason,
            detail=detail,
            count=len(names),
            names=names[:LOGGED_NAMES],
        )

    def _advertise(self) -> None:
        """Turn queued names into UPDATEs for every peer whose stream has room (DESIGN §4.4)."""
        now = self._now()
        for address, neighbor in self._neighbors.items():
            if neighbor.peer.state is not State.ESTABLISHED or not self.rib.has_pending(address, now):
                continue
            connection = neighbor.connections.get(neighbor.peer.primary.conn or 0)
            if connection is None:
                continue
            while connection.backlog < SEND_WINDOW and self.rib.has_pending(address, now):
                for update in self.rib.take_updates(address, now, NAMES_PER_STEP):
                    self._apply(neighbor, neighbor.peer.send(update, now))
                    if update.end_of_rib:
                        self._initial_done(address, "sent")
            if self.rib.has_pending(address, now):
                connection.notify_when_drained()

    def _refill(self) -> None:
        self._post(lambda: None)  # waking the owner is enough: it advertises after every batch

    def _close(self, neighbor: _Neighbor, conn: int) -> None:
        self._log.debug("connection_closing", peer=neighbor.config.address, conn=conn)
        connection = neighbor.connections.pop(conn, None)
        if connection is not None:
            connection.close()
        dial = neighbor.dials.pop(conn, None)
        if dial is not None:
            dial.cancel()

    def _state_changed(self, neighbor: _Neighbor, change: StateChanged) -> None:
        self._publish_route_changes()  # so that watchers see events in the order they happened
        neighbor.last_reason = change.reason
        neighbor.state_since = self._now()
        self.metrics.state(neighbor.config.address, change.new)
        if change.old is State.ESTABLISHED:
            neighbor.last_down_reason, neighbor.last_down_notification = change.reason, change.notification
            neighbor.warned = False
            # RFC 4271 §9: the peer's routes go with its session, unless both sides do graceful
            # restart and the session was lost rather than closed with a NOTIFICATION (RFC 4724 §4.2).
            graceful = neighbor.peer_restart_time is not None and change.notification is None
            self.rib.peer_down(neighbor.config.address, keep_stale=graceful, now=self._now())
            if graceful:
                assert neighbor.peer_restart_time is not None
                self._log.info(
                    "graceful_restart_started",
                    peer=neighbor.config.address,
                    stale=self.rib.stale_count(neighbor.config.address),
                    restart_time=neighbor.peer_restart_time,
                )
                self._arm_stale_timer(neighbor, neighbor.peer_restart_time)
        fields: dict[str, Any] = {}
        if change.notification is not None:
            fields = {"notification": str(change.notification)}
        self._log.info(
            "peer_state_changed",
            peer=neighbor.config.address,
            old=change.old.value,
            new=change.new.value,
            reason=change.reason.value,
            **fields,
        )
        if neighbor.dynamic is not None and change.new in (State.IDLE, State.ACTIVE):
            # Later, not in the middle of the effects being applied; a new stream may come first.
            self._post(lambda: self._retire(neighbor))
        event = PeerStateEvent(
            neighbor.config.address, change.old, change.new, change.reason, change.notification
        )
        for queue in self._watchers:
            queue.put_nowait(event)
        for subscription in self._subscriptions:
            if subscription.peers:
                subscription.publish(event)

    def _log_notification(self, name: str, neighbor: _Neighbor, notification: Notification) -> None:
        code, subcode = notification.names
        self._log.info(
            name,
            peer=neighbor.config.address,
            code=notification.code,
            subcode=notification.subcode,
            error=code,
            suberror=subcode,
            text=notification.shutdown_communication,
        )


def _session_settings(neighbor: NeighborConfig) -> NeighborConfig:
    """What of a neighbour's configuration its session negotiates (the rest changes in place)."""
    return neighbor.model_copy(update={"description": "", "import_policy": None, "export_policy": None})
