"""Draining: a node that stops lets the calls it is serving finish (`timers.drain_time`), MCP ones too.

Node `entry` (AS65001) calls `slow.agent`, hosted by node `origin` (AS65002), which takes a while to
answer. `origin` is stopped while the call is in flight: it sends its peers Cease at once, so no new
call comes its way, and the call already there is answered within the drain time, or cut without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from mcp import Client
from mcp.types import CallToolResult

from agentmesh.agents.base import AgentInfo, AgentRequest, CallFailure
from agentmesh.agents.health import HealthSettings
from agentmesh.agents.local import LocalAgent, LocalBackend
from agentmesh.config import Config, TimersConfig
from agentmesh.mcp import McpHttpServer
from agentmesh.speaker.node import Node
from agentmesh.transport.forwarding import Served
from tests.support.nodes import FAST_TIMERS, established, eventually, neighbor_of, node_config, running

ANSWER_AFTER = 1.0


def origin_config(drain_time: float | None) -> Config:
    timers = TimersConfig(**{**FAST_TIMERS.model_dump(), "drain_time": drain_time})
    return node_config("origin", 65002, "10.0.0.2", timers=timers)


async def serving_slowly(entry: Node, origin: Node) -> asyncio.Event:
    """Peer the two nodes, host the slow agent at `origin`; the event is set when a call reaches it."""
    await entry.add_neighbor(neighbor_of(origin))
    await origin.add_neighbor(neighbor_of(entry))
    await established(entry, origin)
    reached = asyncio.Event()

    async def slow(request: AgentRequest) -> str:
        reached.set()
        await asyncio.sleep(float(request.arguments.get("sleep", ANSWER_AFTER)))
        return "done"

    backend = LocalBackend("slow", [LocalAgent(AgentInfo("agent"), slow)])
    await origin.host(backend, "slow", rediscover_every=None, health=HealthSettings(probe_every=60.0))
    await eventually(lambda: _resolves(entry, "slow.agent"), 10)
    return reached


async def _resolves(node: Node, name: str) -> bool:
    return await node.resolve(name) is not None


async def stop_during_call(drain_time: float | None, call_takes: float) -> tuple[Served | CallFailure, float]:
    """Stop the origin while it serves a call; what the call got, and how long the stop took."""
    configs = (node_config("entry", 65001, "10.0.0.1"), origin_config(drain_time))
    async with running(*configs) as (entry, origin):
        reached = await serving_slowly(entry, origin)
        request = AgentRequest(arguments={"sleep": call_takes})
        call = asyncio.create_task(entry.call_agent("slow.agent", request, timeout=10))
        await reached.wait()
        started = time.monotonic()
        await origin.stop()
        stopping = time.monotonic() - started
        assert await entry.resolve("slow.agent") is None  # withdrawn at once by the Cease
        try:
            return await call, stopping
        except CallFailure as failure:
            return failure, stopping


async def test_a_call_in_flight_is_answered_while_its_origin_drains() -> None:
    outcome, stopping = await stop_during_call(drain_time=10.0, call_takes=2.0)
    assert isinstance(outcome, Served) and outcome.reply.text == "done"
    assert stopping < 10.0  # the stop waited for the call, not for the whole drain time


async def test_without_drain_time_a_long_call_is_cut_after_a_second() -> None:
    outcome, _ = await stop_during_call(drain_time=None, call_takes=3.0)  # longer than the 1 s default
    assert isinstance(outcome, CallFailure)


async def test_an_mcp_call_in_flight_is_answered_while_the_mcp_server_drains() -> None:
    async with running(origin_config(drain_time=10.0)) as (node,):
        reached = asyncio.Event()

        async def slow(request: AgentRequest) -> str:
            reached.set()
            await asyncio.sleep(1.0)
            return "done"

        backend = LocalBackend("slow", [LocalAgent(AgentInfo("agent"), slow)])
        await node.host(backend, "slow", rediscover_every=None, health=HealthSettings(probe_every=60.0))
        server = McpHttpServer(node)
        await server.start()
        answers: list[CallToolResult] = []

        async def call() -> None:
            with contextlib.suppress(Exception):  # the session itself ends with the server
                async with Client(server.url) as client:
                    answers.append(
                        await client.call_tool("call_agent", {"name": "slow.agent", "message": "x"})
                    )

        calling = asyncio.create_task(call())
        try:
            await reached.wait()
            await server.stop()
            await calling
        finally:
            await server.stop()
        [result] = answers
        assert not result.is_error and json.loads(result.content[0].text)["text"] == "done"  # type: ignore[union-attr]
