"""The `agentmesh` command line: run a node or a local demo mesh, and operate a running node.

`serve` and `up` run nodes (`agentmesh/run.py`); every other command is a client of a node's
AdminService (`agentmesh/cli_admin.py`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from agentmesh.cli_admin import ADMIN_COMMANDS, EXIT_CODES_HELP, add_admin_commands, run_admin_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="agentmesh",
        description="A BGP-style routing mesh for AI agents.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        type=_port_between(4, 65533),
        default=50051,
        help="peering port of node-a; node-b and node-c follow, admin ports count down from just below"
        " it (0: let the OS choose every port of the mesh)",
    )
    up.add_argument(
        "--mcp-port", type=_port_between(1, 65535), default=8000, help="port of node-a's MCP endpoint"
    )
    up.add_argument(
        "--metrics-port",
        type=_port_between(1, 65533),
        default=9464,
        help="metrics port of node-a; node-b and node-c follow",
    )
    add_admin_commands(commands)
    args = parser.parse_args(argv)
    if args.command in ADMIN_COMMANDS:
        return run_admin_command(args)
    # Imported only to run nodes: the operator commands above stay quick to start.
    from agentmesh.run import run_node_command

    return run_node_command(args)


def _port_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: 0 (the OS chooses) or a port in low..high."""

    def port(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
        if value != 0 and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be 0 (the OS chooses) or {low}-{high}, got {value}")
        return value

    return port


if __name__ == "__main__":
    sys.exit(main())
