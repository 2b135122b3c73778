"""The operator CLI against a real node: every admin command in both output modes, and every exit code.

One pair of nodes serves the whole module: a (AS 65001, hosting demo.echo, with its admin API) peering
with b (AS 65002, hosting demo.calculator and demo.capitals). The CLI runs as a real subprocess
(`python -m agentmesh.cli ...`) while this event loop keeps serving the nodes. A test that changes the
nodes (a peer, an announcement) undoes the change before it ends, so that the tests stay independent.
Each CLI run costs about a second of start-up, so the human and --json runs of a check go side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
import yaml

from agentmesh.agents.demo import demo_backend
from agentmesh.bgp.messages import AgentAttributes
from agentmesh.client import AdminClient, NodeUnreachable
from agentmesh.config import parse_policy_yaml
from agentmesh.speaker.node import Node
from agentmesh.transport.admin import AdminServer
from agentmesh.v1 import admin_pb2, admin_pb2_grpc
from tests.integration.test_routing_topologies import configs, everywhere, link
from tests.support.nodes import running
from tests.support.processes import REPO, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "s3cret-cli-test-token"
DEMO = ("demo.calculator", "demo.capitals", "demo.echo")


@dataclass(frozen=True)
class Mesh:
    a: Node
    b: Node
    admin: str  # host:port of a's admin API


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.out)

    def error_line(self) -> str:
        """The one `agentmesh: ...` line an error prints on stderr."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("agentmesh: "), self
        return lines[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh() -> AsyncIterator[Mesh]:
    async with contextlib.AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(running(*configs([65001, 65002])))
        await link([a, b], [(0, 1)])
        await a.host(demo_backend("echo"), "demo")
        await b.host(demo_backend("calculator", "capitals"), "demo")
        await everywhere([a, b], "demo.echo")
        await everywhere([a, b], "demo.capitals")
        admin = AdminServer(a, "127.0.0.1:0")
        port = await admin.start()
        stack.push_async_callback(admin.stop)
        yield Mesh(a, b, f"127.0.0.1:{port}")


def _environment(extra: dict[str, str] | None) -> dict[str, str]:
    # The developer's own AGENTMESH_ADMIN* must not leak into the runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMESH_ADMIN")}
    return env | (extra or {})


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentmesh.cli",
        *args,
        cwd=REPO,
        env=_environment(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def cli(*args: str, admin: str | None = None, env: dict[str, str] | None = None) -> Run:
    """`agentmesh ARGS... [--admin ADMIN]` as a subprocess, to its end."""
    argv = (*args, "--admin", admin) if admin else args
    started = time.monotonic()
    proc = await spawn(*argv, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    run = Run(argv, proc.returncode, out.decode(), err.decode(), time.monotonic() - started)
    assert "Traceback" not in run.err, run
    return run


async def both(*args: str, admin: str | None = None, env: dict[str, str] | None = None) -> tuple[Run, Run]:
    """The same command for people and with --json, run side by side."""
    human, as_json = await asyncio.gather(
        cli(*args, admin=admin, env=env), cli(*args, "--json", admin=admin, env=env)
    )
    return human, as_json


def rows(run: Run) -> list[list[str]]:
    """The lines of a table, split on runs of two or more spaces (cells hold single spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in run.out.splitlines() if line.strip()]


# --- node, peers, routes --------------------------------------------------------------------------------


async def test_node_describes_the_node(mesh: Mesh) -> None:
    human, as_json = await both("node", admin=mesh.admin)
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    fields = {row[0]: row[1] for row in rows(human) if len(row) == 2}
    assert fields["name"] == "n0" and fields["AS"] == "65001" and fields["ready"] == "yes"
    assert fields["advertise"] == mesh.a.advertise_address
    assert "demo.echo" in fields["backends"]
    node = as_json.json()
    assert (node["name"], node["asn"], node["router_id"]) == ("n0", 65001, "10.0.0.1")
    assert node["ready"] is True and node["rib"]["loc_rib"] >= 3
    assert node["backends"][0]["agents"] == ["demo.echo"]


async def test_peers_lists_the_neighbour_and_its_session(mesh: Mesh) -> None:
    human, as_json = await both("peers", admin=mesh.admin)
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    header, *table = rows(human)
    assert header == ["ADDRESS", "AS", "STATE", "UP/DOWN", "RECEIVED", "ADVERTISED", "DESCRIPTION"]
    assert table == [[mesh.b.advertise_address, "65002", "Established", table[0][3], "2", "1", "n1"]]
    assert table[0][3].endswith("s") or table[0][3].endswith("m")  # humanised, e.g. 4s or 1m05s
    [peer] = as_json.json()
    assert peer["config"] == {
        "address": mesh.b.advertise_address,
        "asn": 65002,
        "description": "n1",
        "passive": False,
        "hold_time": 0,
        "route_reflector_client": False,
        "add_paths": 0,
        "tls_name": "",
    }
    assert peer["state"] == "SESSION_STATE_ESTABLISHED" and peer["enabled"] is True
    assert (peer["sending_paths"], peer["receiving_paths"]) == (0, False)  # neither side sends ADD-PATH
    assert (peer["routes_received"], peer["routes_advertised"]) == (2, 1)


async def test_routes_lists_the_loc_rib_with_the_best_paths_marked(mesh: Mesh) -> None:
    human, as_json = await both("routes", admin=mesh.admin)
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    header, *table = rows(human)
    assert header == [
        "NAME",
        "NEXT HOP",
        "AS PATH",
        "MED",
        "LOCAL PREF",
        "PEER",
    ]  # the marker column is blank
    b = mesh.b.advertise_address
    assert table == [
        ["*", "demo.calculator", b, "65002", "-", "-", b],
        ["*", "demo.capitals", b, "65002", "-", "-", b],
        ["*", "demo.echo", mesh.a.advertise_address, "-", "-", "-", "local"],  # originated by a
    ]
    routes = as_json.json()
    assert [r["name"] for r in routes] == list(DEMO) and all(r["best"] for r in routes)
    assert routes[0]["attributes"]["as_path"] == [65002] and routes[0]["peer"] == b
    assert routes[2]["peer"] == ""  # originated here


async def test_routes_of_one_table_filtered_by_name_in_small_batches(mesh: Mesh) -> None:
    b = mesh.b.advertise_address
    adj_out, filtered = await asyncio.gather(
        cli("routes", "--table", "adj-out", "--peer", b, admin=mesh.admin),
        cli("routes", "--name", "demo.c*", "--batch-size", "1", "--json", admin=mesh.admin),
    )
    assert (adj_out.code, filtered.code) == (0, 0), (adj_out, filtered)
    assert [row[1] for row in rows(adj_out)[1:]] == ["demo.echo"]
    assert rows(adj_out)[1][6] == b  # in an Adj-RIB-Out the peer is the one advertised to
    assert [r["name"] for r in filtered.json()] == ["demo.calculator", "demo.capitals"]


# --- resolve and call -----------------------------------------------------------------------------------


async def test_resolve_shows_the_entry_the_best_path_and_why(mesh: Mesh) -> None:
    human, as_json = await both("resolve", "demo.capitals", admin=mesh.admin)
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    table = rows(human)
    fields = {row[0]: row[1] for row in table if len(row) == 2}
    assert fields["entry"] == "demo.capitals" and fields["reason"] == "only_path"
    assert [
        "*",
        "demo.capitals",
        mesh.b.advertise_address,
        "65002",
        "-",
        "-",
        mesh.b.advertise_address,
    ] in table
    answer = as_json.json()
    assert answer["found"] is True and answer["entry"] == "demo.capitals"
    assert answer["best"]["attributes"]["next_hop"] == mesh.b.advertise_address
    assert answer["reason"] == "only_path" and answer["alternatives"] == []


async def test_resolve_of_a_name_without_a_route_exits_4(mesh: Mesh) -> None:
    human, as_json = await both("resolve", "demo.nothing", admin=mesh.admin)
    assert (human.code, as_json.code) == (4, 4), (human, as_json)
    assert "no route for demo.nothing" in human.error_line() and human.out == ""
    assert as_json.json()["found"] is False


async def test_call_prints_the_reply_or_the_result_as_json(mesh: Mesh) -> None:
    human, as_json = await asyncio.gather(
        cli("call", "demo.capitals", "France", "--hop-limit", "4", "--call-timeout", "5", admin=mesh.admin),
        cli("call", "demo.calculator", "--args", '{"expression": "6 * 7"}', "--json", admin=mesh.admin),
    )
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    assert human.out == "The capital of France is Paris.\n"
    answer = as_json.json()
    assert answer["result"]["text"] == "6 * 7 = 42" and answer["result"]["served_by"] == "n1"
    assert answer["result"]["trace"] == ["10.0.0.1", "10.0.0.2"] and answer["elapsed_seconds"] > 0


async def test_a_call_to_a_name_without_a_route_exits_4(mesh: Mesh) -> None:
    human, as_json = await both("call", "demo.nothing", "hi", admin=mesh.admin)
    assert (human.code, as_json.code) == (4, 4), (human, as_json)
    assert "call to demo.nothing failed at n0" in human.error_line()
    assert as_json.json()["error"]["code"] == "CALL_ERROR_CODE_NOT_FOUND"


async def test_a_call_that_fails_on_the_way_exits_1_and_says_where(mesh: Mesh) -> None:
    arguments = '{"expression": "1 / 0"}'
    human, as_json = await both(
        "call", "demo.calculator", "--args", arguments, "--hop-limit", "1", admin=mesh.admin
    )
    assert (human.code, as_json.code) == (1, 1), (human, as_json)
    assert "failed at n1" in human.error_line() and "(backend_error)" in human.error_line()
    error = as_json.json()["error"]
    assert (error["code"], error["node"]) == ("CALL_ERROR_CODE_BACKEND_ERROR", "n1")
    assert "division by zero" in error["reason"]


# --- announce and withdraw ------------------------------------------------------------------------------


async def test_announce_then_withdraw_for_people_and_as_json(mesh: Mesh) -> None:
    names = ["ops.one", "ops.two", "ops.three"]
    try:
        announced, announced_json = await asyncio.gather(
            cli(
                "announce",
                *names[:2],
                "--description",
                "ops",
                "--capability",
                "x",
                "--med",
                "7",
                admin=mesh.admin,
            ),
            cli("announce", names[2], "--json", admin=mesh.admin),
        )
        assert announced.code == 0 and announced.out == "announced ops.one, ops.two\n", announced
        assert announced_json.code == 0 and announced_json.json() == {}, announced_json
        await everywhere([mesh.b], "ops.two")
        await everywhere([mesh.b], "ops.three")
        attrs = (await mesh.b.loc_rib())["ops.two"].attrs
        assert (attrs.med, attrs.agent.description, attrs.agent.capabilities) == (7, "ops", ("x",))

        withdrawn, withdrawn_json = await asyncio.gather(
            cli("withdraw", *names[:2], admin=mesh.admin),
            cli("withdraw", names[2], "--json", admin=mesh.admin),
        )
        assert withdrawn.code == 0 and withdrawn.out == "withdrew ops.one, ops.two\n", withdrawn
        assert withdrawn_json.code == 0 and withdrawn_json.json() == {}, withdrawn_json
        for name in names:
            await everywhere([mesh.a, mesh.b], name, present=False)
    finally:
        await mesh.a.withdraw_agents(names)


# --- watch ----------------------------------------------------------------------------------------------


async def test_watch_stops_after_count_events(mesh: Mesh) -> None:
    human, as_json = await both("watch", "--peers", "--count", "2", admin=mesh.admin)
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    first_line, second_line = human.out.splitlines()
    # In the snapshot a peer has its current state only; the reason of its last change may follow.
    assert first_line.startswith(f"#1 peer {mesh.b.advertise_address} Established")
    assert second_line == "#2 end of snapshot (1 event)"
    first, second = (json.loads(line) for line in as_json.out.splitlines())
    assert first["sequence"] == 1 and first["peer"]["new_state"] == "SESSION_STATE_ESTABLISHED"
    assert second == {"sequence": 2, "end_of_snapshot": {"events": 1}}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
async def test_watch_prints_live_events_until_interrupted(mesh: Mesh, as_json: bool) -> None:
    name = f"ops.watched{int(as_json)}"
    proc = await spawn("watch", "--routes", *(["--json"] if as_json else []), "--admin", mesh.admin)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        lines = [await _line_with(proc.stdout, "end of snapshot" if not as_json else "end_of_snapshot")]
        await mesh.a.announce_agents([name], AgentAttributes(description="watched"))
        lines.append(await _line_with(proc.stdout, name))
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 10)
        err = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await mesh.a.withdraw_agents([name])
        await everywhere([mesh.b], name, present=False)
    assert code == 0 and "Traceback" not in err, err
    if as_json:
        end, live = (json.loads(line) for line in lines)
        assert live["sequence"] == end["sequence"] + 1 == end["end_of_snapshot"]["events"] + 2
        assert live["route"]["name"] == name and live["route"]["reason"] == "new_route"
    else:
        assert lines[0] == "#4 end of snapshot (3 events)"  # the three demo names
        assert lines[1] == f"#5 route {name} via {mesh.a.advertise_address} (new_route)"


async def _line_with(stream: asyncio.StreamReader, text: str) -> str:
    """The first line that contains `text`; the earlier ones are dropped."""
    async with asyncio.timeout(15):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"the watch ended before a line with {text!r}"
            if text in line:
                return line.rstrip("\n")


class _Skipping(admin_pb2_grpc.AdminServiceServicer):
    """An AdminService whose event numbering skips #2 and #3, as a node that lost events would."""

    async def WatchEvents(
        self, request: admin_pb2.WatchEventsRequest, context: Any
    ) -> AsyncIterator[admin_pb2.WatchEventsResponse]:
        yield admin_pb2.WatchEventsResponse(sequence=1, end_of_snapshot=admin_pb2.EndOfSnapshot())
        route = admin_pb2.RouteEvent(name="x", reason="withdrawn")
        yield admin_pb2.WatchEventsResponse(sequence=4, route=route)


async def test_watch_reports_a_gap_in_the_numbering() -> None:
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(_Skipping(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        run = await cli("watch", "--count", "2", admin=f"127.0.0.1:{port}")
    finally:
        await server.stop(None)
    assert run.code == 0 and run.out.splitlines() == [
        "#1 end of snapshot (0 events)",
        "#4 route x unreachable (withdrawn)",
    ]
    assert run.error_line() == "agentmesh: events #2 to #3 were lost (the node's numbering jumped to #4)"


# --- peers: every action, then the errors ---------------------------------------------------------------


async def test_every_peer_action_for_people_and_as_json(mesh: Mesh) -> None:
    """Two neighbours where nothing listens, steered side by side: one with text output, one with --json."""
    ghost, other = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    while other == ghost:
        other = f"127.0.0.1:{free_port()}"
    async with _forgotten_after(mesh.a, ghost), _forgotten_after(mesh.a, other):
        await asyncio.gather(_steer_for_people(mesh, ghost), _steer_as_json(mesh, other))
    assert {p.address for p in await mesh.a.peers()} == {mesh.b.advertise_address}


async def _steer_for_people(mesh: Mesh, ghost: str) -> None:
    steps = [
        (("add", ghost, "--asn", "65009", "--description", "ghost"), f"peer {ghost} added"),
        (("update", ghost, "--description", "phantom"), "updated; the session was kept"),
        (("update", ghost, "--asn", "65010"), "updated; the session was reset"),
        (("reset", ghost, "--message", "bye"), f"peer {ghost}: hard reset done"),
        (("disable", ghost, "--message", "maintenance"), f"peer {ghost} disabled"),
    ]
    for args, text in steps:
        await _expect(text, "peer", *args, admin=mesh.admin)
    listed = await cli("peers", admin=mesh.admin)
    row = next(row for row in rows(listed) if row[0] == ghost)
    assert (row[1], row[2], row[6]) == ("65010", "Idle (disabled)", "phantom"), listed
    # The node refuses what the neighbour's state does not allow: exit 1, and it says why.
    refused = await cli("peer", "reset", ghost, "--soft", "out", admin=mesh.admin)
    assert refused.code == 1 and "disabled" in refused.error_line(), refused
    await _expect(f"peer {ghost} enabled", "peer", "enable", ghost, admin=mesh.admin)
    await _expect(f"peer {ghost} deleted", "peer", "del", ghost, admin=mesh.admin)


async def _steer_as_json(mesh: Mesh, ghost: str) -> None:
    b = mesh.b.advertise_address
    add = (
        "add",
        ghost,
        "--asn",
        "65009",
        "--passive",
        "--hold-time",
        "30",
        "--add-paths",
        "4",
        "--tls-name",
        "g.test",
    )
    for args, response in [(add, {}), (("update", ghost, "--no-passive"), {"session_reset": True})]:
        await _expect_json(response, "peer", *args, admin=mesh.admin)
    for args in [("reset", ghost), ("reset", b, "--soft", "out"), ("disable", ghost)]:
        await _expect_json({}, "peer", *args, admin=mesh.admin)
    listed = await cli("peers", "--json", admin=mesh.admin)
    peer = next(p for p in listed.json() if p["config"]["address"] == ghost)
    assert (peer["enabled"], peer["config"]["hold_time"], peer["config"]["passive"]) == (False, 30, False)
    assert (peer["config"]["add_paths"], peer["config"]["tls_name"]) == (4, "g.test")
    for args in [("enable", ghost), ("del", ghost)]:
        await _expect_json({}, "peer", *args, admin=mesh.admin)


async def test_an_unknown_peer_exits_4(mesh: Mesh) -> None:
    unknown = "127.0.0.1:9"
    runs = await asyncio.gather(
        cli("peer", "del", unknown, admin=mesh.admin),
        cli("peer", "disable", unknown, "--json", admin=mesh.admin),
        # update reads the current configuration first: the CLI's own lookup says not found.
        cli("peer", "update", unknown, "--asn", "65009", admin=mesh.admin),
    )
    for run in runs:
        assert run.code == 4 and run.out == "" and unknown in run.error_line(), run


async def _expect(text: str, *args: str, admin: str) -> None:
    run = await cli(*args, admin=admin)
    assert run.code == 0 and text in run.out, run


async def _expect_json(document: object, *args: str, admin: str) -> None:
    run = await cli(*args, "--json", admin=admin)
    assert run.code == 0 and run.json() == document, run


@contextlib.asynccontextmanager
async def _forgotten_after(node: Node, address: str) -> AsyncIterator[None]:
    """Remove the neighbour at the end even when the test failed half way."""
    try:
        yield
    finally:
        if any(p.address == address for p in await node.peers()):
            await node.remove_neighbor(address)


# --- reaching the node, tokens, bad arguments -----------------------------------------------------------


async def test_an_unreachable_node_exits_3_at_once_with_a_hint() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    (human, as_json), from_env = await asyncio.gather(
        both("peers", admin=nowhere), cli("node", env={"AGENTMESH_ADMIN": nowhere})
    )
    for run in (human, as_json, from_env):
        assert run.code == 3 and run.out == "", run
        line = run.error_line()
        assert f"cannot reach the node's admin API at {nowhere}: connection refused" in line
        assert "--admin HOST:PORT" in line
        assert run.seconds < 5  # refused at once, not after the request timeout


async def test_the_peering_port_given_for_the_admin_api_exits_3(mesh: Mesh) -> None:
    run = await cli("node", admin=mesh.a.advertise_address)
    assert run.code == 3 and "does not serve the agentmesh admin API" in run.error_line(), run


async def test_an_address_that_never_answers_exits_3_after_the_timeout() -> None:
    """A listener that accepts connections and says nothing, as a hung process or a wrong service would."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    silent = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        run = await cli("watch", "--timeout", "1", admin=silent)  # a stream without a deadline
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()
    assert run.code == 3 and f"at {silent}: no answer within 1 s" in run.error_line(), run
    assert run.seconds < 6


@pytest_asyncio.fixture(loop_scope="module")  # the server must live in the loop the tests run in
async def guarded(mesh: Mesh) -> AsyncIterator[str]:
    """A second admin API of node a that requires TOKEN."""
    admin = AdminServer(mesh.a, "127.0.0.1:0", token=TOKEN)
    port = await admin.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await admin.stop()


async def test_a_wrong_or_missing_token_exits_5(guarded: str) -> None:
    wrong, missing, right = await asyncio.gather(
        cli("node", "--token", "not-it", admin=guarded),
        cli("peers", "--json", admin=guarded),
        cli("node", "--json", admin=guarded, env={"AGENTMESH_ADMIN_TOKEN": TOKEN}),
    )
    for run in (wrong, missing):
        assert run.code == 5 and run.out == "", run
        assert "authentication failed" in run.error_line() and "--token" in run.error_line()
    assert right.code == 0 and right.json()["name"] == "n0", right


async def test_bad_arguments_exit_2(mesh: Mesh) -> None:
    checks: list[tuple[tuple[str, ...], Callable[[str], bool]]] = [
        (("call", "demo.echo", "--args", "[1, 2]"), lambda err: "expected a JSON object" in err),
        (("call", "demo.echo", "--args", "{oops", "--json"), lambda err: "not valid JSON" in err),
        (("call", "demo.echo"), lambda err: "give a MESSAGE" in err),
        (("peer", "add", "no-port", "--asn", "65009"), lambda err: "'no-port' is not HOST:PORT" in err),
        (("routes", "--table", "adj-in"), lambda err: "give --peer ADDRESS" in err),
        (("peer", "update", "127.0.0.1:9"), lambda err: "nothing to change" in err),
        (
            ("peer", "add", "127.0.0.1:9", "--asn", "65009", "--add-paths", "65"),
            lambda err: "from 0 to 64" in err,
        ),
        # The node finds this one (INVALID_ARGUMENT): an agent name outside the grammar.
        (("announce", "not a name!"), lambda err: "not a name!" in err),
    ]
    runs = await asyncio.gather(*(cli(*args, admin=mesh.admin) for args, _ in checks))
    for run, (_, check) in zip(runs, checks, strict=True):
        assert run.code == 2 and run.out == "" and check(run.err), run


async def test_the_client_raises_typed_errors() -> None:
    """The library under the CLI: an unreachable node is a NodeUnreachable, raised within the timeout."""
    client = AdminClient(f"127.0.0.1:{free_port()}", timeout=2)
    started = time.monotonic()
    with client, pytest.raises(NodeUnreachable) as raised:
        await asyncio.to_thread(client.get_node)
    assert raised.value.unreachable and raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 2


# --- routing policy: show, set, --explain, filtered routes ---------------------------------------------

SHAPE = """\
policy:
  defined_sets:
    names: {capitals: [demo.capitals], calculator: [demo.calculator]}
  policies:
    - name: shape
      statements:
        - name: no-calculator
          conditions: {names: {set: calculator}}
          actions: {route: reject}
        - name: raise-capitals
          conditions: {names: {set: capitals}}
          actions: {local_pref: {set: 200}}
  import: {policies: [shape], default: accept}
"""
NO_POLICY = "no routing policy (every route is accepted unchanged)"
#: The statement step of demo.capitals' trail; a default step follows it.
RAISED = "shape/raise-capitals continued [local_pref=200]"
#: The whole trail as docs/policy.md renders it (`TrailStep.__str__`): the default step is `default accept`.
CAPITALS_TRAIL = f"{RAISED}; default accept"


@contextlib.asynccontextmanager
async def _policy_restored(node: Node, text: str = "") -> AsyncIterator[None]:
    """Put `text` in force (if given) and set the policy back to none at the end, even on failure."""
    try:
        if text:
            await node.set_policy(parse_policy_yaml(text))
        yield
    finally:
        await node.set_policy(parse_policy_yaml(""))


async def cli_with_input(text: str, *args: str, admin: str) -> Run:
    """`agentmesh ARGS... --admin ADMIN` with `text` on its stdin."""
    argv = (*args, "--admin", admin)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentmesh.cli",
        *argv,
        cwd=REPO,
        env=_environment(None),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(text.encode()), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    run = Run(argv, proc.returncode, out.decode(), err.decode(), time.monotonic() - started)
    assert "Traceback" not in run.err, run
    return run


async def test_policy_show_without_a_policy(mesh: Mesh) -> None:
    async with _policy_restored(mesh.a):
        human, as_json = await both("policy", "show", admin=mesh.admin)
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    assert human.out == NO_POLICY + "\n"
    assert as_json.json() == {"policy_yaml": ""}


async def test_policy_set_takes_the_section_of_a_whole_node_config_and_show_prints_it(
    mesh: Mesh, tmp_path: Path
) -> None:
    section = yaml.safe_load(SHAPE)["policy"]
    node_file = tmp_path / "node.yaml"
    node_file.write_text(
        yaml.safe_dump(
            {
                "node": {"name": "n0", "asn": 65001, "router_id": "10.0.0.1", "listen": "127.0.0.1:0"},
                "neighbors": [{"address": mesh.b.advertise_address, "asn": 65002}],
                "policy": section,
            }
        )
    )
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(SHAPE)
    async with _policy_restored(mesh.a):
        replaced = await cli("policy", "set", str(node_file), admin=mesh.admin)
        assert replaced.code == 0, replaced
        # a received demo.calculator and demo.capitals from b: both were evaluated again.
        assert replaced.out == "policy replaced; 2 received routes evaluated again\n"
        assert mesh.a.policy == parse_policy_yaml(SHAPE)

        human, as_json = await both("policy", "show", admin=mesh.admin)
        assert (human.code, as_json.code) == (0, 0), (human, as_json)
        assert parse_policy_yaml(human.out) == parse_policy_yaml(SHAPE)  # the same policy, as YAML
        assert as_json.json() == {"policy_yaml": human.out}

        again = await cli("policy", "set", str(policy_file), "--json", admin=mesh.admin)
        assert again.code == 0 and again.json() == {"reevaluated": 2}, again
        assert mesh.a.policy == parse_policy_yaml(SHAPE)
    assert mesh.a.policy == parse_policy_yaml("")


async def test_policy_set_reads_stdin_and_empty_input_removes_the_policy(mesh: Mesh) -> None:
    async with _policy_restored(mesh.a):
        replaced = await cli_with_input(SHAPE, "policy", "set", "-", admin=mesh.admin)
        assert replaced.code == 0 and "2 received routes evaluated again" in replaced.out, replaced
        assert mesh.a.policy == parse_policy_yaml(SHAPE)
        assert "demo.calculator" not in await mesh.a.loc_rib()

        cleared = await cli_with_input("", "policy", "set", "-", "--json", admin=mesh.admin)
        assert cleared.code == 0 and cleared.json() == {"reevaluated": 2}, cleared
        shown = await cli("policy", "show", admin=mesh.admin)
        assert shown.code == 0 and shown.out == NO_POLICY + "\n", shown
        assert "demo.calculator" in await mesh.a.loc_rib()  # accepted again from the kept Adj-RIB-In


async def test_a_bad_policy_file_exits_2_naming_the_location(mesh: Mesh, tmp_path: Path) -> None:
    undefined = tmp_path / "undefined.yaml"
    undefined.write_text(SHAPE.replace("{set: capitals}", "{set: capitls}"))
    not_yaml = tmp_path / "not-yaml.yaml"
    not_yaml.write_text("policy: [unclosed\n")
    async with _policy_restored(mesh.a):
        human, as_json, broken = await asyncio.gather(
            cli("policy", "set", str(undefined), admin=mesh.admin),
            cli("policy", "set", str(undefined), "--json", admin=mesh.admin),
            cli("policy", "set", str(not_yaml), admin=mesh.admin),
        )
        for run in (human, as_json):
            assert run.code == 2 and run.out == "", run
            line = run.error_line()
            assert "policy.policies[0].statements[1].conditions.names.set" in line, line
            assert "capitls" in line and "capitals" in line, line  # the bad name and the closest defined
        assert broken.code == 2 and broken.out == "", broken
        assert f"{not_yaml} is not YAML" in broken.error_line()
        assert mesh.a.policy == parse_policy_yaml("")  # nothing changed


async def test_routes_explain_shows_each_routes_policy_trail(mesh: Mesh) -> None:
    a, b = mesh.a.advertise_address, mesh.b.advertise_address
    async with _policy_restored(mesh.a, SHAPE):
        human, as_json = await both("routes", "--explain", admin=mesh.admin)
    assert (human.code, as_json.code) == (0, 0), (human, as_json)
    header, *table = rows(human)
    assert header == ["NAME", "NEXT HOP", "AS PATH", "MED", "LOCAL PREF", "PEER", "POLICY"]
    [capitals_row, echo_row] = table
    assert capitals_row[:7] == ["*", "demo.capitals", b, "65002", "-", "200", b]
    assert capitals_row[7].startswith(f"{RAISED}; default accept")  # the wording: see the xfail below
    assert echo_row == ["*", "demo.echo", a, "-", "-", "-", "local", "-"]  # originated here: no policy
    capitals, echo = as_json.json()
    assert capitals["name"] == "demo.capitals" and capitals["attributes"]["local_pref"] == 200
    assert capitals["policy_trail"] == [
        {
            "policy": "shape",
            "statement": "raise-capitals",
            "outcome": "continued",
            "actions": ["local_pref=200"],
        },
        {"policy": "", "statement": "", "outcome": "default_accepted", "actions": []},
    ]
    assert echo["name"] == "demo.echo" and echo["policy_trail"] == []


async def test_the_adj_rib_in_lists_the_routes_import_policy_filtered(mesh: Mesh) -> None:
    b = mesh.b.advertise_address
    async with _policy_restored(mesh.a, SHAPE):
        (human, as_json), explained = await asyncio.gather(
            both("routes", "--table", "adj-in", "--peer", b, admin=mesh.admin),
            cli("routes", "--table", "adj-in", "--peer", b, "--explain", admin=mesh.admin),
        )
    assert (human.code, as_json.code, explained.code) == (0, 0, 0), (human, as_json, explained)
    assert [row[:2] for row in rows(human)[1:]] == [["x", "demo.calculator"], ["*", "demo.capitals"]]
    calculator, capitals = as_json.json()
    assert calculator["name"] == "demo.calculator"
    assert calculator["filtered"] is True and calculator["best"] is False
    assert capitals["name"] == "demo.capitals"
    assert capitals["filtered"] is False and capitals["best"] is True
    trails = {row[-7]: row[-1] for row in rows(explained)[1:]}  # NAME and POLICY
    assert trails["demo.calculator"] == "shape/no-calculator rejected"
    assert trails["demo.capitals"].startswith(f"{RAISED}; default accept")


async def test_resolve_shows_the_policy_trail_of_each_candidate(mesh: Mesh) -> None:
    b = mesh.b.advertise_address
    async with _policy_restored(mesh.a, SHAPE):
        human, as_json = await both("resolve", "demo.capitals", admin=mesh.admin)
        without = await cli("resolve", "demo.echo", admin=mesh.admin)
    assert (human.code, as_json.code, without.code) == (0, 0, 0), (human, as_json, without)
    table = rows(human)
    header = table.index(["NAME", "NEXT HOP", "AS PATH", "MED", "LOCAL PREF", "PEER", "POLICY"])
    [candidate] = table[header + 1 :]
    assert candidate[:7] == ["*", "demo.capitals", b, "65002", "-", "200", b]
    assert candidate[7].startswith(f"{RAISED}; default accept")
    best = as_json.json()["best"]
    assert [step["statement"] for step in best["policy_trail"]] == ["raise-capitals", ""]
    # No candidate went through import policy: no POLICY column at all.
    assert "POLICY" not in without.out and "demo.echo" in without.out


async def test_the_policy_column_renders_the_default_step_as_documented(mesh: Mesh) -> None:
    async with _policy_restored(mesh.a, SHAPE):
        routes, resolved = await asyncio.gather(
            cli("routes", "--explain", "--name", "demo.capitals", admin=mesh.admin),
            cli("resolve", "demo.capitals", admin=mesh.admin),
        )
    assert (routes.code, resolved.code) == (0, 0), (routes, resolved)
    assert rows(routes)[1][-1] == CAPITALS_TRAIL
    assert rows(resolved)[-1][-1] == CAPITALS_TRAIL
