"""The MCP front-end driven by the real `mcp.Client`: Streamable HTTP, legacy SSE, stdio, /health, /status.

n0 (AS65001) - n1 (AS65002) - n2 (AS65003); n2 hosts the demo agents, MCP is served on n0, so every
call crosses two hops.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

from agentmesh.agents.demo import demo_backend
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.config import parse_policy_yaml
from agentmesh.mcp import TOOL_NAMES, McpHttpServer, build_server
from agentmesh.speaker.node import Node
from tests.integration.test_routing_topologies import configs, everywhere, link
from tests.support.nodes import eventually, running

STDIO_MESH = Path(__file__).resolve().parents[1] / "support" / "mcp_stdio_mesh.py"

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def chain() -> AsyncIterator[list[Node]]:
    async with running(*configs([65001, 65002, 65003])) as nodes:
        await link(nodes, [(0, 1), (1, 2)])
        await nodes[2].host(demo_backend(), "demo")
        await everywhere(nodes, "demo.capitals")
        yield nodes


@pytest.fixture
async def http(chain: list[Node]) -> AsyncIterator[McpHttpServer]:
    server = McpHttpServer(chain[0])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def connect(http: McpHttpServer, mode: str = "auto") -> Client:
    """A Streamable HTTP client; "auto" negotiates the 2026 protocol, "legacy" the initialize handshake."""
    # Entered inside each test, not in a fixture: the client's anyio task groups must be entered and
    # left by the same task, and pytest-asyncio sets a fixture up and tears it down in different ones.
    return Client(http.url, mode=mode)


def payload(result: CallToolResult) -> Any:
    """The JSON a tool answered, read from its text (what a model sees); the same as structuredContent."""
    text = result.content[0].text  # type: ignore[union-attr]
    value = json.loads(text[text.index("{") :])
    assert value == result.structured_content
    return value


async def test_the_front_end_is_four_meta_tools_with_schemas(http: McpHttpServer) -> None:
    async with connect(http) as client:
        tools = (await client.list_tools()).tools
        assert sorted(tool.name for tool in tools) == sorted(TOOL_NAMES)
        by_name = {tool.name: tool for tool in tools}
        call = by_name["call_agent"].input_schema["properties"]
        assert {"name", "capability", "message", "messages", "arguments", "stream", "timeout_seconds"} <= set(
            call
        )
        assert by_name["resolve_agent"].input_schema["required"] == ["name"]
        assert all(tool.description for tool in tools)


async def test_list_agents_shows_the_path_to_an_agent_two_ases_away(
    http: McpHttpServer, chain: list[Node]
) -> None:
    async with connect(http) as client:
        listed = payload(await client.call_tool("list_agents", {"prefix": "demo."}))
        agents = {agent["name"]: agent for agent in listed["agents"]}
        assert sorted(agents) == ["demo.calculator", "demo.capitals", "demo.echo"]
        capitals = agents["demo.capitals"]
        assert capitals["description"] and "geography" in capitals["capabilities"]
        assert capitals["backend_protocol"] == "local"
        assert capitals["input_schema"]["required"] == ["country"]
        best = capitals["best_path"]
        assert best["as_path"] == [65002, 65003]
        assert best["next_hop"] == chain[1].advertise_address
        assert best["origin_as"] == 65003 and best["local"] is False
        assert set(best["health"]) == {"latency_ms", "error_rate", "load"}

        by_tag = payload(await client.call_tool("list_agents", {"capability": "math"}))
        assert [agent["name"] for agent in by_tag["agents"]] == ["demo.calculator"]
        assert payload(await client.call_tool("list_agents", {"prefix": "nothing."}))["agents"] == []


async def test_call_by_name_crosses_two_hops(http: McpHttpServer, chain: list[Node]) -> None:
    async with connect(http) as client:
        result = await client.call_tool("call_agent", {"name": "demo.capitals", "message": "France"})
        assert not result.is_error
        answer = payload(result)
        assert "Paris" in answer["text"]
        assert answer["data"] == {"country": "France", "capital": "Paris"}
        assert answer["served_by"] == "n2" and answer["route"] == "demo.capitals"
        assert answer["trace"] == [node.router_id for node in chain]


async def test_call_by_capability_says_which_agent_answered(http: McpHttpServer) -> None:
    async with connect(http) as client:
        result = await client.call_tool(
            "call_agent", {"capability": "math", "arguments": {"expression": "6*7"}}
        )
        assert not result.is_error
        answer = payload(result)
        assert answer["agent"] == "demo.calculator"
        assert answer["selected_by_capability"]["chosen"] == "demo.calculator"
        assert answer["text"] == "6*7 = 42" and answer["data"]["value"] == 42


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_streamed_call_reports_each_chunk_as_progress(http: McpHttpServer, mode: str) -> None:
    async with connect(http, mode) as client:
        reports: list[tuple[float, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            reports.append((progress, message))

        result = await client.call_tool(
            "call_agent",
            {
                "name": "demo.echo",
                "messages": [{"role": "user", "content": "hello across the mesh"}],
                "stream": True,
            },
            progress_callback=on_progress,
        )
        answer = payload(result)
        assert answer["text"] == "echo: hello across the mesh" and answer["streamed"] is True
        assert "".join(answer["chunks"]) == answer["text"] and len(answer["chunks"]) > 1
        assert reports, "no progress notification reached the client"
        assert [value for value, _ in reports] == sorted(value for value, _ in reports)
        assert "".join(message or "" for _, message in reports) == answer["text"]


async def test_resolve_agent_gives_the_path_and_the_reason(http: McpHttpServer, chain: list[Node]) -> None:
    async with connect(http) as client:
        resolved = payload(await client.call_tool("resolve_agent", {"name": "demo.capitals"}))
        assert resolved["entry"] == "demo.capitals" and resolved["exact"] is True
        assert resolved["reason"] == "only_path" and resolved["alternatives"] == []
        assert resolved["best_path"]["as_path"] == [65002, 65003]
        assert resolved["best_path"]["source"] == chain[1].advertise_address


async def test_resolve_agent_lists_the_alternatives_it_beat() -> None:
    # A triangle: n0 hears demo.* straight from n2 and, one AS longer, through n1.
    async with running(*configs([65001, 65002, 65003])) as nodes:
        await link(nodes, [(0, 1), (1, 2), (0, 2)])
        await nodes[2].host(demo_backend(), "demo")

        async def two_paths() -> bool:
            decision = await nodes[0].explain("demo.echo")
            return decision is not None and len(decision.ranked) == 2

        await eventually(two_paths, 10)
        async with Client(build_server(nodes[0])) as client:
            resolved = payload(await client.call_tool("resolve_agent", {"name": "demo.echo"}))
        assert resolved["reason"] == "shortest_as_path"
        assert resolved["best_path"]["as_path"] == [65003]
        assert resolved["best_path"]["next_hop"] == nodes[2].advertise_address
        [alternative] = resolved["alternatives"]
        assert alternative["as_path"] == [65002, 65003]
        assert alternative["next_hop"] == alternative["source"] == nodes[1].advertise_address


async def test_mesh_status_shows_the_node_and_its_peer(http: McpHttpServer, chain: list[Node]) -> None:
    async with connect(http) as client:
        status = payload(await client.call_tool("mesh_status", {}))
        n0 = chain[0]
        assert status["node"] == {
            "name": "n0",
            "asn": 65001,
            "router_id": n0.router_id,
            "address": n0.advertise_address,
        }
        [peer] = status["peers"]
        assert peer["address"] == chain[1].advertise_address and peer["asn"] == 65002
        assert peer["state"] == "Established" and peer["last_reason"]
        assert status["routes"]["loc_rib"] == 3


async def test_failures_are_error_results_naming_the_code_and_the_node(http: McpHttpServer) -> None:
    async with connect(http) as client:
        result = await client.call_tool("call_agent", {"name": "demo.nothing", "message": "hi"})
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "not_found" in text and "n0" in text
        assert payload(result)["error"] == {
            "code": "not_found",
            "node": "n0",
            "reason": "no route to 'demo.nothing'",
        }

        unresolvable = await client.call_tool("resolve_agent", {"name": "nowhere.x"})
        assert unresolvable.is_error and payload(unresolvable)["error"]["code"] == "not_found"

        no_tag = await client.call_tool("call_agent", {"capability": "telepathy", "message": "hi"})
        assert no_tag.is_error and payload(no_tag)["error"]["code"] == "not_found"

        both = await client.call_tool(
            "call_agent", {"name": "demo.calculator", "message": "1+1", "arguments": {"expression": "1+1"}}
        )
        assert both.is_error and payload(both)["error"]["code"] == "invalid_argument"


async def test_the_legacy_sse_transport_lists_and_calls(http: McpHttpServer) -> None:
    async with Client(sse_client(http.sse_url)) as client:
        listed = payload(await client.call_tool("list_agents", {}))
        assert {agent["name"] for agent in listed["agents"]} == {
            "demo.calculator",
            "demo.capitals",
            "demo.echo",
        }
        answer = payload(await client.call_tool("call_agent", {"name": "demo.capitals", "message": "France"}))
        assert "Paris" in answer["text"] and answer["served_by"] == "n2"


async def test_stop_ends_open_sse_sessions_at_once(chain: list[Node]) -> None:
    server = McpHttpServer(chain[0])
    await server.start()
    try:
        async with Client(sse_client(server.sse_url)) as client:
            await client.call_tool("mesh_status", {})
            started = time.monotonic()
            await server.stop()
            assert time.monotonic() - started < 2
            with pytest.raises(MCPError):
                await client.call_tool("mesh_status", {})
    finally:
        await server.stop()


async def test_health_and_status_over_plain_http(http: McpHttpServer, chain: list[Node]) -> None:
    base = f"http://127.0.0.1:{http.port}"
    async with httpx2.AsyncClient(timeout=5) as web:
        health = await web.get(f"{base}/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        status = await web.get(f"{base}/status")
        assert status.status_code == 200
        assert status.json()["node"]["name"] == "n0"
        assert status.json()["peers"][0]["address"] == chain[1].advertise_address


async def test_stdio_serves_only_json_rpc_on_stdout() -> None:
    """A subprocess runs a mesh and serves MCP on stdio; its logs and stray prints must stay off stdout."""
    faults: list[Exception] = []

    async def on_message(message: IncomingMessage) -> None:
        if isinstance(message, Exception):  # a stdout line that is not JSON-RPC
            faults.append(message)

    params = StdioServerParameters(command=sys.executable, args=[str(STDIO_MESH)])
    with tempfile.TemporaryFile("w+") as stderr:
        async with Client(stdio_client(params, errlog=stderr), message_handler=on_message) as client:
            answer = payload(
                await client.call_tool(
                    "call_agent", {"name": "demo.capitals", "arguments": {"country": "France"}}
                )
            )
            assert "Paris" in answer["text"] and answer["served_by"] == "n2" and len(answer["trace"]) == 3
            # An agent in the serving process that print()s: the line goes to stderr, not the protocol.
            chatty = payload(await client.call_tool("call_agent", {"name": "local.chatty", "message": "hi"}))
            assert chatty["text"] == "I printed something."
            assert {tool.name for tool in (await client.list_tools()).tools} == set(TOOL_NAMES)
        stderr.seek(0)
        logged = stderr.read()
    assert faults == []
    assert "stray output from a backend that prints" in logged
    assert '"event": "mcp_stdio_serving"' in logged


PREFER_ECHO = """
policy:
  defined_sets:
    names: {echo: ["demo.echo"], demo: ["demo.**"]}
  policies:
    - name: prefer
      statements:
        - name: raise-echo
          conditions: {names: {set: echo}}
          actions: {local_pref: {add: 100}}
        - name: accept-demo
          conditions: {names: {set: demo}}
          actions: {route: accept}
  import: {policies: [prefer], default: reject}
"""


async def test_resolve_agent_shows_how_import_policy_treated_each_path() -> None:
    """n1 hosts the demo agents, n0 originates its own demo.echo too; n0's import policy raises LOCAL_PREF
    of demo.echo from n1, so n1's path beats n0's own, and resolve_agent says why, step by step."""
    async with running(*configs([65001, 65002])) as (n0, n1):
        await link([n0, n1], [(0, 1)])
        await n1.host(demo_backend("echo", "capitals"), "demo")
        await n0.announce_agents(["demo.echo"], AgentAttributes(description="n0's own echo"))
        await everywhere([n0], "demo.capitals")
        await n0.set_policy(parse_policy_yaml(PREFER_ECHO))

        async def raised() -> bool:
            best = (await n0.loc_rib()).get("demo.echo")
            return best is not None and best.attrs.local_pref == 200

        await eventually(raised, 10)
        server = McpHttpServer(n0)
        await server.start()
        try:
            async with connect(server) as client:
                echo = payload(await client.call_tool("resolve_agent", {"name": "demo.echo"}))
                capitals = payload(await client.call_tool("resolve_agent", {"name": "demo.capitals"}))
        finally:
            await server.stop()
    assert echo["reason"] == "highest_local_pref"
    best = echo["best_path"]
    assert best["source"] == n1.advertise_address and best["local_pref"] == 200
    assert best["policy"] == {
        "accepted": True,
        "decided_by": "prefer/accept-demo",
        "trail": ["prefer/raise-echo continued [local_pref+100]", "prefer/accept-demo accepted"],
    }
    [own] = echo["alternatives"]
    assert own["local"] is True and own["source"] == "local"
    assert own["policy"] is None  # originated here: no import policy applies
    assert capitals["best_path"]["policy"] == {
        "accepted": True,
        "decided_by": "prefer/accept-demo",
        "trail": ["prefer/accept-demo accepted"],
    }
    assert capitals["alternatives"] == [] and capitals["best_path"]["local_pref"] is None
