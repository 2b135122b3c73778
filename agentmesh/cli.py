"""The `agentmesh` command line: run a node, or a local demo mesh."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from agentmesh.agents.demo import demo_backend
from agentmesh.agents.factory import BackendSetupError
from agentmesh.agents.mastra import MASTRA_SERVERS_ENV
from agentmesh.config import (
    Config,
    ConfigError,
    McpConfig,
    NeighborConfig,
    NodeConfig,
    TimersConfig,
    load_config,
    split_host_port,
)
from agentmesh.mcp.compat import MastraDirectory, register_compat_tools
from agentmesh.mcp.frontend import McpHttpServer, build_server, serve_stdio
from agentmesh.obs.logging import configure
from agentmesh.speaker.node import Node

#: The demo mesh of `agentmesh up`: three nodes in three ASes peering in a line, a - b - c, each hosting
#: one demo agent, so that a call from node-a to `demo.capitals` crosses two ASes.
DEMO_NODES = (
    ("node-a", 65001, "10.0.0.1", "echo"),
    ("node-b", 65002, "10.0.0.2", "calculator"),
    ("node-c", 65003, "10.0.0.3", "capitals"),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentmesh", description="A BGP-style routing mesh for AI agents.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run one node from a YAML config file, or without one as a drop-in for the old Mastra proxy",
    )
    serve.add_argument(
        "--config",
        "-c",
        help="path of the node's YAML config; without it the node serves the Mastra servers of"
        " MASTRA_SERVERS over MCP on stdio, as the old proxy did",
    )
    serve.add_argument(
        "--mcp-listen", metavar="HOST:PORT", help="serve MCP over HTTP here (overrides mcp.listen)"
    )
    serve.add_argument(
        "--stdio",
        action="store_true",
        help="serve MCP on stdin/stdout (logs stay on stderr); stop at end of input",
    )
    up = commands.add_parser("up", help="run a local demo mesh of three nodes in three ASes")
    up.add_argument(
        "--base-port",
        type=int,
        default=50051,
        help="port of the first node; the others follow (0: let the OS choose every port)",
    )
    up.add_argument(
        "--mcp-port", type=int, default=8000, help="port of node-a's MCP endpoint (0: let the OS choose)"
    )
    args = parser.parse_args(argv)
    configure(args.log_level)
    try:
        if args.command == "serve":
            config = load_config(args.config) if args.config else _old_proxy_config()
            if args.mcp_listen:
                try:
                    mcp = McpConfig(listen=args.mcp_listen)
                except ValidationError as error:
                    print(
                        f"agentmesh: --mcp-listen {args.mcp_listen!r}: {error.errors()[0]['msg']}",
                        file=sys.stderr,
                    )
                    return 2
                config = config.model_copy(update={"mcp": mcp})
            # Without a config file the node stands in for the old proxy: stdio unless told otherwise.
            stdio = args.stdio or (args.config is None and not args.mcp_listen)
            compat = args.config is None or MASTRA_SERVERS_ENV in os.environ
            asyncio.run(_serve(config, stdio=stdio, compat=compat))
        else:
            asyncio.run(_up(args.base_port, 0 if args.base_port == 0 else args.mcp_port))
    except ConfigError as error:
        print(f"agentmesh: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    except BackendSetupError as error:
        print(f"agentmesh: cannot set up a backend: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"agentmesh: {error}", file=sys.stderr)
        return 1
    return 0


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _old_proxy_config() -> Config:
    """A lone node with no neighbours, on an OS-chosen port so that several may run side by side."""
    return Config(node=NodeConfig(listen="127.0.0.1:0"))


async def _serve(config: Config, *, stdio: bool, compat: bool) -> None:
    node = Node(config)
    mcp = None
    directory = MastraDirectory.from_env() if compat else None
    try:
        await node.start()
        server = build_server(node)
        if directory is not None:
            # The old proxy's tools, and the same Mastra agents as routes (server0.weatherAgent, ...).
            register_compat_tools(server, directory)
            for entry in directory.servers:
                await node.host(entry.backend, entry.name)
        if config.mcp.listen is not None:
            host, port = split_host_port(config.mcp.listen)
            mcp = McpHttpServer(node, server)
            await mcp.start(host, port)
        if stdio:
            await serve_stdio(node, server)  # until the client closes stdin
        else:
            await _until_signalled()
    finally:
        if mcp is not None:
            await mcp.stop()
        await node.stop()
        if directory is not None:
            await directory.aclose()


async def _up(base_port: int, mcp_port: int) -> None:
    nodes = []
    for index, (name, asn, router_id, _) in enumerate(DEMO_NODES):
        port = base_port + index if base_port else 0
        node_config = NodeConfig(name=name, asn=asn, router_id=router_id, listen=f"127.0.0.1:{port}")
        nodes.append(Node(Config(node=node_config, timers=TimersConfig(hold_time=30))))
    try:
        for node in nodes:
            await node.start()
        # Neighbours are added once every node is bound, so OS-chosen ports work too.
        for left, right in itertools.pairwise(nodes):
            await left.add_neighbor(
                NeighborConfig(address=right.advertise_address, asn=right.asn, description=right.name)
            )
            await right.add_neighbor(
                NeighborConfig(address=left.advertise_address, asn=left.asn, description=left.name)
            )
        for node, (*_, agent) in zip(nodes, DEMO_NODES, strict=True):
            await node.host(demo_backend(agent), "demo")
        mcp = McpHttpServer(nodes[0])
        await mcp.start("127.0.0.1", mcp_port)
        try:
            _print_banner(nodes, mcp.url)
            await _until_signalled()
        finally:
            await mcp.stop()
    finally:
        for node in nodes:
            await node.stop()


def _print_banner(nodes: list[Node], mcp_url: str) -> None:
    print("agentmesh demo mesh is up (Ctrl-C to stop): node-a - node-b - node-c", flush=True)
    for node, (*_, agent) in zip(nodes, DEMO_NODES, strict=True):
        print(f"  {node.name}  AS{node.asn}  {node.advertise_address}  hosts demo.{agent}", flush=True)
    print(f"MCP endpoint of node-a (Streamable HTTP): {mcp_url}", flush=True)
    print('  try the tool call_agent with {"name": "demo.capitals", "message": "Japan"}', flush=True)
    request = json.dumps(
        {"call": {"name": "demo.capitals", "arguments_json": '{"country": "Japan"}', "hop_limit": 8}}
    )
    print("Call an agent two ASes away, through node-a:", flush=True)
    method = "agentmesh.v1.ForwardingService/Call"
    print(f"  grpcurl -plaintext -d '{request}' {nodes[0].advertise_address} {method}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
