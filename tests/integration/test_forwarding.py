"""Calls forwarded hop by hop over real nodes: replies, and every error with where it was decided."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc.aio
import pytest

from agentmesh.agents.base import AgentInfo, AgentRequest, CallErrorCode, CallFailure, ChatMessage
from agentmesh.agents.demo import demo_backend
from agentmesh.agents.local import LocalAgent, LocalBackend
from agentmesh.bgp.messages import Origin, PathAttributes, Update
from agentmesh.speaker.node import Node
from agentmesh.transport.forwarding import Served
from agentmesh.v1 import forwarding_pb2, forwarding_pb2_grpc
from tests.integration.test_routing_topologies import configs, everywhere, link
from tests.support.nodes import running
from tests.support.processes import free_port


@pytest.fixture
async def chain() -> AsyncIterator[list[Node]]:
    """n0 - n1 - n2 in three ASes; n2 hosts the demo agents and a slow and a failing one."""
    async with running(*configs([65001, 65002, 65003])) as nodes:
        await link(nodes, [(0, 1), (1, 2)])
        await nodes[2].host(demo_backend(), "demo")
        await nodes[2].host(LocalBackend("test", [SLOW, BROKEN]), "test")
        await everywhere(nodes, "test.broken")
        yield nodes


async def slow(request: AgentRequest) -> str:
    await asyncio.sleep(10)
    return "too late"


def broken(request: AgentRequest) -> str:
    raise RuntimeError("the backend fell over")


SLOW = LocalAgent(AgentInfo("slow"), slow)
BROKEN = LocalAgent(AgentInfo("broken"), broken)


async def failure_of(node: Node, name: str, **kwargs: object) -> CallFailure:
    with pytest.raises(CallFailure) as failed:
        await node.call_agent(name, AgentRequest(messages=(ChatMessage("user", "hi"),)), **kwargs)  # type: ignore[arg-type]
    return failed.value


async def test_an_agent_two_ases_away_answers(chain: list[Node]) -> None:
    n0, n1, n2 = chain
    served = await n0.call_agent("demo.capitals", AgentRequest(arguments={"country": "France"}))
    assert served.reply.text == "The capital of France is Paris."
    assert served.reply.data == {"country": "France", "capital": "Paris"}
    assert served.served_by == "n2" and served.route == "demo.capitals"
    assert served.trace == (n0.router_id, n1.router_id, n2.router_id)


async def test_a_streamed_reply_arrives_in_chunks_then_the_result(chain: list[Node]) -> None:
    request = AgentRequest(messages=(ChatMessage("user", "hello across the mesh"),))
    events = [event async for event in chain[0].stream_agent("demo.echo", request)]
    chunks = [e for e in events if isinstance(e, str)]
    assert len(chunks) > 1 and "".join(chunks) == "echo: hello across the mesh"
    assert isinstance(events[-1], Served) and events[-1].reply.text == "echo: hello across the mesh"


async def test_unknown_name_is_not_found_where_it_was_looked_up(chain: list[Node]) -> None:
    failure = await failure_of(chain[0], "demo.nothing")
    assert (failure.code, failure.node) == (CallErrorCode.NOT_FOUND, "n0")


async def test_hop_limit_counts_hops_between_nodes_like_a_ttl(chain: list[Node]) -> None:
    failure = await failure_of(chain[0], "demo.echo", hop_limit=1)
    assert (failure.code, failure.node) == (CallErrorCode.HOP_LIMIT, "n1")
    assert "no hops left to go on to" in failure.reason
    # Two hops reach the agent two nodes away; serving it there takes no hop.
    request = AgentRequest(messages=(ChatMessage("user", "hi"),))
    served = await chain[0].call_agent("demo.echo", request, hop_limit=2)
    assert served.served_by == "n2"
    # A call that arrives with no hops left is still served where the agent lives.
    served = await chain[2].call_agent("demo.echo", request, hop_limit=0)
    assert served.served_by == "n2"


async def test_backend_error_names_the_hosting_node(chain: list[Node]) -> None:
    failure = await failure_of(chain[0], "test.broken")
    assert (failure.code, failure.node) == (CallErrorCode.BACKEND_ERROR, "n2")
    assert "the backend fell over" in failure.reason


async def test_deadline_is_kept_across_hops(chain: list[Node]) -> None:
    started = time.monotonic()
    failure = await failure_of(chain[0], "test.slow", timeout=0.5)
    assert failure.code is CallErrorCode.DEADLINE
    assert time.monotonic() - started < 2


async def test_a_grpc_client_calls_any_agent_through_any_node(chain: list[Node]) -> None:
    """What grpcurl does: ForwardingService.Call on the first node for an agent two hops away."""
    async with grpc.aio.insecure_channel(chain[0].advertise_address) as channel:
        stub = forwarding_pb2_grpc.ForwardingServiceStub(channel)
        call = forwarding_pb2.AgentCall(
            name="demo.calculator", arguments_json='{"expression": "6 * 7"}', hop_limit=8
        )
        response = await stub.Call(forwarding_pb2.CallRequest(call=call), timeout=5)
        assert response.result.text == "6 * 7 = 42"
        call = forwarding_pb2.AgentCall(name="demo.calculator", arguments_json="[1, 2]", hop_limit=8)
        response = await stub.Call(forwarding_pb2.CallRequest(call=call), timeout=5)
        assert response.error.code == forwarding_pb2.CALL_ERROR_CODE_INVALID_ARGUMENT


async def install_static_route(node: Node, name: str, next_hop: str) -> None:
    """A route from a configured-but-silent source, as a misconfiguration would leave one."""

    def install() -> None:
        node.rib.add_peer("static", 65099, 1)
        node.rib.peer_up("static", 1)
        attrs = PathAttributes(origin=Origin.IGP, as_path=(65099,), next_hop=next_hop)
        node.rib.receive("static", Update(attributes=attrs, announced=(name,)), 0.0)

    await node.call(install)


async def test_a_forwarding_loop_answers_loop_and_never_hangs() -> None:
    async with running(*configs([65001, 65002])) as (a, b):
        await link([a, b], [(0, 1)])
        # Each node's best path for `loop.x` points at the other.
        await install_static_route(a, "loop.x", b.advertise_address)
        await install_static_route(b, "loop.x", a.advertise_address)
        failure = await asyncio.wait_for(failure_of(a, "loop.x", timeout=5), 5)
        assert (failure.code, failure.node) == (CallErrorCode.LOOP, "n0")
        assert a.router_id in failure.reason and b.router_id in failure.reason


async def test_a_dead_next_hop_is_unavailable_within_the_deadline() -> None:
    async with running(*configs([65001])) as (a,):
        await install_static_route(a, "gone.x", f"127.0.0.1:{free_port()}")
        started = time.monotonic()
        failure = await failure_of(a, "gone.x", timeout=3)
        assert (failure.code, failure.node) == (CallErrorCode.UNAVAILABLE, "n0")
        assert time.monotonic() - started < 3


async def test_rediscovery_announces_new_agents_and_withdraws_vanished_ones() -> None:
    async with running(*configs([65001, 65002])) as (a, b):
        await link([a, b], [(0, 1)])
        backend = LocalBackend("team", [LocalAgent(AgentInfo("first"), lambda request: "one")])
        assert await b.host(backend, "team", rediscover_every=0.1) == ["team.first"]
        await everywhere([a], "team.first")

        backend.add(LocalAgent(AgentInfo("second", capabilities=("new",)), lambda request: "two"))
        backend.remove("first")
        await everywhere([a], "team.second")
        await everywhere([a], "team.first", present=False)
        assert (await a.call_agent("team.second", AgentRequest())).reply.text == "two"
        failure = await failure_of(a, "team.first")
        assert failure.code is CallErrorCode.NOT_FOUND


async def test_a_backend_that_fails_discovery_keeps_its_routes_and_others_work() -> None:
    class Flaky(LocalBackend):
        failing = False

        async def discover(self) -> list[AgentInfo]:
            if self.failing:
                raise ConnectionError("backend unreachable")
            return await super().discover()

    async with running(*configs([65001])) as (a,):
        flaky = Flaky("flaky", [LocalAgent(AgentInfo("x"), lambda request: "x")])
        await a.host(flaky, "flaky", rediscover_every=0.05)
        await a.host(demo_backend("echo"), "demo")
        flaky.failing = True
        await asyncio.sleep(0.3)
        assert "flaky.x" in await a.loc_rib()
        status = {backend["namespace"]: backend for backend in a.backends()}
        assert status["flaky"]["last_error"] == "backend unreachable"  # shown for that backend only
        assert status["demo"]["last_error"] is None and status["demo"]["agents"] == ["demo.echo"]
        served = await a.call_agent("demo.echo", AgentRequest(messages=(ChatMessage("user", "still here"),)))
        assert served.reply.text == "echo: still here"
