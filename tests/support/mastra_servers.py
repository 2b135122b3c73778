"""Fake Mastra servers of both generations, as Starlette apps served by uvicorn on loopback.

They speak the Mastra HTTP API as far as agentmesh uses it (DESIGN.md §3) and as the recorded transcripts
in /work/shared/compat/old-proxy show it, with deterministic mock models instead of LLMs:

* `GET /api/agents` (object keyed by agent id) and `GET /api/agents/:id`;
* `POST /api/agents/:id/generate`: Mastra 0.10 answers the AI SDK 4 result shape of the transcripts
  (`usage.promptTokens`, `steps[].stepType`, …), Mastra 1.x the AI SDK 5 shape (`usage.inputTokens`, …);
* `POST /api/agents/:id/stream`: the AI SDK 4 data stream (0.10) or Server-Sent Events of
  `{"type", "runId", "from", "payload"}` chunks ending with `data: [DONE]` (1.x);
* an unknown agent is 500 on 0.10 and 404 on 1.x, both with `{"error": …}`; 1.x answers 415 to a POST
  that is not `content-type: application/json`, 0.10 parses the body whatever its content type (the old
  proxy sent `text/plain` and 0.10 accepted it).

Every request is recorded with its client address, so tests can check bodies, headers and how many TCP
connections a client opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from agentmesh.agents.demo import evaluate

Generation = Literal["0.10", "1.x"]
LEGACY: Generation = "0.10"
CURRENT: Generation = "1.x"

_TIMESTAMP = "1970-01-01T00:00:00.000Z"


# --- deterministic agents ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeAgent:
    """A Mastra agent with a mock model: `respond` maps the last user message to the answer."""

    id: str
    name: str
    instructions: str
    respond: Callable[[str], str]
    description: str | None = None
    #: Tools listed by the agent (its discovery entry); the mock model calls none of them...
    tools: tuple[str, ...] = ()
    #: ...unless this names one: then the model calls it in a first step and answers in a second.
    calls_tool: str | None = None


def echo(prefix: str) -> Callable[[str], str]:
    return lambda text: f"{prefix}{text}"


def reverse(text: str) -> str:
    return text[::-1]


def weather(text: str) -> str:
    match = re.search(r"\bin ([A-Z][\w .'-]*?)[?.!]*$", text.strip())
    city = match.group(1) if match else "your area"
    return f"The weather in {city} is sunny, 21°C, wind 5 km/h."


def math(text: str) -> str:
    expression = re.sub(r"^\s*what\s+is\s+", "", text, flags=re.IGNORECASE).strip().rstrip("?").strip()
    try:
        value = evaluate(expression)
    except (ValueError, ArithmeticError):
        return "I can only do arithmetic."
    return f"{expression} = {value}"


def weather_agent(**overrides: Any) -> FakeAgent:
    fields: dict[str, Any] = {
        "id": "weatherAgent",
        "name": "Weather Agent",
        "instructions": "You are a helpful weather assistant.",
        "respond": weather,
        "tools": ("weatherTool",),
    }
    return FakeAgent(**(fields | overrides))


def echo_agent(**overrides: Any) -> FakeAgent:
    fields: dict[str, Any] = {
        "id": "echoAgent",
        "name": "Echo Agent",
        "instructions": "Repeat the user's message.",
        "respond": echo("echo: "),
    }
    return FakeAgent(**(fields | overrides))


def math_agent(**overrides: Any) -> FakeAgent:
    fields: dict[str, Any] = {
        "id": "mathAgent",
        "name": "Math Agent",
        "instructions": "Evaluate arithmetic.",
        "respond": math,
    }
    return FakeAgent(**(fields | overrides))


def reverse_agent(**overrides: Any) -> FakeAgent:
    fields: dict[str, Any] = {
        "id": "reverseAgent",
        "name": "Reverse Agent",
        "instructions": "Reverse the user's message.",
        "respond": reverse,
    }
    return FakeAgent(**(fields | overrides))


def server0_agents() -> list[FakeAgent]:
    """server0 of the transcripts (`http://127.0.0.1:4111`), in its listing order."""
    return [weather_agent(), echo_agent(), math_agent()]


def server1_agents() -> list[FakeAgent]:
    """server1 of the transcripts (`http://127.0.0.1:4112`): another echoAgent, and reverseAgent."""
    return [echo_agent(name="Echo Agent (alt)", respond=echo("alt-echo: ")), reverse_agent()]


# --- the mock model's output -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Run:
    """What the mock model produced for one request: an optional tool step, then the answer."""

    agent: FakeAgent
    prompt: str
    text: str
    number: int

    @property
    def pieces(self) -> list[str]:
        """The answer streamed word by word, each word with the space after it (as the transcripts show)."""
        words = self.text.split(" ")
        return [word if i == len(words) - 1 else word + " " for i, word in enumerate(words)]

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt.split())

    @property
    def completion_tokens(self) -> int:
        return len(self.text.split())

    @property
    def tool_call(self) -> dict[str, Any] | None:
        if self.agent.calls_tool is None:
            return None
        return {
            "toolCallId": f"call-{self.number}",
            "toolName": self.agent.calls_tool,
            "args": {"input": self.prompt},
            "result": {"output": self.text},
        }


def _last_user_text(messages: Any) -> str:
    """Mastra takes a string, a list of strings, or a list of `{role, content}` (content text or parts)."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, str):
            return message
        if isinstance(message, dict) and message.get("role", "user") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _generate_010(run: _Run) -> dict[str, Any]:
    """The AI SDK 4 `generateText` result, as Mastra 0.10 serialises it (the transcripts' shape)."""
    usage = {
        "promptTokens": run.prompt_tokens,
        "completionTokens": run.completion_tokens,
        "totalTokens": run.prompt_tokens + run.completion_tokens,
    }
    response = {
        "id": f"mock-{run.agent.id}-response",
        "timestamp": _TIMESTAMP,
        "modelId": f"mock-{run.agent.id}",
        "messages": [
            {
                "role": "assistant",
                "content": [{"type": "text", "text": run.text}],
                "id": f"msg-{run.number}",
            }
        ],
    }

    def step(step_type: str, text: str, finish: str, calls: list[Any], results: list[Any]) -> dict[str, Any]:
        return {
            "stepType": step_type,
            "text": text,
            "reasoningDetails": [],
            "files": [],
            "sources": [],
            "toolCalls": calls,
            "toolResults": results,
            "finishReason": finish,
            "usage": usage,
            "request": {},
            "response": response,
            "isContinued": False,
        }

    steps = []
    call = run.tool_call
    if call is not None:
        tool_call = {"type": "tool-call", **{k: call[k] for k in ("toolCallId", "toolName", "args")}}
        steps.append(step("initial", "", "tool-calls", [tool_call], [{"type": "tool-result", **call}]))
    steps.append(step("initial" if call is None else "tool-result", run.text, "stop", [], []))
    return {
        "text": run.text,
        "files": [],
        "reasoningDetails": [],
        "toolCalls": [],
        "toolResults": [],
        "finishReason": "stop",
        "usage": usage,
        "request": {},
        "response": response,
        "steps": steps,
        "sources": [],
    }


def _stream_010(run: _Run) -> Iterator[str]:
    """The AI SDK 4 data stream of Mastra 0.10: `f:` start step, `9:`/`a:` tool call and result, `0:`
    text, `e:` finish step, `d:` finish message."""
    usage = {"promptTokens": run.prompt_tokens, "completionTokens": run.completion_tokens}

    def part(code: str, value: Any) -> str:
        return f"{code}:{json.dumps(value, ensure_ascii=False, separators=(',', ':'))}\n"

    call = run.tool_call
    if call is not None:
        yield part("f", {"messageId": f"msg-{run.number}-tool"})
        yield part("9", {k: call[k] for k in ("toolCallId", "toolName", "args")})
        yield part("a", {"toolCallId": call["toolCallId"], "result": call["result"]})
        yield part("e", {"finishReason": "tool-calls", "usage": usage, "isContinued": False})
    yield part("f", {"messageId": f"msg-{run.number}"})
    for piece in run.pieces:
        yield part("0", piece)
    yield part("e", {"finishReason": "stop", "usage": usage, "isContinued": False})
    yield part("d", {"finishReason": "stop", "usage": usage})


def _usage_1x(run: _Run) -> dict[str, int]:
    return {
        "inputTokens": run.prompt_tokens,
        "outputTokens": run.completion_tokens,
        "totalTokens": run.prompt_tokens + run.completion_tokens,
    }


def _generate_1x(run: _Run) -> dict[str, Any]:
    """The Mastra 1.x `generate` result (AI SDK 5 field names)."""
    usage = _usage_1x(run)
    run_id = f"run-{run.number}"
    steps: list[dict[str, Any]] = []
    call = run.tool_call
    if call is not None:
        steps.append(
            {
                "content": [{"type": "tool-call", **call}],
                "text": "",
                "toolCalls": [{"type": "tool-call", "runId": run_id, "from": "AGENT", "payload": call}],
                "finishReason": "tool-calls",
                "usage": usage,
            }
        )
    steps.append(
        {
            "content": [{"type": "text", "text": run.text}],
            "text": run.text,
            "toolCalls": [],
            "finishReason": "stop",
            "usage": usage,
        }
    )
    return {
        "text": run.text,
        "usage": usage,
        "totalUsage": usage,
        "steps": steps,
        "finishReason": "stop",
        "warnings": [],
        "request": {},
        "reasoning": [],
        "toolCalls": [],
        "toolResults": [],
        "sources": [],
        "files": [],
        "response": {
            "id": f"mock-{run.agent.id}-response",
            "timestamp": _TIMESTAMP,
            "modelId": f"mock-{run.agent.id}",
            "messages": [{"role": "assistant", "content": [{"type": "text", "text": run.text}]}],
        },
        "runId": run_id,
        "tripwire": False,
    }


def _stream_1x(run: _Run) -> Iterator[str]:
    """Mastra 1.x Server-Sent Events: one `data:` line per chunk, a blank line after each, then [DONE]."""
    run_id = f"run-{run.number}"
    usage = _usage_1x(run)

    def event(kind: str, payload: dict[str, Any]) -> str:
        chunk = {"type": kind, "runId": run_id, "from": "AGENT", "payload": payload}
        return f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}\n\n"

    def finish_step(reason: str) -> str:
        return event("step-finish", {"stepResult": {"reason": reason}, "output": {"usage": usage}})

    yield event("start", {"id": run.agent.id})
    call = run.tool_call
    if call is not None:
        yield event("step-start", {"request": {}, "warnings": [], "messageId": f"msg-{run.number}-tool"})
        yield event("tool-call", {k: call[k] for k in ("toolCallId", "toolName", "args")})
        yield event("tool-result", call)
        yield finish_step("tool-calls")
    yield event("step-start", {"request": {}, "warnings": [], "messageId": f"msg-{run.number}"})
    yield event("text-start", {"id": "1"})
    for piece in run.pieces:
        yield event("text-delta", {"id": "1", "text": piece})
    yield event("text-end", {"id": "1"})
    yield finish_step("stop")
    yield event("finish", {"stepResult": {"reason": "stop"}, "output": {"usage": usage}})
    yield "data: [DONE]\n\n"


def _rechunk(parts: Iterable[str], size: int | None) -> Iterator[bytes]:
    """The stream's bytes, one write per part, or cut into `size`-byte writes that split lines and UTF-8."""
    if size is None:
        for part in parts:
            yield part.encode()
        return
    data = "".join(parts).encode()
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- the server --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the server saw it (the `backendRequests` of the transcripts, plus the client)."""

    method: str
    path: str
    query: str
    content_type: str | None
    body: Any
    client: tuple[str, int] | None


@dataclass
class MastraServer:
    """A fake Mastra server of one generation; `app` is the ASGI app to serve."""

    generation: Generation
    agents: list[FakeAgent] = field(default_factory=server0_agents)
    #: When set, stream bodies are written in writes of this many bytes, splitting lines and characters.
    chunk_size: int | None = None
    requests: list[ReceivedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._runs = 0
        self.app = Starlette(
            routes=[
                Route("/api/agents", self._list, methods=["GET"]),
                Route("/api/agents/{agent_id}", self._detail, methods=["GET"]),
                Route("/api/agents/{agent_id}/generate", self._generate, methods=["POST"]),
                Route("/api/agents/{agent_id}/stream", self._stream, methods=["POST"]),
            ]
        )

    @property
    def clients(self) -> set[tuple[str, int] | None]:
        """The distinct client addresses (so TCP connections) requests came from."""
        return {request.client for request in self.requests}

    def posts(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.method == "POST"]

    # handlers

    async def _list(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({agent.id: self._entry(agent) for agent in self.agents})

    async def _detail(self, request: Request) -> Response:
        await self._record(request)
        agent = self._agent(request.path_params["agent_id"])
        if agent is None:
            return self._unknown(request.path_params["agent_id"])
        return JSONResponse(self._entry(agent))

    async def _generate(self, request: Request) -> Response:
        run = await self._start(request)
        if isinstance(run, Response):
            return run
        body = _generate_1x(run) if self.generation == CURRENT else _generate_010(run)
        return JSONResponse(body)

    async def _stream(self, request: Request) -> Response:
        run = await self._start(request)
        if isinstance(run, Response):
            return run
        if self.generation == CURRENT:
            # Mastra 1.x writes SSE framing with a generic stream helper: the content type is text/plain
            # on the servers we know, so clients must recognise the format from the body.
            parts = _stream_1x(run)
            headers = {"cache-control": "no-cache"}
        else:
            parts = _stream_010(run)
            headers = {"x-vercel-ai-data-stream": "v1"}

        async def body() -> AsyncIterator[bytes]:
            for chunk in _rechunk(parts, self.chunk_size):
                yield chunk
                await asyncio.sleep(0)  # one write per chunk: let the client see them one by one

        return StreamingResponse(body(), media_type="text/plain; charset=utf-8", headers=headers)

    # helpers

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        client = (request.client.host, request.client.port) if request.client else None
        self.requests.append(
            ReceivedRequest(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                content_type=request.headers.get("content-type"),
                body=body,
                client=client,
            )
        )
        return body

    async def _start(self, request: Request) -> _Run | Response:
        """Validate a generate/stream request the way the generation does, and run the mock model."""
        body = await self._record(request)
        agent_id = request.path_params["agent_id"]
        media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if self.generation == CURRENT and media_type != "application/json":
            return JSONResponse(
                {"error": f"Unsupported Media Type: expected application/json, got {media_type or 'none'}"},
                status_code=415,
            )
        if not isinstance(body, dict):
            return JSONResponse({"error": "Invalid JSON body"}, status_code=400)
        agent = self._agent(agent_id)
        if agent is None:
            return self._unknown(agent_id)
        self._runs += 1
        prompt = _last_user_text(body.get("messages"))
        return _Run(agent=agent, prompt=prompt, text=agent.respond(prompt), number=self._runs)

    def _agent(self, agent_id: str) -> FakeAgent | None:
        return next((agent for agent in self.agents if agent.id == agent_id), None)

    def _unknown(self, agent_id: str) -> Response:
        if self.generation == CURRENT:
            return JSONResponse({"error": f"Agent with id {agent_id} not found"}, status_code=404)
        # Mastra 0.10 lets `mastra.getAgent()` throw and its error handler turns that into a 500.
        return JSONResponse({"error": f"Agent with name {agent_id} not found"}, status_code=500)

    def _entry(self, agent: FakeAgent) -> dict[str, Any]:
        tools = {
            tool: {
                "id": tool,
                "description": f"The {tool} tool",
                "inputSchema": json.dumps({"type": "object", "properties": {"input": {"type": "string"}}}),
            }
            for tool in agent.tools
        }
        if self.generation == CURRENT:
            entry: dict[str, Any] = {"id": agent.id, "name": agent.name}
            if agent.description is not None:
                entry["description"] = agent.description
            return entry | {
                "instructions": agent.instructions,
                "tools": tools,
                "agents": {},
                "workflows": {},
                "provider": "mock",
                "modelId": f"mock-{agent.id}",
                "modelVersion": "v2",
                "defaultOptions": {},
            }
        entry = {"name": agent.name, "instructions": agent.instructions, "tools": tools}
        if agent.description is not None:
            entry["description"] = agent.description
        return entry | {
            "workflows": {},
            "provider": "mock",
            "modelId": f"mock-{agent.id}",
            "defaultGenerateOptions": {},
            "defaultStreamOptions": {},
        }


# --- serving -----------------------------------------------------------------------------------------------


class _TestServer(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl-C stays pytest's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 and a port the OS picks; yield its base URL; stop it on exit."""
    # The socket is bound here so that a bind failure is an ordinary exception, not uvicorn's sys.exit.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        http="h11",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _TestServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=10)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sock.close()


@contextlib.asynccontextmanager
async def mastra_server(
    generation: Generation, agents: list[FakeAgent] | None = None, *, chunk_size: int | None = None
) -> AsyncIterator[tuple[MastraServer, str]]:
    """A fake Mastra server of `generation`, served; yields it and its base URL."""
    server = MastraServer(generation, server0_agents() if agents is None else agents, chunk_size=chunk_size)
    async with serving(server.app) as url:
        yield server, url
