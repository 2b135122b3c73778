"""Running nodes from the command line: `agentmesh serve` (one node) and `agentmesh up` (the demo mesh)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import ValidationError

from agentmesh.access_config import compile_access
from agentmesh.agents.demo import demo_backend
from agentmesh.agents.factory import BackendSetupError
from agentmesh.agents.mastra import MASTRA_SERVERS_ENV
from agentmesh.config import (
    AdminConfig,
    Config,
    ConfigError,
    ConfigProblem,
    McpConfig,
    NeighborConfig,
    NodeConfig,
    TimersConfig,
    load_config,
    split_host_port,
)
from agentmesh.mcp.compat import MastraDirectory, register_compat_tools
from agentmesh.mcp.frontend import McpHttpServer, build_server, serve_stdio
from agentmesh.obs.logging import configure, get_logger
from agentmesh.obs.metrics import MetricsServer
from agentmesh.speaker.node import Node
from agentmesh.transport.admin import AdminServer
from agentmesh.transport.tls import TlsSetupError

#: The demo mesh of `agentmesh up`: three nodes in three ASes peering in a line, a - b - c, each hosting
#: one demo agent, so that a call from node-a to `demo.capitals` crosses two ASes.
DEMO_NODES = (
    ("node-a", 65001, "10.0.0.1", "echo"),
    ("node-b", 65002, "10.0.0.2", "calculator"),
    ("node-c", 65003, "10.0.0.3", "capitals"),
)


def run_node_command(args: argparse.Namespace) -> int:
    """Run `serve` or `up` until signalled; returns the exit status."""
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
            asyncio.run(_serve(config, stdio=stdio, compat=compat, config_path=args.config))
        else:
            zero = args.base_port == 0  # one switch for every port: OS-chosen all, for tests
            asyncio.run(_up(args.base_port, 0 if zero else args.mcp_port, 0 if zero else args.metrics_port))
    except ConfigError as error:
        print(f"agentmesh: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    except BackendSetupError as error:
        print(f"agentmesh: cannot set up a backend: {error}", file=sys.stderr)
        return 2
    except TlsSetupError as error:
        print(f"agentmesh: cannot set up TLS: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"agentmesh: {error}", file=sys.stderr)
        return 1
    return 0


async def _until_signalled(node: Node | None = None, config_path: str | None = None) -> None:
    """Run until SIGINT or SIGTERM; with a config file, SIGHUP reloads it into `node`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    if node is not None and config_path is not None:

        def reload() -> None:
            task = asyncio.create_task(_reload(node, config_path))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()


async def _reload(node: Node, path: str) -> None:
    """SIGHUP: read the file again and apply what can change at run time; a bad file changes nothing."""
    log = get_logger(node=node.name)
    try:
        config = load_config(path)
        report = await node.reload(config)
    except (ConfigError, OSError, ValueError) as error:
        log.error("config_reload_failed", path=path, error=str(error))
        return
    log.info("config_reloaded", path=path, **dataclasses.asdict(report))


def _old_proxy_config() -> Config:
    """A lone node with no neighbours, on OS-chosen ports so that several may run side by side."""
    return Config(node=NodeConfig(listen="127.0.0.1:0"), admin=AdminConfig(listen="127.0.0.1:0"))


@dataclass(frozen=True, slots=True)
class _Endpoints:
    """Where a node's operators reach it: its admin API address and metrics URL ("" when off)."""

    admin: str = ""
    metrics: str = ""


@contextlib.asynccontextmanager
async def _operated(node: Node, admin: AdminConfig, metrics_listen: str | None) -> AsyncIterator[_Endpoints]:
    """The node's admin API and metrics endpoint, for as long as the block runs."""
    log = get_logger(node=node.name)
    async with contextlib.AsyncExitStack() as stack:
        admin_address = metrics_url = ""
        if admin.enabled:
            server = AdminServer(node, admin.listen, token=admin.read_token())
            await server.start()
            stack.push_async_callback(server.stop)
            admin_address = server.address
            log.info("admin_started", listen=admin_address, token=server.token_required)
        if metrics_listen is not None:
            metrics = MetricsServer(node.metrics, node.sample_metrics)
            await metrics.start(*split_host_port(metrics_listen))
            stack.push_async_callback(metrics.stop)
            metrics_url = metrics.url
            log.info("metrics_started", url=metrics_url)
        yield _Endpoints(admin_address, metrics_url)


async def _serve(config: Config, *, stdio: bool, compat: bool, config_path: str | None = None) -> None:
    if compat and (config.access.callers or config.access.call_policy):
        # The old proxy's tools call Mastra servers directly, past every rule: refuse the mix
        # rather than run with access control that does not hold.
        problem = ConfigProblem(
            "access",
            f"the old proxy's tools ({MASTRA_SERVERS_ENV} is set) would bypass access control;"
            " host the Mastra servers as `agents` of type mastra instead, or unset the variable",
        )
        raise ConfigError(config_path or "<config>", [problem])
    directory = MastraDirectory.from_env() if compat else None
    async with contextlib.AsyncExitStack() as stack:
        if directory is not None:
            stack.push_async_callback(directory.aclose)
        try:
            access = compile_access(config.access)  # reads secret files: a bad one stops the start here
        except ValueError as error:
            raise ConfigError(config_path or "<config>", [ConfigProblem("access", str(error))]) from None
        node = Node(config)
        stack.push_async_callback(node.stop)
        await node.start()
        await stack.enter_async_context(_operated(node, config.admin, config.metrics.listen))
        server = build_server(node, access=access)
        if directory is not None:
            # The old proxy's tools, and the same Mastra agents as routes (server0.weatherAgent, ...).
            register_compat_tools(server, directory)
            for entry in directory.servers:
                await node.host(entry.backend, entry.name)
        if config.mcp.listen is not None:
            host, port = split_host_port(config.mcp.listen)
            mcp = McpHttpServer(node, server, access=access)
            await mcp.start(host, port)
            stack.push_async_callback(mcp.stop)
        if stdio:
            await serve_stdio(node, server)  # until the client closes stdin
        else:
            await _until_signalled(node, config_path)


def demo_ports(base_port: int, metrics_port: int, index: int) -> tuple[int, int, int]:
    """Peering, admin and metrics ports of demo node `index`; 0 (OS-chosen) follows through.

    Admin ports count down from just below the first peering port, so that node-a's is the CLI's
    default (127.0.0.1:50050) when the peering ports start at 50051; metrics ports count up.
    """
    peering = admin = 0
    if base_port:
        peering, admin = base_port + index, base_port - 1 - index
    return peering, admin, metrics_port + index if metrics_port else 0


async def _up(base_port: int, mcp_port: int, metrics_port: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        endpoints: list[_Endpoints] = []
        for index, (name, asn, router_id, _) in enumerate(DEMO_NODES):
            port, admin_port, node_metrics_port = demo_ports(base_port, metrics_port, index)
            node_config = NodeConfig(name=name, asn=asn, router_id=router_id, listen=f"127.0.0.1:{port}")
            node = Node(Config(node=node_config, timers=TimersConfig(hold_time=30)))
            stack.push_async_callback(node.stop)
            await node.start()
            operated = _operated(
                node, AdminConfig(listen=f"127.0.0.1:{admin_port}"), f"127.0.0.1:{node_metrics_port}"
            )
            endpoints.append(await stack.enter_async_context(operated))
            nodes.append(node)
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
        stack.push_async_callback(mcp.stop)
        _print_banner(nodes, endpoints, mcp.url)
        await _until_signalled()


def _print_banner(nodes: list[Node], endpoints: list[_Endpoints], mcp_url: str) -> None:
    def say(line: str) -> None:
        print(line, flush=True)

    say("agentmesh demo mesh is up (Ctrl-C to stop): node-a - node-b - node-c")
    for node, (*_, agent) in zip(nodes, DEMO_NODES, strict=True):
        say(f"  {node.name}  AS{node.asn}  {node.advertise_address}  hosts demo.{agent}")
    say(f"MCP endpoint of node-a (Streamable HTTP): {mcp_url}")
    say('  try the tool call_agent with {"name": "demo.capitals", "message": "Japan"}')
    request = json.dumps(
        {"call": {"name": "demo.capitals", "arguments_json": '{"country": "Japan"}', "hop_limit": 8}}
    )
    say("Call an agent two ASes away, through node-a:")
    method = "agentmesh.v1.ForwardingService/Call"
    say(f"  grpcurl -plaintext -d '{request}' {nodes[0].advertise_address} {method}")
    say("Operate the nodes with the CLI, through each node's admin API:")
    for node, operated in zip(nodes, endpoints, strict=True):
        say(f"  {node.name}  admin {operated.admin}  metrics {operated.metrics}")
    say(f"  agentmesh peers --admin {endpoints[0].admin}")
    say(f"  agentmesh routes --admin {endpoints[1].admin}")
    say(f"  agentmesh call demo.capitals Japan --admin {endpoints[0].admin}")
