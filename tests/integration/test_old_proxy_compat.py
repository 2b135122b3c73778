"""The old Mastra proxy's MCP tools (DESIGN.md §3), driven by the real `mcp.Client`, against the recorded
transcripts in /work/shared/compat/old-proxy and two fake Mastra servers of either generation:
server0 (weatherAgent, echoAgent, mathAgent) and server1 (echoAgent "alt", reverseAgent).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server import MCPServer
from mcp.types import CallToolResult

from agentmesh.agents.mastra import MASTRA_SERVERS_ENV
from agentmesh.mcp.compat import COMPAT_TOOL_NAMES, MastraDirectory, register_compat_tools
from tests.support.mastra_servers import (
    CURRENT,
    LEGACY,
    Generation,
    MastraServer,
    mastra_server,
    server0_agents,
    server1_agents,
)

TRANSCRIPTS = Path("/work/shared/compat/old-proxy")

pytestmark = pytest.mark.timeout(30)

_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def transcript(case: str) -> dict[str, Any]:
    return json.loads((TRANSCRIPTS / f"{case}.json").read_text())


def free_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Mesh:
    """Two fake Mastra servers and an MCP server with only the compat tools."""

    def __init__(self, servers: list[MastraServer], urls: list[str], directory: MastraDirectory) -> None:
        self.servers = servers
        self.urls = urls
        self.directory = directory
        self.mcp = MCPServer(name="compat-test", log_level="WARNING")
        register_compat_tools(self.mcp, directory)

    def client(self) -> Client:
        # Entered inside each test: the client's task groups must be entered and left by the same task.
        return Client(self.mcp)


@pytest.fixture(params=[LEGACY, CURRENT])
async def mesh(request: pytest.FixtureRequest) -> AsyncIterator[Mesh]:
    generation: Generation = request.param
    async with (
        mastra_server(generation, server0_agents()) as (s0, url0),
        mastra_server(generation, server1_agents()) as (s1, url1),
    ):
        # Spaces and commas, as MASTRA_SERVERS allows.
        directory = MastraDirectory.from_env(f" {url0} ,  {url1}, ")
        try:
            yield Mesh([s0, s1], [url0, url1], directory)
        finally:
            await directory.aclose()


def text(result: CallToolResult) -> str:
    assert len(result.content) == 1
    return result.content[0].text  # type: ignore[union-attr]


def payload(result: CallToolResult) -> Any:
    assert not result.is_error, text(result)
    return json.loads(text(result))


def shape(value: Any) -> Any:
    """The JSON value's structure: keys and types, lists by their first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


async def call(mesh: Mesh, target: str, content: str, kind: str = "generate", **extra: Any) -> CallToolResult:
    arguments = {
        "targetAgentId": target,
        "interactionType": kind,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }
    async with mesh.client() as client:
        return await client.call_tool("callMastraAgent", arguments)


# -- configuration ----------------------------------------------------------------------------


def test_mastra_servers_are_named_in_order_with_spaces_and_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASTRA_SERVERS_ENV, "http://a:1,http://b:2  http://c:3 ,, http://d:4")
    directory = MastraDirectory.from_env()
    assert [(s.name, s.url) for s in directory.servers] == [
        ("server0", "http://a:1"),
        ("server1", "http://b:2"),
        ("server2", "http://c:3"),
        ("server3", "http://d:4"),
    ]
    assert [s.backend.url for s in directory.servers] == [
        "http://a:1",
        "http://b:2",
        "http://c:3",
        "http://d:4",
    ]
    monkeypatch.delenv(MASTRA_SERVERS_ENV)
    assert [(s.name, s.url) for s in MastraDirectory.from_env().servers] == [
        ("server0", "http://localhost:4111")
    ]


# -- tools/list -------------------------------------------------------------------------------


async def test_tools_are_listed_exactly_as_the_old_proxy_listed_them(mesh: Mesh) -> None:
    expected = transcript("tools-list")["response"]["result"]["tools"]
    async with mesh.client() as client:
        tools = (await client.list_tools()).tools
    assert [tool.name for tool in tools] == list(COMPAT_TOOL_NAMES)
    listed = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    assert listed == expected


# -- listMastraAgents -------------------------------------------------------------------------


async def test_list_agents_matches_the_transcript(mesh: Mesh) -> None:
    expected = transcript("list-agents")["toolResult"]
    async with mesh.client() as client:
        result = await client.call_tool("listMastraAgents", {})
    listing = payload(result)
    # Only the URLs differ: the transcript's servers listened on 4111 and 4112.
    for entry, url in zip(expected["serverAgents"], mesh.urls, strict=True):
        entry["serverUrl"] = url
    assert listing == expected
    assert result.structured_content is None


async def test_a_dead_server_does_not_break_listing_the_other() -> None:
    dead = free_url()
    async with mastra_server(LEGACY, server1_agents()) as (_, url):
        directory = MastraDirectory.from_env(f"{dead} {url}")
        try:
            mcp = MCPServer(name="compat-test")
            register_compat_tools(mcp, directory)
            async with Client(mcp) as client:
                listing = payload(await client.call_tool("listMastraAgents", {}))
                reply = payload(
                    await client.call_tool(
                        "callMastraAgent",
                        {
                            "targetAgentId": "echoAgent",
                            "interactionType": "generate",
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    )
                )
        finally:
            await directory.aclose()
    down, up = listing["serverAgents"]
    assert down["serverName"] == "server0"
    assert down["status"] == "error"
    assert down["agents"] == []
    assert "cannot connect" in down["error"]
    assert up["status"] == "online"
    assert [agent["fullyQualifiedId"] for agent in up["agents"]] == [
        "server1:echoAgent",
        "server1:reverseAgent",
    ]
    assert listing["summary"] == {
        "totalServers": 2,
        "onlineServers": 1,
        "totalAgents": 2,
        "agentConflicts": [],
    }
    # With server0 down, server1's echoAgent is the only one.
    assert reply["responseData"]["text"] == "alt-echo: hi"
    assert reply["resolutionMethod"] == "unique_auto_resolution"


# -- callMastraAgent: generate ----------------------------------------------------------------


async def test_generate_on_a_unique_agent_matches_the_transcript(mesh: Mesh) -> None:
    recorded = transcript("call-generate-unique")
    arguments = recorded["request"]["params"]["arguments"]
    async with mesh.client() as client:
        result = await client.call_tool("callMastraAgent", arguments)
    reply = payload(result)
    expected = recorded["toolResult"]
    assert reply == reply | {
        "success": True,
        "interactionType": "generate",
        "serverUsed": mesh.urls[0],
        "agentIdUsed": "weatherAgent",
        "fullyQualifiedId": "server0:weatherAgent",
        "resolutionMethod": "unique_auto_resolution",
    }
    assert list(reply) == list(expected)
    assert reply["responseData"]["text"] == expected["responseData"]["text"]
    if mesh.servers[0].generation == LEGACY:
        # The server's JSON is passed through unchanged: the same AI SDK 4 shape as recorded.
        assert shape(reply["responseData"]) == shape(expected["responseData"])
    else:
        assert reply["responseData"]["usage"]["inputTokens"] == 6
    post = mesh.servers[0].posts()[-1]
    assert post.path == "/api/agents/weatherAgent/generate"
    assert post.content_type == "application/json"
    assert post.body == {"messages": arguments["messages"]}


async def test_a_conflict_is_won_by_server0(mesh: Mesh) -> None:
    reply = payload(await call(mesh, "echoAgent", "hello"))
    assert reply["responseData"]["text"] == "echo: hello"
    assert reply["serverUsed"] == mesh.urls[0]
    assert reply["fullyQualifiedId"] == "server0:echoAgent"
    assert reply["resolutionMethod"] == "conflict_default_server"
    assert mesh.servers[1].posts() == []


async def test_an_explicit_server_is_used(mesh: Mesh) -> None:
    reply = payload(await call(mesh, "server1:echoAgent", "hello", threadId="t1", resourceId="r1"))
    assert reply["responseData"]["text"] == "alt-echo: hello"
    assert reply["serverUsed"] == mesh.urls[1]
    assert reply["agentIdUsed"] == "echoAgent"
    assert reply["fullyQualifiedId"] == "server1:echoAgent"
    assert reply["resolutionMethod"] == "explicit_qualification"
    assert mesh.servers[0].posts() == []
    assert mesh.servers[1].posts()[-1].body == {
        "messages": [{"role": "user", "content": "hello"}],
        "threadId": "t1",
        "resourceId": "r1",
    }


async def test_server_url_selects_a_configured_server(mesh: Mesh) -> None:
    reply = payload(await call(mesh, "echoAgent", "hi", serverUrl=mesh.urls[1] + "/"))
    assert reply["responseData"]["text"] == "alt-echo: hi"
    assert reply["fullyQualifiedId"] == "server1:echoAgent"
    assert reply["resolutionMethod"] == "explicit_url_override"
    refused = await call(mesh, "echoAgent", "hi", serverUrl="http://169.254.169.254/")
    assert refused.is_error
    assert "is not a configured server" in text(refused)


async def test_ids_with_several_colons_keep_everything_after_the_first(mesh: Mesh) -> None:
    result = await call(mesh, "server1:agent:with:colons", "hi")
    assert result.is_error
    # The id reached server1 whole (URL-encoded in the path), not cut to "agent".
    assert mesh.servers[1].posts()[-1].path == "/api/agents/agent:with:colons/generate"
    assert text(result).startswith(
        "Error: Failed to interact with Mastra agent 'server1:agent:with:colons': "
    )
    assert "agent:with:colons not found" in text(result)

    directory = mesh.directory
    resolution = await directory.resolve("server1:agent:with:colons")
    assert (resolution.server.name, resolution.agent_id, resolution.fully_qualified_id) == (
        "server1",
        "agent:with:colons",
        "server1:agent:with:colons",
    )


# -- errors -----------------------------------------------------------------------------------


async def test_an_unknown_agent_is_the_transcripts_error(mesh: Mesh) -> None:
    recorded = transcript("call-error-unknown-agent")
    async with mesh.client() as client:
        result = await client.call_tool("callMastraAgent", recorded["request"]["params"]["arguments"])
    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    # The SDK adds its own `_meta` and `resultType`; the rest is the old proxy's answer exactly.
    assert {key: dumped[key] for key in ("content", "isError")} == recorded["response"]["result"]


async def test_an_unknown_server_is_an_error_result(mesh: Mesh) -> None:
    result = await call(mesh, "server7:echoAgent", "hi")
    assert result.is_error
    assert text(result) == (
        "Error: Failed to interact with Mastra agent 'server7:echoAgent': Unknown server 'server7'. "
        "Available servers: server0, server1. Or provide serverUrl parameter."
    )


async def test_an_unknown_agent_on_an_explicit_server_carries_the_servers_error(mesh: Mesh) -> None:
    result = await call(mesh, "server0:reverseAgent", "hi")
    assert result.is_error
    status = 404 if mesh.servers[0].generation == CURRENT else 500
    assert text(result).startswith(
        f"Error: Failed to interact with Mastra agent 'server0:reverseAgent': HTTP {status}: "
    )


async def test_invalid_arguments_are_refused(mesh: Mesh) -> None:
    async with mesh.client() as client:
        result = await client.call_tool(
            "callMastraAgent", {"targetAgentId": "echoAgent", "interactionType": "shout", "messages": []}
        )
    assert result.is_error


# -- callMastraAgent: stream ------------------------------------------------------------------


async def test_stream_on_a_unique_agent_matches_the_transcript(mesh: Mesh) -> None:
    recorded = transcript("call-stream-unique")
    async with mesh.client() as client:
        result = await client.call_tool("callMastraAgent", recorded["request"]["params"]["arguments"])
    reply = payload(result)
    expected = recorded["toolResult"]
    assert shape(reply) == shape(expected)
    assert list(reply) == list(expected)
    assert {k: v for k, v in reply.items() if k not in ("responseData", "serverUsed")} == {
        k: v for k, v in expected.items() if k not in ("responseData", "serverUsed")
    }
    assert reply["serverUsed"] == mesh.urls[0]
    data = reply["responseData"]
    assert data["type"] == "collected_stream"
    # Everything but the timestamps and the duration is as recorded.
    assert [{"content": c["content"], "index": c["index"]} for c in data["chunks"]] == [
        {"content": c["content"], "index": c["index"]} for c in expected["responseData"]["chunks"]
    ]
    assert all(_ISO.fullmatch(chunk["timestamp"]) for chunk in data["chunks"])
    summary = data["summary"]
    assert list(summary) == list(expected["responseData"]["summary"])
    assert summary["totalChunks"] == 7
    assert summary["note"] == expected["responseData"]["summary"]["note"]
    assert _ISO.fullmatch(summary["startTime"]) and _ISO.fullmatch(summary["endTime"])
    assert summary["startTime"] <= data["chunks"][0]["timestamp"] <= summary["endTime"]
    assert isinstance(summary["durationMs"], int) and summary["durationMs"] >= 0
    post = mesh.servers[0].posts()[-1]
    assert post.path == "/api/agents/mathAgent/stream"
    assert post.content_type == "application/json"


async def test_stream_in_a_conflict_and_explicitly(mesh: Mesh) -> None:
    streamed = payload(await call(mesh, "echoAgent", "a b", "stream"))
    assert [c["content"] for c in streamed["responseData"]["chunks"]] == ["echo: ", "a ", "b"]
    assert streamed["resolutionMethod"] == "conflict_default_server"
    explicit = payload(await call(mesh, "server1:reverseAgent", "abc", "stream"))
    assert "".join(c["content"] for c in explicit["responseData"]["chunks"]) == "cba"
    assert explicit["resolutionMethod"] == "explicit_qualification"


async def test_a_stream_error_is_an_error_result(mesh: Mesh) -> None:
    result = await call(mesh, "server1:nopeAgent", "hi", "stream")
    assert result.is_error
    assert text(result).startswith("Error: Failed to interact with Mastra agent 'server1:nopeAgent': HTTP ")


# -- resolution without server0 ---------------------------------------------------------------


async def test_the_lowest_index_wins_when_server0_lacks_the_agent() -> None:
    async with (
        mastra_server(CURRENT, server0_agents()) as (_, url0),
        mastra_server(CURRENT, server1_agents()) as (_, url1),
        mastra_server(CURRENT, server1_agents()) as (_, url2),
    ):
        directory = MastraDirectory.from_env(f"{url0},{url1},{url2}")
        try:
            resolution = await directory.resolve("reverseAgent")
        finally:
            await directory.aclose()
    assert resolution.server.name == "server1"
    assert resolution.fully_qualified_id == "server1:reverseAgent"
    assert resolution.resolution_method == "conflict_first_available"
