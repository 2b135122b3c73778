"""MastraBackend against real HTTP servers speaking the Mastra API of both generations (0.10 and 1.x).

The servers are Starlette apps (tests/support/mastra_servers.py) served by uvicorn on loopback with
OS-chosen ports; they record what they receive, so the tests check the wire as well as the results.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator

import httpx2
import pytest

from agentmesh.agents.base import AgentRequest, ChatMessage
from agentmesh.agents.mastra import (
    DEFAULT_MASTRA_SERVER,
    MastraBackend,
    MastraError,
    mastra_backends,
    named_mastra_servers,
    parse_mastra_servers,
)
from agentmesh.bgp.messages import BackendProtocol
from tests.support.mastra_servers import (
    CURRENT,
    LEGACY,
    Generation,
    MastraServer,
    echo_agent,
    mastra_server,
    server0_agents,
    server1_agents,
    weather_agent,
)

GENERATIONS = [LEGACY, CURRENT]


def ask(text: str, **options: object) -> AgentRequest:
    return AgentRequest(messages=(ChatMessage("user", text),), options=options)


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [piece async for piece in stream]


@pytest.fixture(params=GENERATIONS, ids=["mastra-0.10", "mastra-1.x"])
def generation(request: pytest.FixtureRequest) -> Generation:
    generation: Generation = request.param
    return generation


@pytest.fixture
async def served(generation: Generation) -> AsyncIterator[tuple[MastraServer, MastraBackend]]:
    async with mastra_server(generation) as (server, url):
        backend = MastraBackend("server0", url)
        try:
            yield server, backend
        finally:
            await backend.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- discover ----------------------------------------------------------------------------------------------


async def test_discover_lists_agents_in_server_order(served: tuple[MastraServer, MastraBackend]) -> None:
    server, backend = served
    agents = await backend.discover()
    assert [agent.id for agent in agents] == ["weatherAgent", "echoAgent", "mathAgent"]
    weather = agents[0]
    assert weather.description == "You are a helpful weather assistant."  # instructions: no description
    assert weather.capabilities == ("weatherTool",)
    assert weather.input_schema is None
    assert agents[1].capabilities == ()
    assert backend.protocol is BackendProtocol.MASTRA
    assert backend.name == "server0"
    assert [(r.method, r.path, r.content_type, r.body) for r in server.requests] == [
        ("GET", "/api/agents", None, None)
    ]


async def test_description_falls_back_from_description_to_instructions_to_name(
    generation: Generation,
) -> None:
    agents = [
        echo_agent(id="a", description="Described."),
        echo_agent(id="b", instructions="Instructed."),
        echo_agent(id="c", name="Only A Name", instructions=""),
    ]
    async with mastra_server(generation, agents) as (_, url):
        backend = MastraBackend("server0", url)
        try:
            infos = await backend.discover()
        finally:
            await backend.close()
    assert [(info.id, info.description) for info in infos] == [
        ("a", "Described."),
        ("b", "Instructed."),
        ("c", "Only A Name"),
    ]


# --- generate ----------------------------------------------------------------------------------------------


async def test_generate_posts_json_and_returns_text_and_the_whole_response(
    served: tuple[MastraServer, MastraBackend], generation: Generation
) -> None:
    server, backend = served
    reply = await backend.call("weatherAgent", ask("What is the weather in Paris?"))
    assert reply.text == "The weather in Paris is sunny, 21°C, wind 5 km/h."
    assert reply.data["text"] == reply.text
    assert reply.data["finishReason"] == "stop"
    if generation == LEGACY:  # the transcripts' AI SDK 4 shape, token counts included
        assert reply.data["usage"] == {"promptTokens": 6, "completionTokens": 10, "totalTokens": 16}
        assert reply.data["steps"][0]["stepType"] == "initial"
    else:
        assert reply.data["usage"] == {"inputTokens": 6, "outputTokens": 10, "totalTokens": 16}
    [post] = server.posts()
    assert post.path == "/api/agents/weatherAgent/generate"
    assert post.content_type == "application/json"
    assert post.body == {"messages": [{"role": "user", "content": "What is the weather in Paris?"}]}


async def test_generate_passes_thread_resource_and_agent_options(
    served: tuple[MastraServer, MastraBackend],
) -> None:
    server, backend = served
    request = AgentRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "hello")),
        options={
            "threadId": "thread-1",
            "resourceId": "user-7",
            "agentOptions": {
                "temperature": 0.2,
                "maxSteps": 3,
                "messages": "must not replace the conversation",
            },
            "unrelated": "not sent",
        },
    )
    reply = await backend.call("echoAgent", request)
    assert reply.text == "echo: hello"
    assert server.posts()[0].body == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        "threadId": "thread-1",
        "resourceId": "user-7",
        "temperature": 0.2,
        "maxSteps": 3,
    }


async def test_json_arguments_are_one_user_message_of_json_text(
    served: tuple[MastraServer, MastraBackend],
) -> None:
    server, backend = served
    reply = await backend.call("echoAgent", AgentRequest(arguments={"city": "Zürich", "days": 2}))
    assert json.loads(reply.text.removeprefix("echo: ")) == {"city": "Zürich", "days": 2}
    [message] = server.posts()[0].body["messages"]
    assert message["role"] == "user"
    assert json.loads(message["content"]) == {"city": "Zürich", "days": 2}


# --- stream ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 3], ids=["one-write-per-part", "3-byte-writes"])
async def test_stream_text_equals_generate_text(generation: Generation, chunk_size: int | None) -> None:
    agents = [*server0_agents(), weather_agent(id="toolWeatherAgent", calls_tool="weatherTool")]
    async with mastra_server(generation, agents, chunk_size=chunk_size) as (server, url):
        backend = MastraBackend("server0", url)
        try:
            for agent_id, prompt in [
                ("mathAgent", "What is 2 + 3 * 4?"),
                ("weatherAgent", "What is the weather in Paris?"),
                ("toolWeatherAgent", "What is the weather in Oslo?"),  # a tool step before the text
                ("echoAgent", "ünïcødé \u2028 line separator"),
            ]:
                generated = await backend.call(agent_id, ask(prompt))
                pieces = await collect(backend.stream(agent_id, ask(prompt)))
                assert "".join(pieces) == generated.text, agent_id
                assert len(pieces) > 1
        finally:
            await backend.close()
    streams = [r for r in server.posts() if r.path.endswith("/stream")]
    assert all(r.content_type == "application/json" for r in streams)


async def test_stream_pieces_match_the_transcript(served: tuple[MastraServer, MastraBackend]) -> None:
    server, backend = served
    pieces = await collect(
        backend.stream("mathAgent", ask("What is 2 + 3 * 4?", threadId="t", resourceId="r"))
    )
    assert pieces == ["2 ", "+ ", "3 ", "* ", "4 ", "= ", "14"]
    [post] = server.posts()
    assert post.path == "/api/agents/mathAgent/stream"
    assert post.body == {
        "messages": [{"role": "user", "content": "What is 2 + 3 * 4?"}],
        "threadId": "t",
        "resourceId": "r",
    }


# --- errors ------------------------------------------------------------------------------------------------


async def test_unknown_agent_is_a_mastra_error_with_the_generations_status(
    served: tuple[MastraServer, MastraBackend], generation: Generation
) -> None:
    _, backend = served
    status = 404 if generation == CURRENT else 500
    with pytest.raises(MastraError) as generate_error:
        await backend.call("nopeAgent", ask("anyone?"))
    with pytest.raises(MastraError) as stream_error:
        await collect(backend.stream("nopeAgent", ask("anyone?")))
    for caught in (generate_error, stream_error):
        assert caught.value.status == status
        assert "nopeAgent" in caught.value.message
        assert "not found" in caught.value.message
        assert str(caught.value) == f"HTTP {status}: {caught.value.message}"
    # The backend is still usable after errors.
    assert (await backend.call("echoAgent", ask("still there?"))).text == "echo: still there?"


async def test_fake_servers_are_faithful_about_content_type_and_agent_detail(generation: Generation) -> None:
    """Mastra 1.x rejects the old proxy's text/plain POSTs, 0.10 accepts them; GET /api/agents/:id works."""
    async with mastra_server(generation) as (_, url), httpx2.AsyncClient() as client:
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
        response = await client.post(
            f"{url}/api/agents/echoAgent/generate",
            content=body,
            headers={"content-type": "text/plain;charset=UTF-8"},
        )
        if generation == CURRENT:
            assert response.status_code in (400, 415)
        else:
            assert response.status_code == 200
            assert response.json()["text"] == "echo: hi"
        detail = await client.get(f"{url}/api/agents/echoAgent")
        assert detail.status_code == 200
        assert detail.json()["name"] == "Echo Agent"
        missing = await client.get(f"{url}/api/agents/nopeAgent")
        assert missing.status_code == (404 if generation == CURRENT else 500)
        assert "not found" in missing.json()["error"]


async def test_a_dead_url_fails_quickly_with_a_mastra_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    backend = MastraBackend("server0", url)
    try:
        started = time.monotonic()
        with pytest.raises(MastraError, match="cannot connect") as caught:
            await backend.call("echoAgent", ask("hello"))
        assert caught.value.status is None
        assert url in caught.value.message
        with pytest.raises(MastraError, match="cannot connect"):
            await backend.discover()
        with pytest.raises(MastraError, match="cannot connect"):
            await collect(backend.stream("echoAgent", ask("hello")))
        assert await backend.probe() is False
        assert time.monotonic() - started < 5
    finally:
        await backend.close()


async def test_probe(served: tuple[MastraServer, MastraBackend]) -> None:
    _, backend = served
    assert await backend.probe() is True


async def test_a_server_that_never_answers_is_a_timeout_error() -> None:
    # A listener that accepts and never answers: the read timeout, not the test timeout, ends the call.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        backend = MastraBackend("server0", f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        try:
            with pytest.raises(MastraError, match="timed out"):
                await backend.call("echoAgent", ask("hi"))
            with pytest.raises(MastraError, match="timed out"):
                await collect(backend.stream("echoAgent", ask("hi")))
        finally:
            await backend.close()


# --- one client, one connection ----------------------------------------------------------------------------


async def test_the_client_and_its_connection_are_reused(served: tuple[MastraServer, MastraBackend]) -> None:
    server, backend = served
    client = backend._client
    await backend.discover()
    await backend.call("echoAgent", ask("one"))
    await collect(backend.stream("echoAgent", ask("two")))
    await backend.call("mathAgent", ask("1 + 1"))
    await collect(backend.stream("mathAgent", ask("2 * 3")))
    with pytest.raises(MastraError):
        await backend.call("nopeAgent", ask("three"))
    assert await backend.probe()
    assert backend._client is client
    assert len(server.requests) == 7
    assert len(server.clients) == 1, server.clients  # every request on one kept-alive TCP connection


async def test_concurrent_calls_share_the_client(served: tuple[MastraServer, MastraBackend]) -> None:
    server, backend = served
    replies = await asyncio.gather(*(backend.call("echoAgent", ask(f"n{i}")) for i in range(8)))
    assert [reply.text for reply in replies] == [f"echo: n{i}" for i in range(8)]
    assert 1 <= len(server.clients) <= 8


async def test_close_is_idempotent(served: tuple[MastraServer, MastraBackend]) -> None:
    _, backend = served
    await backend.close()
    await backend.close()


async def test_two_servers_of_different_generations_side_by_side() -> None:
    async with (
        mastra_server(LEGACY, server0_agents()) as (_, url0),
        mastra_server(CURRENT, server1_agents()) as (_, url1),
    ):
        backends = mastra_backends(f"{url0}, {url1}")
        try:
            assert [b.name for b in backends] == ["server0", "server1"]
            assert [a.id for a in await backends[1].discover()] == ["echoAgent", "reverseAgent"]
            assert (await backends[0].call("echoAgent", ask("hi"))).text == "echo: hi"
            assert (await backends[1].call("echoAgent", ask("hi"))).text == "alt-echo: hi"
            assert "".join(await collect(backends[1].stream("reverseAgent", ask("abc")))) == "cba"
            assert (await backends[0].call("mathAgent", ask("What is 6 * 7?"))).text == "6 * 7 = 42"
        finally:
            for backend in backends:
                await backend.close()


# --- MASTRA_SERVERS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://a:1 http://b:2", ["http://a:1", "http://b:2"]),
        ("http://a:1,http://b:2", ["http://a:1", "http://b:2"]),
        ("http://a:1, http://b:2 ,http://c:3", ["http://a:1", "http://b:2", "http://c:3"]),
        ("  http://a:1 ,, ,\t\nhttp://b:2,  ", ["http://a:1", "http://b:2"]),
        ("http://a:1", ["http://a:1"]),
        ("", [DEFAULT_MASTRA_SERVER]),
        ("  , ,", [DEFAULT_MASTRA_SERVER]),
        (None, [DEFAULT_MASTRA_SERVER]),
    ],
    ids=["spaces", "commas", "both", "empty-parts", "one", "empty", "only-separators", "unset"],
)
def test_parse_mastra_servers(value: str | None, expected: list[str]) -> None:
    assert parse_mastra_servers(value) == expected


def test_servers_are_named_in_order() -> None:
    assert DEFAULT_MASTRA_SERVER == "http://localhost:4111"
    assert named_mastra_servers("http://a:1 http://b:2,http://a:1") == [
        ("server0", "http://a:1"),
        ("server1", "http://b:2"),
        ("server2", "http://a:1"),
    ]
    assert named_mastra_servers(None) == [("server0", "http://localhost:4111")]
