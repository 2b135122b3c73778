"""Graceful restart (RFC 4724): a route reflector crashes and restarts under call load.

The reflector runs as its own process (so that it can die without sending a NOTIFICATION); its two
clients run here. Client c hosts the demo agents, client a calls them: the calls go straight to c
(the reflector leaves NEXT_HOP alone), so they must keep working while the reflector is down, with a
keeping c's routes as stale. While the reflector is down c withdraws one agent; after the restart
the reflector's End-of-RIB makes a sweep that stale route.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from agentmesh.agents.base import AgentRequest
from agentmesh.agents.demo import demo_backend
from agentmesh.bgp.fsm import State
from agentmesh.config import Config, GracefulRestartConfig, NeighborConfig, NodeConfig
from agentmesh.speaker.node import Node
from tests.support.nodes import FAST_TIMERS, eventually, running, status
from tests.support.processes import NodeProcess, count, free_port, node_processes, write_config

AS = 65000
GRACEFUL = GracefulRestartConfig(enabled=True, restart_time=30)


def client_config(name: str, router_id: str) -> Config:
    node = NodeConfig(name=name, asn=AS, router_id=router_id, listen="127.0.0.1:0")
    return Config(node=node, timers=FAST_TIMERS, graceful_restart=GRACEFUL)


def reflector_file(path: Path, port: int, clients: list[Node]) -> Path:
    return write_config(
        path,
        {
            "node": {"name": "rr", "asn": AS, "router_id": "10.0.0.1", "listen": f"127.0.0.1:{port}"},
            "timers": {"hold_time": 9, "connect_retry_time": 1.0, "connect_retry_initial": 0.2},
            "graceful_restart": {"enabled": True, "restart_time": 30},
            "neighbors": [
                {"address": c.advertise_address, "asn": AS, "route_reflector_client": True} for c in clients
            ],
        },
    )


class CallLoad:
    """Calls an agent through a node every few milliseconds until stopped; counts what failed."""

    def __init__(self, node: Node, name: str) -> None:
        self.node, self.name = node, name
        self.ok = 0
        self.failed: list[str] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.node.call_agent(self.name, AgentRequest(arguments={"text": "hi"}), timeout=2)
                self.ok += 1
            except Exception as error:  # every failure is what the test is about
                self.failed.append(str(error))
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def up(node: Node, address: str) -> bool:
    return (await status(node, address)).state is State.ESTABLISHED


async def has(node: Node, name: str) -> bool:
    return await node.resolve(name) is not None


async def test_routes_stay_usable_while_the_reflector_restarts_and_stale_ones_are_swept(
    tmp_path: Path,
) -> None:
    port = free_port()
    rr_address = f"127.0.0.1:{port}"
    async with running(client_config("a", "10.0.0.11"), client_config("c", "10.0.0.13")) as (a, c):
        config = reflector_file(tmp_path / "rr.yaml", port, [a, c])
        with node_processes() as started:
            started.append(NodeProcess(["serve", "--config", str(config)], tmp_path / "rr-1.log"))
            for client in (a, c):
                await client.add_neighbor(NeighborConfig(address=rr_address, asn=AS))
            await eventually(lambda: _all_up((a, c), rr_address), 15)
            await c.host(demo_backend(), "demo", rediscover_every=None)
            await eventually(lambda: has(a, "demo.capitals"), 10)
            load = CallLoad(a, "demo.echo")
            try:
                await asyncio.sleep(0.3)
                started[0].signal_group(signal.SIGKILL)  # no NOTIFICATION: a graceful restart case
                await eventually(lambda: _down(a, rr_address), 10)
                await c.withdraw_agents(["demo.capitals"])  # c's change cannot reach a meanwhile
                await asyncio.sleep(0.5)
                assert await has(a, "demo.capitals")  # stale, kept, still used
                calls_during_outage = load.ok
                started.append(NodeProcess(["serve", "--config", str(config)], tmp_path / "rr-2.log"))
                await eventually(lambda: _all_up((a, c), rr_address), 15)
                await eventually(lambda: _gone(a, "demo.capitals"), 15)  # swept after End-of-RIB
                await asyncio.sleep(0.3)
            finally:
                await load.stop()
            assert load.failed == [] and load.ok > calls_during_outage > 10
            assert await has(a, "demo.echo") and await has(a, "demo.calculator")
            restarted = started[1]
            assert count(restarted.events(), "end_of_rib_released") == 1


async def _all_up(nodes: tuple[Node, ...], address: str) -> bool:
    return all([await up(node, address) for node in nodes])


async def _down(node: Node, address: str) -> bool:
    return not await up(node, address)


async def _gone(node: Node, name: str) -> bool:
    return not await has(node, name)
