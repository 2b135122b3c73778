"""Prometheus metrics of one node, and the HTTP endpoint that serves them.

Each node has its own registry, so several nodes in one process (tests, `agentmesh up`) keep their
figures apart. Counters move where things happen (messages, notifications, calls); gauges that
mirror owner state (table sizes, best-path changes, backends) are sampled by the owner when
Prometheus scrapes, so the hot paths pay nothing for them.

Labels are bounded by configuration, never by traffic: peer addresses, message types, NOTIFICATION
codes, decision reasons, call results, backend names. An agent name or a route never becomes a label
(DESIGN §5): a mesh can hold millions of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import Enum as StateEnum
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentmesh.bgp.fsm import State
from agentmesh.bgp.messages import Keepalive, Message, Notification, Open, RouteRefresh, Update
from agentmesh.config import join_host_port
from agentmesh.transport.http import EmbeddedUvicorn, bind

#: Call latency buckets in seconds: from a local tool (a millisecond) to a slow model (minutes).
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

_MESSAGE_TYPES: Mapping[type[Any], str] = {
    Open: "open",
    Update: "update",
    Keepalive: "keepalive",
    Notification: "notification",
    RouteRefresh: "route_refresh",
}


_HEALTH_LEVELS = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}


def message_type(message: Message) -> str:
    return _MESSAGE_TYPES.get(type(message), "unknown")


class _SampledCounters:
    """Counters kept by the routing core (plain integers there), exported as Prometheus counters."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self.values: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in sorted(self.values.items()):
            family.add_metric([value], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class NodeMetrics:
    """The metrics of one node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.peer_up = Gauge("agentmesh_peer_up", "1 while the session is Established.", ["peer"], registry=r)
        self.peer_state = StateEnum(
            "agentmesh_peer_state",
            "The session's FSM state (RFC 4271 §8.2.2).",
            ["peer"],
            states=[state.value for state in State],
            registry=r,
        )
        self.messages_received = Counter(
            "agentmesh_peer_messages_received",
            "BGP messages received, by type.",
            ["peer", "type"],
            registry=r,
        )
        self.messages_sent = Counter(
            "agentmesh_peer_messages_sent", "BGP messages sent, by type.", ["peer", "type"], registry=r
        )
        self.notifications = Counter(
            "agentmesh_peer_notifications",
            "NOTIFICATIONs by direction, code and subcode (RFC 4271 §4.5).",
            ["peer", "direction", "code", "subcode"],
            registry=r,
        )
        self.routes = Gauge("agentmesh_rib_routes", "Routes per table.", ["table"], registry=r)
        self.attribute_sets = Gauge(
            "agentmesh_rib_attribute_sets", "Distinct interned attribute sets.", registry=r
        )
        self.routes_dropped = Counter(
            "agentmesh_rib_routes_dropped",
            "Received routes not installed, by reason.",
            ["reason"],
            registry=r,
        )
        self.best_path_changes = _SampledCounters(
            "agentmesh_best_path_changes", "Best-path changes by the reason of the choice.", "reason"
        )
        r.register(self.best_path_changes)
        self.calls = Counter(
            "agentmesh_calls",
            "Calls handled here by role (ingress: entered the mesh here; transit) and result.",
            ["role", "result"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "agentmesh_call_duration_seconds",
            "Time to answer a call as seen by this node, by role and result.",
            ["role", "result"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.backend_up = Gauge(
            "agentmesh_backend_up", "1 when the backend's last discovery succeeded.", ["backend"], registry=r
        )
        self.backend_agents = Gauge(
            "agentmesh_backend_agents", "Agents announced for the backend.", ["backend"], registry=r
        )
        self.backend_healthy = Gauge(
            "agentmesh_backend_healthy",
            "1 healthy, 0.5 degraded, 0 unhealthy (withdrawn), as probes and served calls show.",
            ["backend"],
            registry=r,
        )
        self.backend_med = Gauge(
            "agentmesh_backend_med",
            "The MED the backend's agents are announced with.",
            ["backend"],
            registry=r,
        )

    # -- events ----------------------------------------------------------------------------

    def received(self, peer: str, message: Message) -> None:
        self.messages_received.labels(peer, message_type(message)).inc()
        if isinstance(message, Notification):
            self._notification(peer, "received", message)

    def sent(self, peer: str, message: Message) -> None:
        self.messages_sent.labels(peer, message_type(message)).inc()
        if isinstance(message, Notification):
            self._notification(peer, "sent", message)

    def _notification(self, peer: str, direction: str, notification: Notification) -> None:
        code, subcode = notification.names
        self.notifications.labels(peer, direction, code, subcode).inc()

    def state(self, peer: str, state: State) -> None:
        self.peer_state.labels(peer).state(state.value)
        self.peer_up.labels(peer).set(1 if state is State.ESTABLISHED else 0)

    def forget_peer(self, peer: str) -> None:
        """A removed neighbour's series go with it, so dashboards do not show it as down forever."""
        for metric in (self.peer_up, self.peer_state):
            with contextlib.suppress(KeyError):
                metric.remove(peer)
        for labelled in (self.messages_received, self.messages_sent, self.notifications):
            for labels in [k for k in labelled._metrics if k[0] == peer]:  # no public way to list them
                labelled.remove(*labels)

    def call(self, role: str, result: str, seconds: float) -> None:
        self.calls.labels(role, result).inc()
        self.call_seconds.labels(role, result).observe(seconds)

    # -- sampled state ---------------------------------------------------------------------

    def sample_rib(self, counts: Mapping[str, int], attribute_sets: int, changes: Mapping[str, int]) -> None:
        for table, count in counts.items():
            self.routes.labels(table).set(count)
        self.attribute_sets.set(attribute_sets)
        self.best_path_changes.values = dict(changes)

    def sample_backends(self, backends: list[dict[str, Any]]) -> None:
        for gauge in (self.backend_up, self.backend_agents, self.backend_healthy, self.backend_med):
            gauge.clear()
        for backend in backends:
            name = backend["name"]
            self.backend_up.labels(name).set(0 if backend["last_error"] else 1)
            self.backend_agents.labels(name).set(len(backend["agents"]))
            health = backend.get("health")
            if health is not None:
                self.backend_healthy.labels(name).set(_HEALTH_LEVELS.get(health["state"], 0.0))
                self.backend_med.labels(name).set(health["med"] or 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """`GET /metrics` over HTTP; each scrape first asks the node to sample its state."""

    def __init__(self, metrics: NodeMetrics, sample: Callable[[], Awaitable[None]]) -> None:
        self._metrics = metrics
        self._sample = sample
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def _scrape(self, request: Request) -> Response:
        await self._sample()
        return Response(self._metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (0: the OS chooses); returns the bound port."""
        sock = bind(host, port)
        port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/metrics", self._scrape, methods=["GET"])])
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
        self._server = EmbeddedUvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="agentmesh-metrics")
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    sock.close()
                    raise OSError(f"the metrics server on {host}:{port} did not start")
                await asyncio.sleep(0.01)
        self.url = f"http://{join_host_port(host, port)}/metrics"
        return int(port)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = None
