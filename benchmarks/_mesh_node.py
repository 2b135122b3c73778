"""One benchmark node process: NAME ASN PORT [HOST:PORT:ASN ...] [--host-echo]; runs until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from agentmesh.agents.demo import demo_backend
from agentmesh.config import Config, NeighborConfig, NodeConfig, TimersConfig
from agentmesh.obs.logging import configure
from agentmesh.speaker.node import Node


async def run(argv: list[str]) -> None:
    name, asn, port, *rest = argv
    host_echo = "--host-echo" in rest
    neighbours = [spec.rsplit(":", 1) for spec in rest if spec != "--host-echo"]
    config = Config(
        node=NodeConfig(
            name=name, asn=int(asn), router_id=f"10.0.0.{int(asn) - 65000}", listen=f"127.0.0.1:{port}"
        ),
        timers=TimersConfig(hold_time=90, connect_retry_initial=0.2, connect_retry_time=1.0),
        neighbors=tuple(
            NeighborConfig(address=address, asn=int(peer_asn)) for address, peer_asn in neighbours
        ),
    )
    node = Node(config)
    await node.start()
    if host_echo:
        await node.host(demo_backend("echo"), "demo")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await node.stop()


if __name__ == "__main__":
    configure("warning")
    asyncio.run(run(sys.argv[1:]))
