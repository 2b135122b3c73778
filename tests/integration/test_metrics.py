"""`/metrics` scraped over HTTP after real sessions and calls: the counters move, labels stay bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.agents.base import AgentRequest, CallFailure
from agentmesh.agents.demo import demo_backend
from agentmesh.obs.metrics import MetricsServer
from agentmesh.speaker.node import Node
from tests.support.nodes import established, eventually, neighbor_of, node_config, running

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Scraper = tuple[Node, Node, MetricsServer, MetricsServer]


@pytest.fixture
async def scraped() -> AsyncIterator[Scraper]:
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        servers = [MetricsServer(node.metrics, node.sample_metrics) for node in (a, b)]
        for server in servers:
            await server.start("127.0.0.1", 0)
        try:
            yield a, b, servers[0], servers[1]
        finally:
            for server in servers:
                await server.stop()


async def scrape(server: MetricsServer) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_counters_move_after_a_session_and_a_call(scraped: Scraper) -> None:
    a, b, metrics_a, metrics_b = scraped
    before = await scrape(metrics_a)
    assert value(before, "agentmesh_calls_total", role="ingress", result="ok") == 0
    await a.add_neighbor(neighbor_of(b))
    await b.add_neighbor(neighbor_of(a))
    await established(a, b)
    await b.host(demo_backend(), "demo")
    await eventually(lambda: _has(a, "demo.capitals"), 10)
    served = await a.call_agent("demo.capitals", AgentRequest(arguments={"country": "Japan"}))
    assert served.served_by == "b"
    with pytest.raises(CallFailure):
        await a.call_agent("nobody.here", AgentRequest(arguments={}))

    after = await scrape(metrics_a)
    peer = b.advertise_address
    assert value(after, "agentmesh_peer_up", peer=peer) == 1
    assert value(after, "agentmesh_peer_state", peer=peer, agentmesh_peer_state="Established") == 1
    assert value(after, "agentmesh_peer_state", peer=peer, agentmesh_peer_state="Idle") == 0
    assert value(after, "agentmesh_peer_messages_received_total", peer=peer, type="open") >= 1
    assert value(after, "agentmesh_peer_messages_received_total", peer=peer, type="update") >= 2
    assert value(after, "agentmesh_peer_messages_sent_total", peer=peer, type="keepalive") >= 1
    assert value(after, "agentmesh_rib_routes", table="loc_rib") == 3
    assert value(after, "agentmesh_rib_routes", table="adj_rib_in") == 3
    assert value(after, "agentmesh_best_path_changes_total", reason="new_route") == 3
    assert value(after, "agentmesh_calls_total", role="ingress", result="ok") == 1
    assert value(after, "agentmesh_calls_total", role="ingress", result="not_found") == 1
    assert value(after, "agentmesh_call_duration_seconds_count", role="ingress", result="ok") == 1
    assert value(after, "agentmesh_call_duration_seconds_sum", role="ingress", result="ok") > 0

    # The serving node counted the call too, and reports its backend as healthy.
    at_b = await scrape(metrics_b)
    assert value(at_b, "agentmesh_calls_total", role="transit", result="ok") == 1
    assert value(at_b, "agentmesh_calls_total", role="ingress", result="ok") == 0
    assert value(at_b, "agentmesh_backend_up", backend="demo") == 1
    assert value(at_b, "agentmesh_backend_agents", backend="demo") == 3
    assert value(at_b, "agentmesh_backend_healthy", backend="demo") == 1


async def test_notifications_are_counted_by_code_and_direction(scraped: Scraper) -> None:
    a, b, metrics_a, metrics_b = scraped
    await a.add_neighbor(neighbor_of(b))
    await b.add_neighbor(neighbor_of(a))
    await established(a, b)
    await a.disable_neighbor(b.advertise_address, "maintenance")
    await eventually(lambda: _idle(b, a), 10)
    sent = await scrape(metrics_a)
    labels = {"peer": b.advertise_address, "direction": "sent", "code": "cease"}
    assert value(sent, "agentmesh_peer_notifications_total", **labels, subcode="administrative_shutdown") == 1
    assert value(sent, "agentmesh_peer_up", peer=b.advertise_address) == 0
    received = await scrape(metrics_b)
    labels = {"peer": a.advertise_address, "direction": "received", "code": "cease"}
    assert (
        value(received, "agentmesh_peer_notifications_total", **labels, subcode="administrative_shutdown")
        == 1
    )


async def test_no_agent_name_becomes_a_label(scraped: Scraper) -> None:
    a, b, metrics_a, _ = scraped
    await a.add_neighbor(neighbor_of(b))
    await b.add_neighbor(neighbor_of(a))
    await established(a, b)
    await b.host(demo_backend(), "demo")
    await eventually(lambda: _has(a, "demo.echo"), 10)
    await a.call_agent("demo.echo", AgentRequest(arguments={"text": "hi"}))
    samples = await scrape(metrics_a)
    labels = {value for _, label_set in samples for _, value in label_set}
    assert not any("demo." in label for label in labels)


async def test_a_removed_peer_leaves_no_series(scraped: Scraper) -> None:
    a, b, metrics_a, _ = scraped
    await a.add_neighbor(neighbor_of(b))
    await b.add_neighbor(neighbor_of(a))
    await established(a, b)
    await a.remove_neighbor(b.advertise_address)
    samples = await scrape(metrics_a)
    assert not any(("peer", b.advertise_address) in labels for _, labels in samples)


async def _has(node: Node, name: str) -> bool:
    return await node.resolve(name) is not None


async def _idle(node: Node, peer: Node) -> bool:
    return all(
        p.state.value != "Established" for p in await node.peers() if p.address == peer.advertise_address
    )
