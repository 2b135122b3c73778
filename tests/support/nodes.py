"""Helpers to run real nodes on loopback with OS-chosen ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from agentmesh.bgp.fsm import State
from agentmesh.config import Config, NeighborConfig, NodeConfig, TimersConfig
from agentmesh.speaker.node import Node, PeerStatus

FAST_TIMERS = TimersConfig(hold_time=3, connect_retry_time=1.0, connect_retry_initial=0.2)


def node_config(name: str, asn: int, router_id: str, *, timers: TimersConfig = FAST_TIMERS) -> Config:
    return Config(
        node=NodeConfig(name=name, asn=asn, router_id=router_id, listen="127.0.0.1:0"), timers=timers
    )


def neighbor_of(node: Node, *, passive: bool = False, asn: int | None = None) -> NeighborConfig:
    return NeighborConfig(
        address=node.advertise_address, asn=asn or node.asn, description=node.name, passive=passive
    )


@contextlib.asynccontextmanager
async def running(*configs: Config) -> AsyncIterator[list[Node]]:
    """Start nodes (no neighbours yet), stop them all on exit."""
    nodes = [Node(config) for config in configs]
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def peer_with(a: Node, b: Node, *, a_passive: bool = False, b_passive: bool = False) -> None:
    """Configure `a` and `b` as each other's neighbour."""
    await a.add_neighbor(neighbor_of(b, passive=b_passive))
    await b.add_neighbor(neighbor_of(a, passive=a_passive))


async def status(node: Node, address: str) -> PeerStatus:
    return next(p for p in await node.peers() if p.address == address)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.02) -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(interval)


async def established(a: Node, b: Node, timeout: float = 10.0) -> None:
    await a.wait_for_state(b.advertise_address, State.ESTABLISHED, timeout)
    await b.wait_for_state(a.advertise_address, State.ESTABLISHED, timeout)
