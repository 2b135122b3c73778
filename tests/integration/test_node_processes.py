"""Nodes as separate processes: killed, frozen, restarted and stopped with signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import grpc.aio
import httpx
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from agentmesh.bgp.errors import CeaseSubcode, ErrorCode
from agentmesh.bgp.fsm import Reason, State
from agentmesh.client import AdminClient
from agentmesh.config import NeighborConfig
from agentmesh.speaker.node import Node
from agentmesh.v1 import admin_pb2, forwarding_pb2, forwarding_pb2_grpc
from tests.support.mastra_servers import CURRENT, LEGACY, mastra_server, server0_agents, server1_agents
from tests.support.nodes import node_config, running
from tests.support.processes import NodeProcess, count, free_port, node_processes, write_config

HOLD_TIME = 3


def process_config(tmp_path: Path, port: int, neighbor: Node) -> Path:
    return write_config(
        tmp_path / "a.yaml",
        {
            "node": {"name": "proc-a", "asn": 65001, "router_id": "10.0.0.1", "listen": f"127.0.0.1:{port}"},
            "timers": {"hold_time": HOLD_TIME, "connect_retry_time": 1, "connect_retry_initial": 0.2},
            "neighbors": [{"address": neighbor.advertise_address, "asn": neighbor.asn}],
        },
    )


async def left_established_within(node: Node, address: str, timeout: float) -> Reason:
    watch = node.watch()
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await watch.get()
                if event.address == address and event.old is State.ESTABLISHED:
                    return event.reason
    finally:
        node.unwatch(watch)


async def test_killed_peer_is_noticed_and_the_session_returns_with_it(tmp_path: Path) -> None:
    async with running(node_config("b", 65002, "10.0.0.2")) as (b,):
        port = free_port()
        address = f"127.0.0.1:{port}"
        config = process_config(tmp_path, port, b)
        with node_processes() as started:
            started.append(NodeProcess(["serve", "--config", str(config)], tmp_path / "a1.log"))
            await b.add_neighbor(NeighborConfig(address=address, asn=65001))
            await b.wait_for_state(address, State.ESTABLISHED, 15)

            started[0].signal_group(signal.SIGKILL)
            assert await left_established_within(b, address, HOLD_TIME) is Reason.STREAM_FAILED

            started.append(NodeProcess(["serve", "--config", str(config)], tmp_path / "a2.log"))
            await b.wait_for_state(address, State.ESTABLISHED, 15)

            # SIGTERM: the node tells its peers why it goes (Cease/Administrative Shutdown) and exits 0.
            watch = b.watch()
            started[1].signal_group(signal.SIGTERM)
            assert await started[1].wait_exit() == 0
            event = await asyncio.wait_for(watch.get(), 5)
            assert event.notification is not None
            assert (event.notification.code, event.notification.subcode) == (
                ErrorCode.CEASE,
                CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
            )


async def test_frozen_peer_is_dropped_by_the_hold_timer(tmp_path: Path) -> None:
    async with running(node_config("b", 65002, "10.0.0.2")) as (b,):
        port = free_port()
        address = f"127.0.0.1:{port}"
        with node_processes() as started:
            config = process_config(tmp_path, port, b)
            started.append(NodeProcess(["serve", "--config", str(config)], tmp_path / "a.log"))
            await b.add_neighbor(NeighborConfig(address=address, asn=65001))
            await b.wait_for_state(address, State.ESTABLISHED, 15)

            # A stopped process keeps its sockets open: only the hold timer can notice (RFC 4271 §6.5).
            started[0].signal_group(signal.SIGSTOP)
            try:
                assert await left_established_within(b, address, HOLD_TIME + 1) is Reason.HOLD_TIMER_EXPIRED
            finally:
                started[0].signal_group(signal.SIGCONT)


async def test_invalid_config_exits_2_with_the_problem(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", {"node": {"asn": 23456}, "timers": {"hold_time": 2}})
    with node_processes() as started:
        started.append(NodeProcess(["serve", "--config", str(config)], tmp_path / "bad.log"))
        assert await started[0].wait_exit() == 2
        text = started[0].log_path.read_text()
        assert "node.asn" in text and "AS_TRANS" in text
        assert "timers.hold_time" in text


async def test_up_runs_a_three_as_mesh_until_interrupted(tmp_path: Path) -> None:
    """`agentmesh up`, which `make run` starts: three nodes in three ASes in a line, a call across both."""
    with node_processes() as started:
        up = NodeProcess(["up", "--base-port", "0"], tmp_path / "up.log")  # OS-chosen ports, MCP too
        started.append(up)
        await up.wait_for(lambda events: count(events, "session_established") == 4, timeout=20)
        asns = {e["asn"] for e in up.events() if e["event"] == "node_started"}
        assert asns == {65001, 65002, 65003}
        await up.wait_for(lambda events: count(events, "agent_hosted") == 3, timeout=20)
        assert up.proc.stdout is not None
        banner = [up.proc.stdout.readline().decode() for _ in range(15)]
        node_a = banner[1].split()[2]  # "  node-a  AS65001  127.0.0.1:PORT  hosts demo.echo"
        mcp_url = banner[4].split()[-1]  # "MCP endpoint of node-a (Streamable HTTP): http://..."
        assert "grpcurl" in banner[7] and node_a in banner[7]
        # An MCP client connected to node-a calls the agent hosted two ASes away, on node-c.
        async with Client(mcp_url) as client:
            for _ in range(50):  # the route may still be on its way to node-a
                result = await client.call_tool("call_agent", {"name": "demo.capitals", "message": "Japan"})
                if not result.is_error:
                    break
                await asyncio.sleep(0.1)
            answer = json.loads(result.content[0].text)  # type: ignore[union-attr]
            assert answer["text"] == "The capital of Japan is Tokyo."
            assert answer["served_by"] == "node-c" and len(answer["trace"]) == 3
        # The banner's grpcurl example, done with a gRPC client.
        async with grpc.aio.insecure_channel(node_a) as channel:
            call = forwarding_pb2.AgentCall(
                name="demo.capitals", arguments_json='{"country": "Japan"}', hop_limit=8
            )
            stub = forwarding_pb2_grpc.ForwardingServiceStub(channel)
            response = await stub.Call(forwarding_pb2.CallRequest(call=call), timeout=5)
            assert response.result.text == "The capital of Japan is Tokyo."
            assert response.result.served_by == "node-c" and len(response.result.trace) == 3
        # The banner's CLI example against node-a's admin API, and its metrics endpoint.
        admin_a, metrics_a = banner[9].split()[2], banner[9].split()[4]  # "  node-a  admin A  metrics URL"
        assert banner[12].split() == ["agentmesh", "peers", "--admin", admin_a]
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentmesh.cli", "peers", "--json", "--admin", admin_a, stdout=PIPE
        )
        out, _ = await cli.communicate()
        assert cli.returncode == 0
        [peer] = json.loads(out)
        assert peer["state"] == "SESSION_STATE_ESTABLISHED" and peer["config"]["asn"] == 65002
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(metrics_a)).text
        assert 'agentmesh_calls_total{result="ok",role="ingress"} 2.0' in scraped  # the MCP and the gRPC call
        up.signal_group(signal.SIGINT)
        assert await up.wait_exit() == 0
        assert count(up.events(), "node_stopped") == 3


async def test_make_run_brings_up_the_demo_mesh(tmp_path: Path) -> None:
    """The README's first command, as a user runs it (with OS-chosen ports so tests never collide)."""
    with node_processes() as started:
        run = NodeProcess(
            [],
            tmp_path / "make-run.log",
            command=["make", "--no-print-directory", "run", "ARGS=--base-port 0"],
        )
        started.append(run)
        await run.wait_for(lambda events: count(events, "session_established") == 4, timeout=60)
        run.signal_group(signal.SIGINT)
        await run.wait_exit()
        assert count(run.events(), "node_stopped") == 3


async def test_serve_speaks_mcp_over_stdio_and_over_http(tmp_path: Path) -> None:
    """`agentmesh serve --stdio` is an MCP server on stdin/stdout; `mcp.listen` adds the HTTP one."""
    mcp_port = free_port()
    config = write_config(
        tmp_path / "solo.yaml",
        {
            "node": {"name": "solo", "asn": 65001, "router_id": "10.0.0.1", "listen": "127.0.0.1:0"},
            "mcp": {"listen": f"127.0.0.1:{mcp_port}"},
        },
    )
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agentmesh.cli", "serve", "--config", str(config), "--stdio"]
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            status = json.loads((await client.call_tool("mesh_status", {})).content[0].text)  # type: ignore[union-attr]
            assert status["node"]["name"] == "solo" and status["node"]["asn"] == 65001
            async with Client(f"http://127.0.0.1:{mcp_port}/mcp") as over_http:
                tools = {tool.name for tool in (await over_http.list_tools()).tools}
                assert {"list_agents", "call_agent", "resolve_agent", "mesh_status"} <= tools
    assert '"event": "node_stopped"' in (tmp_path / "stderr.log").read_text()


async def test_serve_hosts_the_configured_backends(tmp_path: Path) -> None:
    mcp_port = free_port()
    config = write_config(
        tmp_path / "hosting.yaml",
        {
            "node": {"name": "host", "asn": 65001, "router_id": "10.0.0.1", "listen": "127.0.0.1:0"},
            "mcp": {"listen": f"127.0.0.1:{mcp_port}"},
            "agents": [
                {"type": "demo", "namespace": "demo", "agents": ["echo"]},
                {
                    "type": "local",
                    "namespace": "tools",
                    "functions": [{"id": "greet", "function": "tests.support.sample_agents:greet"}],
                },
            ],
        },
    )
    with node_processes() as started:
        node = NodeProcess(["serve", "--config", str(config)], tmp_path / "hosting.log")
        started.append(node)
        await node.wait_for(lambda events: count(events, "agent_hosted") == 2, timeout=20)
        async with Client(f"http://127.0.0.1:{mcp_port}/mcp") as client:
            listed = json.loads((await client.call_tool("list_agents", {})).content[0].text)  # type: ignore[union-attr]
            assert {agent["name"] for agent in listed["agents"]} == {"demo.echo", "tools.greet"}
            result = await client.call_tool("call_agent", {"name": "tools.greet", "message": "mesh"})
            assert json.loads(result.content[0].text)["text"] == "hello mesh"  # type: ignore[union-attr]


async def test_a_backend_function_that_does_not_import_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        {
            "node": {"name": "host", "asn": 65001, "router_id": "10.0.0.1", "listen": "127.0.0.1:0"},
            "agents": [
                {
                    "type": "local",
                    "namespace": "t",
                    "functions": [{"id": "x", "function": "tests.support.sample_agents:NOT_CALLABLE"}],
                }
            ],
        },
    )
    with node_processes() as started:
        started.append(NodeProcess(["serve", "--config", str(config)], tmp_path / "bad.log"))
        assert await started[0].wait_exit() == 2
        assert "agents[0].functions[0].function" in started[0].log_path.read_text()


async def test_without_a_config_the_node_stands_in_for_the_old_proxy(tmp_path: Path) -> None:
    """MASTRA_SERVERS alone, no YAML: MCP on stdio with the old tools, and the agents as routes too."""
    async with (
        mastra_server(LEGACY, server0_agents()) as (_, url0),
        mastra_server(CURRENT, server1_agents()) as (_, url1),
    ):
        env = {**os.environ, "MASTRA_SERVERS": f"{url0}, {url1}"}
        params = StdioServerParameters(command=sys.executable, args=["-m", "agentmesh.cli", "serve"], env=env)
        with (tmp_path / "stderr.log").open("w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
                assert {"listMastraAgents", "callMastraAgent", "list_agents", "call_agent"} <= tools
                listing = json.loads((await client.call_tool("listMastraAgents", {})).content[0].text)  # type: ignore[union-attr]
                assert [s["serverName"] for s in listing["serverAgents"]] == ["server0", "server1"]
                reply = await client.call_tool(
                    "callMastraAgent",
                    {
                        "targetAgentId": "echoAgent",
                        "interactionType": "generate",
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                )
                answer = json.loads(reply.content[0].text)  # type: ignore[union-attr]
                assert answer["fullyQualifiedId"] == "server0:echoAgent"  # a conflict goes to server0
                assert answer["responseData"]["text"] == "echo: hi"
                # The same agents are routes of the node: callable through the mesh tools.
                mesh = await client.call_tool(
                    "call_agent", {"name": "server1.reverseAgent", "message": "abc"}
                )
                assert not mesh.is_error, mesh.content


async def test_an_mcp_servers_tools_are_agents_of_the_mesh(tmp_path: Path) -> None:
    """Node `tools` hosts the tools of an MCP server (a subprocess); an MCP client of node `front`
    calls one of them through the mesh: agentmesh as a federating MCP gateway."""
    tools_port, front_port, mcp_port = free_port(), free_port(), free_port()
    server = str(Path(__file__).resolve().parents[1] / "support" / "mcp_tool_server.py")
    tools = write_config(
        tmp_path / "tools.yaml",
        {
            "node": {
                "name": "tools",
                "asn": 65001,
                "router_id": "10.0.0.1",
                "listen": f"127.0.0.1:{tools_port}",
            },
            "neighbors": [{"address": f"127.0.0.1:{front_port}", "asn": 65002}],
            "agents": [{"type": "mcp", "namespace": "calc", "command": [sys.executable, server]}],
        },
    )
    front = write_config(
        tmp_path / "front.yaml",
        {
            "node": {
                "name": "front",
                "asn": 65002,
                "router_id": "10.0.0.2",
                "listen": f"127.0.0.1:{front_port}",
            },
            "neighbors": [{"address": f"127.0.0.1:{tools_port}", "asn": 65001}],
            "mcp": {"listen": f"127.0.0.1:{mcp_port}"},
        },
    )
    with node_processes() as started:
        started.append(NodeProcess(["serve", "--config", str(tools)], tmp_path / "tools.log"))
        started.append(NodeProcess(["serve", "--config", str(front)], tmp_path / "front.log"))
        await started[1].wait_for(lambda events: count(events, "session_established") == 1, timeout=20)
        async with Client(f"http://127.0.0.1:{mcp_port}/mcp") as client:
            for _ in range(100):  # until the route has arrived
                result = await client.call_tool(
                    "call_agent", {"name": "calc.add", "arguments": {"a": 2, "b": 40}}
                )
                if not result.is_error:
                    break
                await asyncio.sleep(0.1)
            answer = json.loads(result.content[0].text)  # type: ignore[union-attr]
            assert answer["text"] == "42" and answer["served_by"] == "tools"
            listed = json.loads((await client.call_tool("list_agents", {"prefix": "calc."})).content[0].text)  # type: ignore[union-attr]
            add = next(agent for agent in listed["agents"] if agent["name"] == "calc.add")
            assert add["backend_protocol"] in ("MCP", "mcp") and set(add["input_schema"]["properties"]) == {
                "a",
                "b",
            }


MCP_TOKEN = "ops-token-for-the-process-test"


async def test_serve_with_an_access_section_requires_the_token_over_http(tmp_path: Path) -> None:
    """`access.callers` in the config file: an MCP client without the token gets 401, with it the agents."""
    mcp_port = free_port()
    config = write_config(
        tmp_path / "guarded.yaml",
        {
            "node": {"name": "guarded", "asn": 65001, "router_id": "10.0.0.1", "listen": "127.0.0.1:0"},
            "mcp": {"listen": f"127.0.0.1:{mcp_port}"},
            "agents": [{"type": "demo", "namespace": "demo"}],
            "access": {"callers": [{"name": "ops", "tokens": [MCP_TOKEN]}]},
        },
    )
    url = f"http://127.0.0.1:{mcp_port}/mcp"
    with node_processes() as started:
        node = NodeProcess(["serve", "--config", str(config)], tmp_path / "guarded.log")
        started.append(node)
        await node.wait_for(
            lambda events: count(events, "mcp_http_started") == 1 and count(events, "agent_hosted") == 3,
            timeout=15,
        )
        answered: list[int] = []

        async def record(response: httpx2.Response) -> None:
            answered.append(response.status_code)

        with pytest.raises(Exception) as refused:  # the SDK wraps its MCPError in task groups
            async with (
                httpx2.AsyncClient(timeout=5, event_hooks={"response": [record]}) as web,
                Client(streamable_http_client(url, http_client=web)) as client,
            ):
                await client.list_tools()
        assert answered and set(answered) == {401}, answered
        assert any(isinstance(error, MCPError) for error in _leaves(refused.value)), refused.value

        headers = {"Authorization": f"Bearer {MCP_TOKEN}"}
        async with (
            httpx2.AsyncClient(timeout=5, headers=headers) as web,
            Client(streamable_http_client(url, http_client=web)) as client,
        ):
            listed = json.loads((await client.call_tool("list_agents", {})).content[0].text)  # type: ignore[union-attr]
        assert [agent["name"] for agent in listed["agents"]] == [
            "demo.calculator",
            "demo.capitals",
            "demo.echo",
        ]
        assert MCP_TOKEN not in node.log_path.read_text()  # secrets never reach the log
        unauthenticated = [e for e in node.events() if e["event"] == "mcp_unauthenticated"]
        assert unauthenticated and unauthenticated[0]["reason"] == "no credential"


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


REJECT_ECHO = {
    "defined_sets": {"names": {"echo": ["demo.echo"]}},
    "policies": [
        {
            "name": "no-echo",
            "statements": [
                {"name": "echo", "conditions": {"names": {"set": "echo"}}, "actions": {"route": "reject"}}
            ],
        }
    ],
    "import": {"policies": ["no-echo"], "default": "accept"},
}


def _state_of(admin: str, peer: str) -> tuple[set[str], dict[str, bool], int, str]:
    """Through the admin API: the Loc-RIB's names, the peer's Adj-RIB-In (name: filtered), its session
    state and the policy in force (YAML). Blocking: run it in a thread."""
    with AdminClient(admin, timeout=5) as client:
        loc = {route.name for route in client.list_routes()}
        adj_in = {
            route.name: route.filtered for route in client.list_routes(admin_pb2.TABLE_ADJ_RIB_IN, peer)
        }
        [status] = client.list_peers(peer)
        return loc, adj_in, status.state, client.get_policy()


async def test_sighup_reloads_the_policy_without_resetting_the_session(tmp_path: Path) -> None:
    """Two `serve` processes peer; the receiver's config gains an import policy rejecting demo.echo and a
    SIGHUP applies it in place; a broken file then changes nothing."""
    origin_port, receiver_port, admin_port = free_port(), free_port(), free_port()
    origin_address, admin = f"127.0.0.1:{origin_port}", f"127.0.0.1:{admin_port}"
    timers = {"connect_retry_time": 1, "connect_retry_initial": 0.2}
    origin = write_config(
        tmp_path / "origin.yaml",
        {
            "node": {"name": "origin", "asn": 65001, "router_id": "10.0.0.1", "listen": origin_address},
            "timers": timers,
            "neighbors": [{"address": f"127.0.0.1:{receiver_port}", "asn": 65002}],
            "agents": [{"type": "demo", "namespace": "demo"}],
        },
    )
    receiver_config: dict[str, Any] = {
        "node": {
            "name": "receiver",
            "asn": 65002,
            "router_id": "10.0.0.2",
            "listen": f"127.0.0.1:{receiver_port}",
        },
        "timers": timers,
        "admin": {"listen": admin},
        "neighbors": [{"address": origin_address, "asn": 65001}],
    }
    receiver_file = write_config(tmp_path / "receiver.yaml", receiver_config)
    demo = {"demo.calculator", "demo.capitals", "demo.echo"}
    with node_processes() as started:
        started.append(NodeProcess(["serve", "--config", str(origin)], tmp_path / "origin.log"))
        receiver = NodeProcess(["serve", "--config", str(receiver_file)], tmp_path / "receiver.log")
        started.append(receiver)
        await receiver.wait_for(lambda events: count(events, "session_established") == 1, timeout=15)
        for _ in range(100):  # until the routes have arrived
            loc, adj_in, state, policy = await asyncio.to_thread(_state_of, admin, origin_address)
            if loc == demo:
                break
            await asyncio.sleep(0.1)
        assert loc == demo and adj_in == dict.fromkeys(demo, False) and policy == ""
        sessions = count(receiver.events(), "session_established")

        # The same file with a policy section added, then SIGHUP.
        write_config(receiver_file, {**receiver_config, "policy": REJECT_ECHO})
        receiver.signal_group(signal.SIGHUP)
        await receiver.wait_for(lambda events: count(events, "config_reloaded") == 1, timeout=10)
        [reloaded] = [e for e in receiver.events() if e["event"] == "config_reloaded"]
        assert reloaded["path"] == str(receiver_file) and reloaded["reevaluated"] == 3
        assert (reloaded["added"], reloaded["removed"], reloaded["reset"]) == ([], [], [])
        assert reloaded["restart_needed"] == []
        loc, adj_in, state, policy = await asyncio.to_thread(_state_of, admin, origin_address)
        assert loc == demo - {"demo.echo"}
        assert adj_in == {"demo.calculator": False, "demo.capitals": False, "demo.echo": True}  # filtered
        assert state == admin_pb2.SESSION_STATE_ESTABLISHED and "no-echo" in policy
        assert count(receiver.events(), "session_established") == sessions  # the session stayed up

        # A broken file (an undefined policy, and the neighbour gone): the reload fails, nothing changes.
        broken = {
            **receiver_config,
            "neighbors": [],
            "policy": {**REJECT_ECHO, "import": {"policies": ["nope"]}},
        }
        write_config(receiver_file, broken)
        receiver.signal_group(signal.SIGHUP)
        await receiver.wait_for(lambda events: count(events, "config_reload_failed") == 1, timeout=10)
        [failed] = [e for e in receiver.events() if e["event"] == "config_reload_failed"]
        assert failed["path"] == str(receiver_file) and failed["level"] == "error"
        assert "policy.import.policies[0]" in failed["error"] and "nope" in failed["error"], failed
        assert await asyncio.to_thread(_state_of, admin, origin_address) == (loc, adj_in, state, policy)
        assert count(receiver.events(), "config_reloaded") == 1
        assert count(receiver.events(), "session_established") == sessions
        assert receiver.proc.poll() is None  # still serving
