"""A2aBackend against a real a2a-sdk server (tests/support/a2a_agent.py) on loopback, OS-chosen ports.

The agent answers either with a Message or with a Task whose artifact streams in chunks, and its card
either offers streaming or not, so each way an A2A reply can arrive is met.
"""

from __future__ import annotations

import socket
import time

import pytest

from agentmesh.agents.a2a import A2aBackend, A2aError
from agentmesh.agents.base import AgentRequest, ChatMessage
from agentmesh.bgp.messages import BackendProtocol
from agentmesh.config import BackendConfig
from tests.integration.test_routing_topologies import configs, everywhere, link
from tests.support.a2a_agent import AGENT_DESCRIPTION, AGENT_ID, Mode, a2a_agent, reply_text
from tests.support.nodes import running

MODES: list[Mode] = ["message", "task"]


def ask(text: str) -> AgentRequest:
    return AgentRequest(
        messages=(ChatMessage("user", "earlier"), ChatMessage("assistant", "ok"), ChatMessage("user", text))
    )


async def test_discover_makes_one_agent_from_the_card() -> None:
    async with a2a_agent("task") as (_, url):
        backend = A2aBackend("a2a0", url + "/")
        try:
            assert backend.protocol is BackendProtocol.A2A
            [info] = await backend.discover()
        finally:
            await backend.close()
    assert info.id == AGENT_ID
    assert info.description == AGENT_DESCRIPTION
    # Skill ids, then skill tags, each once ("text" is a tag of both skills).
    assert info.capabilities == ("echo", "shout", "text", "loud")
    assert info.input_schema is None


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "blocking"])
@pytest.mark.parametrize("mode", MODES)
async def test_call_returns_the_reply_text_and_data(mode: Mode, streaming: bool) -> None:
    async with a2a_agent(mode, streaming=streaming) as (server, url):
        backend = A2aBackend("a2a0", url)
        try:
            reply = await backend.call(AGENT_ID, ask("hello there"))
        finally:
            await backend.close()
    assert reply.text == reply_text("hello there")
    assert server.executor.inputs == ["hello there"]  # only the last user message is sent
    assert isinstance(reply.data, dict)
    if mode == "message":
        assert reply.data["message"]["parts"] == [{"text": reply_text("hello there")}]
    else:
        task = reply.data["task"]
        assert task["status"]["state"] == "TASK_STATE_COMPLETED"
        assert "".join(part["text"] for part in task["artifacts"][0]["parts"]) == reply_text("hello there")


async def test_call_sends_arguments_as_json_text() -> None:
    async with a2a_agent("message") as (server, url):
        backend = A2aBackend("a2a0", url)
        try:
            reply = await backend.call(AGENT_ID, AgentRequest(arguments={"city": "Zürich", "days": 2}))
        finally:
            await backend.close()
    assert server.executor.inputs == ['{"city": "Zürich", "days": 2}']
    assert reply.text == reply_text('{"city": "Zürich", "days": 2}')


async def test_stream_yields_the_artifact_chunks_as_they_come() -> None:
    async with a2a_agent("task") as (_, url):
        backend = A2aBackend("a2a0", url)
        try:
            pieces = [piece async for piece in backend.stream(AGENT_ID, ask("one two three"))]
        finally:
            await backend.close()
    assert pieces == ["a2a ", "echo: ", "one ", "two ", "three"]


@pytest.mark.parametrize(
    ("mode", "streaming"), [("message", True), ("message", False), ("task", False)], ids=str
)
async def test_stream_yields_a_whole_reply_once(mode: Mode, streaming: bool) -> None:
    async with a2a_agent(mode, streaming=streaming) as (_, url):
        backend = A2aBackend("a2a0", url)
        try:
            pieces = [piece async for piece in backend.stream(AGENT_ID, ask("hi"))]
        finally:
            await backend.close()
    assert pieces == [reply_text("hi")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_failing_agent_is_an_a2a_error(mode: Mode) -> None:
    async with a2a_agent(mode) as (_, url):
        backend = A2aBackend("a2a0", url)
        try:
            with pytest.raises(A2aError, match="cannot do: fail please"):
                await backend.call(AGENT_ID, ask("fail please"))
            with pytest.raises(A2aError, match="cannot do: fail please"):
                async for _ in backend.stream(AGENT_ID, ask("fail please")):
                    pass
            # The backend is still usable afterwards.
            assert (await backend.call(AGENT_ID, ask("again"))).text == reply_text("again")
        finally:
            await backend.close()


async def test_an_unknown_agent_or_an_empty_request_is_an_a2a_error() -> None:
    async with a2a_agent("message") as (server, url):
        backend = A2aBackend("a2a0", url)
        try:
            with pytest.raises(A2aError, match="has no agent 'someone_else'"):
                await backend.call("someone_else", ask("hi"))
            with pytest.raises(A2aError, match="nothing to send"):
                await backend.call(AGENT_ID, AgentRequest())
        finally:
            await backend.close()
    assert server.executor.inputs == []


async def test_probe_is_true_while_the_card_can_be_fetched() -> None:
    async with a2a_agent("task") as (server, url):
        backend = A2aBackend("a2a0", url)
        try:
            assert await backend.probe() is True
            assert server.paths == ["/.well-known/agent-card.json"]
        finally:
            await backend.close()
    backend = A2aBackend("a2a0", url)
    try:
        assert await backend.probe() is False  # the server is gone
    finally:
        await backend.close()


async def test_a_dead_url_fails_quickly_with_an_a2a_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now: connections are refused at once.
    backend = A2aBackend("a2a0", f"http://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        with pytest.raises(A2aError, match=f"127.0.0.1:{port}"):
            await backend.discover()
        with pytest.raises(A2aError):
            await backend.call(AGENT_ID, ask("hi"))
        with pytest.raises(A2aError):
            async for _ in backend.stream(AGENT_ID, ask("hi")):
                pass
        assert await backend.probe() is False
        assert time.monotonic() - started < 5
    finally:
        await backend.close()


async def test_the_clients_are_reused() -> None:
    async with a2a_agent("task") as (server, url):
        backend = A2aBackend("a2a0", url)
        try:
            await backend.discover()
            http = backend._http
            await backend.call(AGENT_ID, ask("one"))
            client = backend._client
            assert client is not None
            await backend.call(AGENT_ID, ask("two"))
            assert [piece async for piece in backend.stream(AGENT_ID, ask("three"))]
            await backend.discover()  # an unchanged card keeps the A2A client
            assert await backend.probe()
            assert backend._client is client
            assert backend._http is http
        finally:
            await backend.close()
    assert server.paths.count("/a2a") == 3
    assert len(set(server.clients)) == 1, server.clients  # every request on one kept-alive connection
    assert http.is_closed
    with pytest.raises(A2aError, match="closed"):
        await backend.call(AGENT_ID, ask("after close"))


async def test_an_a2a_agent_configured_on_one_node_is_called_from_another() -> None:
    """The config path (agents entry of type a2a) and the mesh: announced at n1, called through n0."""
    async with a2a_agent("task") as (_, url):
        cfgs = configs([65001, 65002])
        a2a_entry = BackendConfig(type="a2a", namespace="partners", url=url, rediscover_every=60)
        cfgs[1] = cfgs[1].model_copy(update={"agents": (a2a_entry,)})
        async with running(*cfgs) as (n0, n1):
            await link([n0, n1], [(0, 1)])
            [name] = [n for n in await n1.loc_rib() if n.startswith("partners.")]
            await everywhere([n0], name)
            served = await n0.call_agent(name, AgentRequest(messages=(ChatMessage("user", "hello"),)))
            assert served.reply.text == reply_text("hello") and served.served_by == "n1"
            path = (await n0.loc_rib())[name]
            assert path.attrs.agent.backend_protocol is BackendProtocol.A2A
            assert path.attrs.agent.capabilities  # from the card's skills
