"""Operator commands of the `agentmesh` CLI: they drive a running node through its gRPC AdminService.

`add_admin_commands` registers the commands on the CLI's argparse subparsers and `run_admin_command` runs
the one that was parsed; `ADMIN_COMMANDS` names them, for the CLI's dispatch:

    node                      the node: identity, readiness, RIB sizes, backends
    peers                     the neighbours and their sessions
    peer add|del|update|reset|enable|disable ADDRESS
                              configure and steer one neighbour
    routes                    one routing table (Loc-RIB, or a neighbour's Adj-RIB-In or Adj-RIB-Out)
    resolve NAME              how a call to NAME would be routed, and why
    call NAME [MESSAGE]       call an agent anywhere in the mesh through the node
    watch                     the node's peer and best-path events as they happen
    announce NAME... / withdraw NAME...
                              originate or withdraw routes for agents the node hosts

Every command takes `--admin HOST:PORT` (default `$AGENTMESH_ADMIN`, else 127.0.0.1:50050), `--token`
(default `$AGENTMESH_ADMIN_TOKEN`), `--timeout SECONDS` and `--json`. Output is an aligned table or text by
default; `--json` prints one JSON document (a list for listings), except `watch`, which prints one JSON
object per line. Errors are one `agentmesh: ...` line on stderr.

Exit codes (also in every command's --help):
    0  success
    1  the node refused or failed the request (including a failed agent call)
    2  usage error: bad arguments, found by the CLI or by the node (INVALID_ARGUMENT)
    3  the node's admin API is not reachable at --admin
    4  not found: an unknown peer, or no route for the name resolved or called
    5  authentication failed (UNAUTHENTICATED or PERMISSION_DENIED)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import grpc
import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from agentmesh.client import AdminClient, AdminError
from agentmesh.v1 import admin_pb2, bgp_pb2, forwarding_pb2

ADMIN_ENV = "AGENTMESH_ADMIN"
TOKEN_ENV = "AGENTMESH_ADMIN_TOKEN"
DEFAULT_ADMIN = "127.0.0.1:50050"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_AUTH = 5

#: The top-level commands registered by add_admin_commands, for the CLI's dispatch.
ADMIN_COMMANDS: frozenset[str] = frozenset(
    {"node", "peers", "peer", "routes", "resolve", "call", "watch", "announce", "withdraw", "policy"}
)

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  the node refused or failed the request (including a failed agent call)
  2  usage error (bad arguments)
  3  the node's admin API is not reachable at --admin
  4  not found (an unknown peer, or no route for the name)
  5  authentication failed (wrong or missing --token)
"""

_TABLES = {
    "loc": admin_pb2.TABLE_LOC_RIB,
    "adj-in": admin_pb2.TABLE_ADJ_RIB_IN,
    "adj-out": admin_pb2.TABLE_ADJ_RIB_OUT,
}
_SOFT_RESETS = {
    "in": admin_pb2.SOFT_RESET_DIRECTION_IN,
    "out": admin_pb2.SOFT_RESET_DIRECTION_OUT,
    "both": admin_pb2.SOFT_RESET_DIRECTION_BOTH,
}
_STATUS_EXITS = {
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
}

Handler = Callable[[AdminClient, argparse.Namespace], int]
# argparse has no public name for the object add_subparsers() returns.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """Arguments that parse but make no sense together; exit code 2."""


# --- registration ---------------------------------------------------------------------------------------


def add_admin_commands(subparsers: Subparsers) -> None:
    """Register the operator commands on the CLI's subparsers (see ADMIN_COMMANDS)."""
    _command(subparsers, "node", _node, "describe the node: identity, readiness, RIB sizes and backends")
    _command(subparsers, "peers", _peers, "list the neighbours and their sessions")
    _add_peer_commands(subparsers)
    _add_route_commands(subparsers)
    _add_call_command(subparsers)
    _add_watch_command(subparsers)
    _add_policy_commands(subparsers)


def _add_policy_commands(subparsers: Subparsers) -> None:
    policy = subparsers.add_parser(
        "policy",
        help="show or replace the node's routing policy",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    _command(actions, "show", _policy_show, "print the routing policy in force as YAML")
    replace = _command(
        actions,
        "set",
        _policy_set,
        "replace the routing policy; routes are evaluated again, no session resets",
    )
    replace.add_argument(
        "file", metavar="FILE", help="YAML with the `policy:` section (a node config file works), - for stdin"
    )


def _command(subparsers: Subparsers, name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
    """A command that talks to the node: the shared options, the exit codes in its help, its handler."""
    parser = subparsers.add_parser(
        name,
        parents=[_common_options()],
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(admin_handler=handler)
    return parser


@functools.cache
def _common_options() -> argparse.ArgumentParser:
    # A parent parser: the options go on every leaf command, so they may follow the command's own arguments.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("admin API options")
    group.add_argument(
        "--admin",
        metavar="HOST:PORT",
        type=_host_port,
        help=f"the node's admin API (default: ${ADMIN_ENV}, else {DEFAULT_ADMIN})",
    )
    group.add_argument("--token", help=f"bearer token for the admin API (default: ${TOKEN_ENV})")
    group.add_argument("--json", action="store_true", help="print JSON instead of text")
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the node (default: 10)",
    )
    return common


def _add_peer_commands(subparsers: Subparsers) -> None:
    peer = subparsers.add_parser(
        "peer",
        help="configure and steer one neighbour",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = peer.add_subparsers(dest="peer_command", required=True, metavar="ACTION")

    add = _command(actions, "add", _peer_add, "configure a neighbour and start its session")
    add.add_argument("address", metavar="ADDRESS", type=_host_port, help="the neighbour's HOST:PORT")
    add.add_argument("--asn", type=_asn, required=True, help="the neighbour's AS number")
    add.add_argument("--description", default="", help="free text for operators")
    add.add_argument("--passive", action="store_true", help="wait for the neighbour to dial")
    add.add_argument("--hold-time", type=_hold_time, default=0, metavar="S", help="hold time to propose")
    add.add_argument(
        "--rr-client", action="store_true", help="an iBGP neighbour this node reflects routes for (RFC 4456)"
    )
    add.add_argument(
        "--add-paths", type=_add_paths, default=0, metavar="N", help="send up to N paths per name (RFC 7911)"
    )
    add.add_argument(
        "--tls-name", default="", metavar="NAME", help="with TLS: the identity its certificate carries"
    )

    update = _command(
        actions, "update", _peer_update, "change a neighbour's configuration (options not given are kept)"
    )
    update.add_argument("address", metavar="ADDRESS", help="the neighbour's HOST:PORT")
    update.add_argument("--asn", type=_asn, help="the neighbour's AS number")
    update.add_argument("--description", help="free text for operators")
    update.add_argument(
        "--passive", action=argparse.BooleanOptionalAction, help="wait for the neighbour to dial, or not"
    )
    update.add_argument("--hold-time", type=_hold_time, metavar="S", help="hold time to propose")
    update.add_argument(
        "--rr-client", action=argparse.BooleanOptionalAction, help="a route reflector client, or not"
    )
    update.add_argument(
        "--add-paths",
        type=_add_paths,
        metavar="N",
        help="send up to N paths per name (RFC 7911); 0: the best",
    )
    update.add_argument("--tls-name", metavar="NAME", help="with TLS: the identity its certificate carries")

    delete = _command(actions, "del", _peer_del, "end a neighbour's session and forget it")
    delete.add_argument("address", metavar="ADDRESS")

    reset = _command(actions, "reset", _peer_reset, "reset a session: hard by default, or soft")
    reset.add_argument("address", metavar="ADDRESS")
    reset.add_argument(
        "--soft", choices=sorted(_SOFT_RESETS), help="soft reset: ask for (in) or re-send (out)"
    )
    reset.add_argument("--message", default="", help="shutdown communication sent with a hard reset")

    enable = _command(actions, "enable", _peer_enable, "start a disabled neighbour's session")
    enable.add_argument("address", metavar="ADDRESS")

    disable = _command(actions, "disable", _peer_disable, "end a neighbour's session and keep it down")
    disable.add_argument("address", metavar="ADDRESS")
    disable.add_argument("--message", default="", help="shutdown communication sent with the Cease")


def _add_route_commands(subparsers: Subparsers) -> None:
    routes = _command(subparsers, "routes", _routes, "list the routes of one table")
    routes.add_argument("--table", choices=list(_TABLES), default="loc", help="which table (default: loc)")
    routes.add_argument("--peer", default="", metavar="ADDRESS", help="the neighbour (required for adj-*)")
    routes.add_argument(
        "--name", default="", metavar="PATTERN", help="a name or glob (* ? within a label, **)"
    )
    routes.add_argument("--batch-size", type=_batch_size, default=0, metavar="N", help="routes per message")
    routes.add_argument("--explain", action="store_true", help="show how policy treated each route")

    resolve = _command(subparsers, "resolve", _resolve, "show how a call to a name would be routed")
    resolve.add_argument("name", metavar="NAME")

    announce = _command(subparsers, "announce", _announce, "originate routes for agents the node hosts")
    announce.add_argument("names", metavar="NAME", nargs="+")
    announce.add_argument("--description", default="", help="what the agents are")
    announce.add_argument(
        "--capability", action="append", default=[], metavar="C", help="a capability tag (repeatable)"
    )
    announce.add_argument("--med", type=_uint32, help="MULTI_EXIT_DISC to announce them with")

    withdraw = _command(subparsers, "withdraw", _withdraw, "withdraw routes the node originated")
    withdraw.add_argument("names", metavar="NAME", nargs="+")


def _add_call_command(subparsers: Subparsers) -> None:
    call = _command(subparsers, "call", _call, "call an agent anywhere in the mesh through the node")
    call.add_argument("name", metavar="NAME")
    call.add_argument("message", metavar="MESSAGE", nargs="?", help="sent as one user chat message")
    call.add_argument(
        "--args", type=_json_object, metavar="JSON-OBJECT", help="arguments, for tool-like agents"
    )
    call.add_argument("--hop-limit", type=_positive_int, metavar="N", help="hops the call may take")
    call.add_argument(
        "--call-timeout",
        type=_positive_float,
        metavar="S",
        help="seconds the call may take (default: --timeout)",
    )


def _add_watch_command(subparsers: Subparsers) -> None:
    watch = _command(subparsers, "watch", _watch, "print peer and best-path events as they happen")
    watch.add_argument("--peers", action="store_true", help="neighbour state events (default: both kinds)")
    watch.add_argument("--routes", action="store_true", help="best-path events (default: both kinds)")
    watch.add_argument("--count", type=_positive_int, metavar="N", help="stop after N events")


# --- argument types: argparse turns their ArgumentTypeError into a usage error (exit 2) -----------------


def _host_port(text: str) -> str:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def _bounded_int(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} must be from {low} to {high}, not {value}")
    return value


def _asn(text: str) -> int:
    return _bounded_int(text, 1, 2**32 - 1, "an AS number")


def _uint32(text: str) -> int:
    return _bounded_int(text, 0, 2**32 - 1, "the value")


def _hold_time(text: str) -> int:
    # RFC 4271 §4.2: zero (no keepalives) or at least three seconds; 0 here means the node's default.
    value = _bounded_int(text, 0, 65535, "the hold time")
    if value in (1, 2):
        raise argparse.ArgumentTypeError("the hold time must be 0 or at least 3 seconds (RFC 4271 §4.2)")
    return value


def _add_paths(text: str) -> int:
    return _bounded_int(text, 0, 64, "the paths per name")


def _batch_size(text: str) -> int:
    return _bounded_int(text, 1, 10000, "the batch size")


def _positive_int(text: str) -> int:
    return _bounded_int(text, 1, 2**31 - 1, "the number")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object such as \'{{"text": "hi"}}\', not {text!r}')
    return text


# --- running --------------------------------------------------------------------------------------------


def run_admin_command(args: argparse.Namespace) -> int:
    """Run the admin command parsed into `args`; returns the exit code, never raises for expected errors."""
    try:
        address = _admin_address(args)
        token = args.token or os.environ.get(TOKEN_ENV) or None
        with AdminClient(address, token, args.timeout) as client:
            handler: Handler = args.admin_handler
            return handler(client, args)
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except AdminError as error:
        return _fail(*_describe(error))
    except KeyboardInterrupt:
        return 130  # the shell's convention for SIGINT
    except BrokenPipeError:
        # The reader went away (`... | head`): nothing left to say, and Python must not complain at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _admin_address(args: argparse.Namespace) -> str:
    if args.admin:
        return str(args.admin)
    from_env = os.environ.get(ADMIN_ENV)
    if not from_env:
        return DEFAULT_ADMIN
    try:
        return _host_port(from_env)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"${ADMIN_ENV}: {error}") from None


def _describe(error: AdminError) -> tuple[str, int]:
    if error.unreachable:
        return f"{error.message} (is the node running? use --admin HOST:PORT)", EXIT_UNREACHABLE
    exit_code = _STATUS_EXITS.get(error.code, EXIT_FAILED)
    if exit_code == EXIT_AUTH:
        return f"authentication failed: {error.message} (give the node's token with --token)", exit_code
    return error.message, exit_code


def _fail(message: str, exit_code: int) -> int:
    one_line = " ".join(message.splitlines())  # a node's message may hold newlines; scripts read one line
    print(f"agentmesh: {one_line}", file=sys.stderr)
    return exit_code


# --- output helpers -------------------------------------------------------------------------------------


def _to_dict(message: Message) -> dict[str, Any]:
    document = MessageToDict(
        message,
        preserving_proto_field_name=True,
        # Every field, empty ones included, so that scripts find the same keys every time.
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return _in_field_order(message, document)


def _in_field_order(message: Message, document: dict[str, Any]) -> dict[str, Any]:
    """The keys in the order of the .proto file: MessageToDict puts the empty fields it adds last."""
    ordered: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            inner = getattr(message, field.name)
            if isinstance(value, list):
                value = [_in_field_order(m, v) for m, v in zip(inner, value, strict=True)]
            else:
                value = _in_field_order(inner, value)
        ordered[field.name] = value
    return ordered


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def _table(headers: Sequence[str] | None, rows: Iterable[Sequence[str]]) -> str:
    """Columns aligned on their widest cell, two spaces apart; no header line when `headers` is None."""
    lines = [list(row) for row in rows]
    if headers is not None:
        lines.insert(0, list(headers))
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    padded = (
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines
    )
    return "\n".join(line.rstrip() for line in padded)


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return _table(None, pairs)


def _duration(seconds: float) -> str:
    """Seconds as an operator reads them at a glance: 42s, 5m03s, 2h05m, 3d04h."""
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _state(state: admin_pb2.SessionState.ValueType) -> str:
    """SESSION_STATE_OPEN_SENT -> OpenSent, as RFC 4271 spells the states."""
    if state == admin_pb2.SESSION_STATE_UNSPECIFIED:
        return "-"
    words = admin_pb2.SessionState.Name(state).removeprefix("SESSION_STATE_").split("_")
    return "".join(word.capitalize() for word in words)


def _optional(attributes: bgp_pb2.PathAttributes, field: Literal["med", "local_pref"]) -> str:
    return str(getattr(attributes, field)) if attributes.HasField(field) else "-"


# --- node and peers -------------------------------------------------------------------------------------


def _node(client: AdminClient, args: argparse.Namespace) -> int:
    node = client.get_node()
    if args.json:
        _print_json(_to_dict(node))
        return EXIT_OK
    rib = node.rib
    rows = [
        ("name", node.name),
        ("AS", str(node.asn)),
        ("router id", node.router_id),
        ("listen", node.listen_address),
        ("advertise", node.advertise_address),
        ("version", node.version),
        ("uptime", _duration(node.uptime_seconds)),
        ("ready", "yes" if node.ready else "no"),
        (
            "routes",
            f"loc-rib {rib.loc_rib}, adj-rib-in {rib.adj_rib_in}, adj-rib-out {rib.adj_rib_out},"
            f" attribute sets {rib.attribute_sets}",
        ),
    ]
    backends = [_backend(backend) for backend in node.backends] or ["none"]
    rows += [("backends" if i == 0 else "", text) for i, text in enumerate(backends)]
    print(_pairs(rows))
    return EXIT_OK


def _backend(backend: admin_pb2.BackendInfo) -> str:
    text = f"{backend.name} ({backend.protocol}, namespace {backend.namespace or '-'}): "
    text += ", ".join(backend.agents) or "no agents"
    return text + (f"; last discovery failed: {backend.last_error}" if backend.last_error else "")


def _peers(client: AdminClient, args: argparse.Namespace) -> int:
    peers = list(client.list_peers())
    if args.json:
        _print_json([_to_dict(peer) for peer in peers])
    elif not peers:
        print("no peers configured")
    else:
        headers = ("ADDRESS", "AS", "STATE", "UP/DOWN", "RECEIVED", "ADVERTISED", "DESCRIPTION")
        print(_table(headers, [_peer_row(peer) for peer in peers]))
    return EXIT_OK


def _peer_row(peer: admin_pb2.Peer) -> tuple[str, ...]:
    state = _state(peer.state) if peer.enabled else f"{_state(peer.state)} (disabled)"
    config = peer.config
    asn = f"{config.asn} iBGP" if peer.internal else str(config.asn)
    return (
        config.address,
        asn,
        state,
        _duration(peer.seconds_in_state),
        str(peer.routes_received),
        str(peer.routes_advertised),
        config.description,
    )


def _done(args: argparse.Namespace, text: str, response: Message | None = None) -> int:
    """Report a change: the text for people, the response (often empty) for --json."""
    if args.json:
        _print_json(_to_dict(response) if response is not None else {})
    else:
        print(text)
    return EXIT_OK


def _peer_add(client: AdminClient, args: argparse.Namespace) -> int:
    config = admin_pb2.PeerConfig(
        address=args.address,
        asn=args.asn,
        description=args.description,
        passive=args.passive,
        hold_time=args.hold_time,
        route_reflector_client=args.rr_client,
        add_paths=args.add_paths,
        tls_name=args.tls_name,
    )
    client.add_peer(config)
    return _done(args, f"peer {args.address} added")


def _peer_update(client: AdminClient, args: argparse.Namespace) -> int:
    options = {
        "asn": args.asn,
        "description": args.description,
        "passive": args.passive,
        "hold_time": args.hold_time,
        "route_reflector_client": args.rr_client,
        "add_paths": args.add_paths,
        "tls_name": args.tls_name,
    }
    changes = {field: value for field, value in options.items() if value is not None}
    if not changes:
        raise UsageError(
            "nothing to change: give --asn, --description, --[no-]passive, --hold-time, --[no-]rr-client,"
            " --add-paths or --tls-name"
        )
    # UpdatePeer replaces the whole configuration, so start from the current one: options not given stay.
    current = [peer for peer in client.list_peers(args.address) if peer.config.address == args.address]
    if not current:
        raise AdminError(grpc.StatusCode.NOT_FOUND, f"no peer {args.address}")
    config = admin_pb2.PeerConfig()
    config.CopyFrom(current[0].config)
    for field, value in changes.items():
        setattr(config, field, value)
    reset = client.update_peer(config)
    outcome = "the session was reset" if reset else "the session was kept"
    return _done(
        args, f"peer {args.address} updated; {outcome}", admin_pb2.UpdatePeerResponse(session_reset=reset)
    )


def _peer_del(client: AdminClient, args: argparse.Namespace) -> int:
    client.delete_peer(args.address)
    return _done(args, f"peer {args.address} deleted")


def _peer_reset(client: AdminClient, args: argparse.Namespace) -> int:
    if args.soft and args.message:
        raise UsageError("--message is sent only with a hard reset; drop --soft or --message")
    soft = _SOFT_RESETS[args.soft] if args.soft else admin_pb2.SOFT_RESET_DIRECTION_UNSPECIFIED
    client.reset_peer(args.address, soft, args.message)
    kind = f"soft reset ({args.soft})" if args.soft else "hard reset"
    return _done(args, f"peer {args.address}: {kind} done")


def _peer_enable(client: AdminClient, args: argparse.Namespace) -> int:
    client.enable_peer(args.address)
    return _done(args, f"peer {args.address} enabled")


def _peer_disable(client: AdminClient, args: argparse.Namespace) -> int:
    client.disable_peer(args.address, args.message)
    return _done(args, f"peer {args.address} disabled")


# --- routes and agents ----------------------------------------------------------------------------------

_ROUTE_HEADERS = ("", "NAME", "NEXT HOP", "AS PATH", "MED", "LOCAL PREF", "PEER")


def _marker(route: admin_pb2.Route) -> str:
    """`*` best, `x` filtered by import policy, `d` held back by damping; `s` added when stale."""
    marker = "*" if route.best else "x" if route.filtered else "d" if route.suppressed else ""
    return marker + ("s" if route.stale else "")


def _route_row(route: admin_pb2.Route) -> tuple[str, ...]:
    attributes = route.attributes
    return (
        _marker(route),
        route.name,
        attributes.next_hop or "-",
        " ".join(str(asn) for asn in attributes.as_path) or "-",
        _optional(attributes, "med"),
        _optional(attributes, "local_pref"),
        route.peer or "local",
    )


def _routes(client: AdminClient, args: argparse.Namespace) -> int:
    table = _TABLES[args.table]
    if table != admin_pb2.TABLE_LOC_RIB and not args.peer:
        raise UsageError(f"--table {args.table} lists one neighbour's table: give --peer ADDRESS")
    routes = list(client.list_routes(table, args.peer, args.name, args.batch_size, args.explain))
    if args.json:
        _print_json([_to_dict(route) for route in routes])
    elif not routes:
        print("no routes")
    elif args.explain:
        headers = (*_ROUTE_HEADERS, "POLICY")
        print(_table(headers, [(*_route_row(route), _trail_text(route)) for route in routes]))
    else:
        print(_table(_ROUTE_HEADERS, [_route_row(route) for route in routes]))
    return EXIT_OK


#: A trail's final default step as the engine words it (`TrailStep.__str__`).
_DEFAULT_STEPS = {"default_accepted": "default accept", "default_rejected": "default reject"}


def _trail_text(route: admin_pb2.Route) -> str:
    """A route's policy trail on one line: `prefer-eu/eu continued [local_pref=200]; default accept`."""
    steps = []
    for step in route.policy_trail:
        if step.policy:
            text = f"{step.policy}/{step.statement} {step.outcome}"
        else:
            text = _DEFAULT_STEPS.get(step.outcome, step.outcome)
        steps.append(text + (f" [{', '.join(step.actions)}]" if step.actions else ""))
    return "; ".join(steps) or "-"


def _policy_show(client: AdminClient, args: argparse.Namespace) -> int:
    text = client.get_policy()
    if args.json:
        _print_json({"policy_yaml": text})
    else:
        print(text.rstrip("\n") if text else "no routing policy (every route is accepted unchanged)")
    return EXIT_OK


def _policy_set(client: AdminClient, args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror or error}") from None
    if args.file != "-" and text.strip():
        text = _policy_section(text, args.file)
    try:
        reevaluated = client.set_policy(text)
    except AdminError as error:
        # The node parsed text it was sent: name the file the operator knows instead.
        error.message = error.message.replace("<policy>", "-" if args.file == "-" else args.file)
        raise
    if args.json:
        _print_json({"reevaluated": reevaluated})
    else:
        print(f"policy replaced; {reevaluated} received routes evaluated again")
    return EXIT_OK


def _policy_section(text: str, path: str) -> str:
    """The `policy` section of a file that may be a whole node configuration."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not YAML: {error}") from None
    if isinstance(document, dict) and "policy" in document and len(document) > 1:
        return yaml.safe_dump({"policy": document["policy"]}, sort_keys=False)
    return text


def _resolve(client: AdminClient, args: argparse.Namespace) -> int:
    response = client.resolve_agent(args.name)
    if args.json:
        _print_json(_to_dict(response))
        return EXIT_OK if response.found else EXIT_NOT_FOUND
    if not response.found:
        return _fail(f"no route for {args.name}", EXIT_NOT_FOUND)
    agent = response.best.attributes.agent
    rows = [("name", args.name), ("entry", response.entry), ("reason", response.reason)]
    if len(response.next_hops) > 1:
        rows.append(("multipath", " ".join(response.next_hops)))
    if agent.description or agent.capabilities:
        rows.append(("agent", " ".join([agent.description, *(f"[{c}]" for c in agent.capabilities)]).strip()))
    print(_pairs(rows))
    print()
    candidates = (response.best, *response.alternatives)
    if any(route.policy_trail for route in candidates):
        headers = (*_ROUTE_HEADERS, "POLICY")
        print(_table(headers, [(*_route_row(r), _trail_text(r)) for r in candidates]))
    else:
        print(_table(_ROUTE_HEADERS, [_route_row(r) for r in candidates]))
    return EXIT_OK


def _announce(client: AdminClient, args: argparse.Namespace) -> int:
    agent = bgp_pb2.AgentAttributes(description=args.description, capabilities=args.capability)
    client.announce_agent(args.names, agent, args.med)
    return _done(args, f"announced {', '.join(args.names)}")


def _withdraw(client: AdminClient, args: argparse.Namespace) -> int:
    unknown = client.withdraw_agent(args.names)
    withdrawn = [name for name in args.names if name not in unknown]
    if withdrawn or args.json:
        _done(args, f"withdrew {', '.join(withdrawn)}")
    if unknown:
        return _fail(
            f"not originated by this node, nothing to withdraw: {', '.join(unknown)}", EXIT_NOT_FOUND
        )
    return EXIT_OK


def _call(client: AdminClient, args: argparse.Namespace) -> int:
    call = forwarding_pb2.AgentCall(name=args.name, hop_limit=args.hop_limit or 0)
    if args.message is not None and args.args is not None:
        raise UsageError("give a MESSAGE or --args, not both")
    if args.args is not None:
        call.arguments_json = args.args
    elif args.message is not None:
        call.chat.messages.add(role="user", content=args.message)
    else:
        raise UsageError("give a MESSAGE for a chat agent or --args JSON-OBJECT for a tool-like agent")
    # Without --call-timeout the node gets the whole --timeout, so that a slow agent is reported by the
    # node (with where time ran out) rather than as a bare gRPC deadline.
    response = client.call_agent(call, args.call_timeout or args.timeout)
    failed = response.WhichOneof("outcome") != "result"
    if args.json:
        _print_json(_to_dict(response))
    elif not failed:
        print(response.result.text)
    if not failed:
        return EXIT_OK
    return _call_failed(args, response.error)


def _call_failed(args: argparse.Namespace, error: forwarding_pb2.CallError) -> int:
    not_found = error.code == forwarding_pb2.CALL_ERROR_CODE_NOT_FOUND
    exit_code = EXIT_NOT_FOUND if not_found else EXIT_FAILED
    if args.json:
        return exit_code
    kind = forwarding_pb2.CallErrorCode.Name(error.code).removeprefix("CALL_ERROR_CODE_").lower()
    return _fail(
        f"call to {args.name} failed at {error.node or 'the node'}: {error.reason} ({kind})", exit_code
    )


# --- watch ----------------------------------------------------------------------------------------------


def _watch(client: AdminClient, args: argparse.Namespace) -> int:
    expected = 1
    seen = 0
    with contextlib.closing(client.watch_events(peers=args.peers, routes=args.routes)) as events:
        try:
            for event in events:
                if event.sequence != expected:
                    # Sequence numbers are consecutive per stream: a gap means the node lost events.
                    _report_gap(expected, event.sequence)
                expected = event.sequence + 1
                print(json.dumps(_to_dict(event)) if args.json else _event_line(event), flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    break
        except KeyboardInterrupt:
            pass  # the operator is done watching: a normal end
    return EXIT_OK


def _report_gap(expected: int, received: int) -> None:
    lost = (
        f"event #{expected} was"
        if received == expected + 1
        else f"events #{expected} to #{received - 1} were"
    )
    print(f"agentmesh: {lost} lost (the node's numbering jumped to #{received})", file=sys.stderr, flush=True)


def _event_line(event: admin_pb2.WatchEventsResponse) -> str:
    kind = event.WhichOneof("event")
    if kind == "peer":
        return f"#{event.sequence} peer {_peer_event(event.peer)}"
    if kind == "route":
        return f"#{event.sequence} route {_route_event(event.route)}"
    if kind == "end_of_snapshot":
        count = event.end_of_snapshot.events
        return f"#{event.sequence} end of snapshot ({count} event{'' if count == 1 else 's'})"
    return f"#{event.sequence} unknown event"  # from a newer node: say so rather than fail


def _peer_event(peer: admin_pb2.PeerEvent) -> str:
    change = _state(peer.new_state)
    if peer.old_state != admin_pb2.SESSION_STATE_UNSPECIFIED:
        change = f"{_state(peer.old_state)} -> {change}"
    text = f"{peer.address} {change}{_reason(peer.reason)}"
    if peer.HasField("notification"):
        note = peer.notification
        text += f" NOTIFICATION {note.code_name or note.code}/{note.subcode_name or note.subcode}"
        text += f" {note.communication!r}" if note.communication else ""
    return text


def _route_event(route: admin_pb2.RouteEvent) -> str:
    if not route.HasField("best"):
        return f"{route.name} unreachable{_reason(route.reason)}"
    return f"{route.name} via {route.best.attributes.next_hop or 'local'}{_reason(route.reason)}"


def _reason(reason: str) -> str:
    return f" ({reason})" if reason else ""
