"""McpToolsBackend against a real MCP server (tests/support/mcp_tool_server.py) run as a subprocess.

The server's `whoami` tool answers its process id, so the tests can tell whether calls share one server
process (one long-lived session) and whether `close` ends it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentmesh.agents.base import AgentRequest, ChatMessage
from agentmesh.agents.mcp_tools import McpBackendError, McpToolError, McpToolsBackend
from agentmesh.bgp.messages import BackendProtocol

SERVER = Path(__file__).resolve().parents[1] / "support" / "mcp_tool_server.py"
COMMAND = [sys.executable, str(SERVER)]


def args(**arguments: object) -> AgentRequest:
    return AgentRequest(arguments=arguments)


def ask(text: str) -> AgentRequest:
    return AgentRequest(messages=(ChatMessage("user", "earlier"), ChatMessage("user", text)))


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_exists(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def server_pid(backend: McpToolsBackend) -> int:
    return int((await backend.call("whoami", args())).text)


@pytest.fixture
async def backend() -> AsyncIterator[McpToolsBackend]:
    backend = McpToolsBackend("tools", command=COMMAND)
    try:
        yield backend
    finally:
        await backend.close()


async def test_discover_lists_every_tool_with_its_schema(backend: McpToolsBackend) -> None:
    assert backend.protocol is BackendProtocol.MCP
    agents = {agent.id: agent for agent in await backend.discover()}
    assert set(agents) == {"add", "shout", "echo", "whoami", "fail", "crash"}
    add = agents["add"]
    assert add.description == "Add two integers."
    assert add.input_schema is not None
    assert add.input_schema["type"] == "object"
    assert set(add.input_schema["properties"]) == {"a", "b"}
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert sorted(add.input_schema["required"]) == ["a", "b"]
    shout = agents["shout"]
    assert shout.input_schema is not None
    assert shout.input_schema["properties"]["text"]["type"] == "string"


async def test_call_passes_arguments_and_returns_text_and_data(backend: McpToolsBackend) -> None:
    reply = await backend.call("add", args(a=2, b=40))
    assert reply.text == "42"
    assert reply.data == {"result": 42}
    reply = await backend.call("shout", args(text="hello"))
    assert reply.text == "HELLO!"


async def test_chat_request_fills_the_message_property(backend: McpToolsBackend) -> None:
    reply = await backend.call("echo", ask("hi there"))
    assert reply.text == "echo: hi there"


async def test_chat_request_to_a_tool_without_message_property_is_an_error(backend: McpToolsBackend) -> None:
    with pytest.raises(McpBackendError, match="message"):
        await backend.call("add", ask("1 + 1"))


async def test_stream_yields_the_whole_text_once(backend: McpToolsBackend) -> None:
    assert [piece async for piece in backend.stream("shout", args(text="abc"))] == ["ABC!"]


async def test_error_result_raises_with_its_text(backend: McpToolsBackend) -> None:
    with pytest.raises(McpToolError, match="failed on purpose: because"):
        await backend.call("fail", args(reason="because"))
    # The session survives a failed tool.
    assert (await backend.call("add", args(a=1, b=1))).text == "2"


async def test_unknown_tool_raises(backend: McpToolsBackend) -> None:
    with pytest.raises(McpBackendError):
        await backend.call("no-such-tool", args())


async def test_one_server_process_serves_every_call(backend: McpToolsBackend) -> None:
    await backend.discover()
    first = await server_pid(backend)
    assert first != os.getpid()
    await backend.call("add", args(a=1, b=2))
    pids = await asyncio.gather(*(server_pid(backend) for _ in range(5)))
    assert set(pids) == {first}
    assert await backend.probe()
    assert await server_pid(backend) == first


async def test_close_stops_the_subprocess() -> None:
    backend = McpToolsBackend("tools", command=COMMAND)
    pid = await server_pid(backend)
    assert process_exists(pid)
    await backend.close()
    assert await wait_gone(pid)
    assert not await backend.probe()
    with pytest.raises(McpBackendError, match="closed"):
        await backend.call("add", args(a=1, b=2))


async def test_a_broken_session_is_replaced_once(backend: McpToolsBackend) -> None:
    before = await server_pid(backend)
    # `crash` kills the server: the call fails and is not run again; the next call gets a new session.
    with pytest.raises(McpBackendError):
        await backend.call("crash", args())
    assert await wait_gone(before)
    after = await server_pid(backend)
    assert after != before
    assert await server_pid(backend) == after


async def test_a_command_that_is_not_an_mcp_server_fails_clearly() -> None:
    backend = McpToolsBackend("broken", command=[sys.executable, "-c", "pass"], connect_timeout=10)
    try:
        assert not await backend.probe()
        with pytest.raises(McpBackendError):
            await backend.discover()
    finally:
        await backend.close()


def test_exactly_one_of_command_and_url() -> None:
    with pytest.raises(ValueError):
        McpToolsBackend("x")
    with pytest.raises(ValueError):
        McpToolsBackend("x", command=COMMAND, url="http://127.0.0.1:1/mcp")


# --- Streamable HTTP ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def http_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([*COMMAND, "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the MCP HTTP test server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


async def test_streamable_http_session_is_reused(http_server: str) -> None:
    backend = McpToolsBackend("remote", url=http_server)
    try:
        assert {agent.id for agent in await backend.discover()} >= {"add", "shout"}
        assert (await backend.call("add", args(a=20, b=22))).text == "42"
        assert (await backend.call("shout", args(text="web"))).text == "WEB!"
        with pytest.raises(McpToolError, match="failed on purpose"):
            await backend.call("fail", args(reason="x"))
        assert await backend.probe()
    finally:
        await backend.close()
