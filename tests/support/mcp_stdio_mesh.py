"""A small mesh in one process, serving MCP over stdio on its first node (run by the MCP tests).

    python tests/support/mcp_stdio_mesh.py

n0 (AS65001) - n1 (AS65002) - n2 (AS65003) on loopback with OS-chosen ports; n2 hosts the demo
agents as `demo.*`, n0 hosts `local.chatty`, an agent that prints to stdout when called (stdout
belongs to MCP, so that line must end up on stderr). MCP is served on n0 until stdin closes; then
the nodes stop. Logs go to stderr as JSON. Self-contained: it imports only `agentmesh`, so it
runs with any working directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from agentmesh.agents.base import AgentInfo, AgentRequest
from agentmesh.agents.demo import demo_backend
from agentmesh.agents.local import LocalAgent, LocalBackend
from agentmesh.bgp.fsm import State
from agentmesh.config import Config, NeighborConfig, NodeConfig, TimersConfig
from agentmesh.mcp import serve_stdio
from agentmesh.obs.logging import configure
from agentmesh.speaker.node import Node

ASNS = (65001, 65002, 65003)
TIMERS = TimersConfig(
    hold_time=9, connect_retry_time=1.0, connect_retry_initial=0.2, min_advertisement_interval=0.05
)
#: What `local.chatty` prints to stdout; the test looks for it on stderr.
STRAY_LINE = "stray output from a backend that prints"
READY_TIMEOUT = 15.0


def chatty(request: AgentRequest) -> str:
    print(STRAY_LINE)
    return "I printed something."


async def link(a: Node, b: Node) -> None:
    await a.add_neighbor(NeighborConfig(address=b.advertise_address, asn=b.asn, description=b.name))
    await b.add_neighbor(NeighborConfig(address=a.advertise_address, asn=a.asn, description=a.name))
    await a.wait_for_state(b.advertise_address, State.ESTABLISHED, READY_TIMEOUT)


async def main() -> None:
    configure("info")  # before any node exists: nodes bind their loggers when created
    nodes = [
        Node(
            Config(
                node=NodeConfig(name=f"n{i}", asn=asn, router_id=f"10.0.0.{i + 1}", listen="127.0.0.1:0"),
                timers=TIMERS,
            )
        )
        for i, asn in enumerate(ASNS)
    ]
    try:
        for node in nodes:
            await node.start()
        await link(nodes[0], nodes[1])
        await link(nodes[1], nodes[2])
        await nodes[2].host(demo_backend(), "demo")
        await nodes[0].host(LocalBackend("noisy", [LocalAgent(AgentInfo("chatty"), chatty)]), "local")
        async with asyncio.timeout(READY_TIMEOUT):
            while "demo.capitals" not in await nodes[0].loc_rib():
                await asyncio.sleep(0.02)
        await serve_stdio(nodes[0])
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(Exception):
                await node.stop()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
