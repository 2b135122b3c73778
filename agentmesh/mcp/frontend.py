"""The MCP front-end of a node: four meta-tools over the node's in-process API, and their transports.

Theory of operation
-------------------
An MCP client connected to any node sees the whole mesh through a handful of tools rather than one
tool per agent: a mesh can hold far more agents than a client's tool list (or a model's context)
should, and names come and go with every UPDATE, while these four stay put.

* `list_agents`   - the Loc-RIB, filtered by name prefix or capability tag;
* `call_agent`    - a call forwarded hop by hop (`Node.call_agent` / `Node.stream_agent`), by name or
  by capability; streamed chunks go to the client as MCP progress notifications;
* `resolve_agent` - the longest match for a name, the chosen path and why it won (DESIGN §4.6);
* `mesh_status`   - the node, its peers and its table sizes.

Every result is a JSON object, sent both as text (what models read) and as `structuredContent`.
A refused or failed call is a tool result with `isError` (code, deciding node and reason in its
text), never a protocol error, so a model can read it and correct itself, as the old proxy's
clients expect (DESIGN §3).

The tools only call the same in-process API that tests and the admin API call (DESIGN §4.3). The
same `MCPServer` is served over Streamable HTTP (`/mcp`), legacy SSE (`GET /mcp/sse` +
`POST /mcp/message`) and stdio; see `McpHttpServer` and `serve_stdio`.

Access control (`agentmesh.access`, docs/access-control.md): with `access.callers` or `access.jwt`
configured, every HTTP request to the MCP endpoints (and `/status`) must carry a credential, which
`_Authenticated` turns into a `Caller` kept in the request's ASGI scope. The tools read it from the
request their message arrived with (the SDK hands it to them as `ctx.request_context.request`, on
Streamable HTTP and on SSE alike), so every message is judged by its own credential. Sessions with
no HTTP request behind them (stdio, in-process) get the rules of `access.stdio_caller`, or none.
A caller sees in `list_agents` only what it may call, and a refused call or resolution is a
`permission_denied` error result naming the rule; each refusal is logged as `call_denied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import sys
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Annotated, Any

import anyio
import uvicorn
from mcp.server import MCPServer, Server
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context
from mcp.server.sse import SseServerTransport
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from agentmesh.access import Access, Authenticator, AuthFailure, Caller, Verdict
from agentmesh.access_config import AccessConfig, compile_access
from agentmesh.agents.base import AgentRequest, CallErrorCode, CallFailure, ChatMessage
from agentmesh.config import join_host_port
from agentmesh.mcp.views import agent_view, mesh_status, path_view
from agentmesh.obs.logging import get_logger
from agentmesh.rib.decision import Path
from agentmesh.rib.policy import Verdict as PolicyVerdict
from agentmesh.speaker.node import Node
from agentmesh.transport.forwarding import Served
from agentmesh.transport.http import EmbeddedUvicorn, bind

#: The tool names, in the order they are registered.
TOOL_NAMES = ("list_agents", "call_agent", "resolve_agent", "mesh_status")
#: Loc-RIB entries `list_agents` returns unless asked for fewer or more: a mesh can hold millions.
DEFAULT_LIST_LIMIT = 500
MAX_LIST_LIMIT = 10_000
#: Other agents with the tag that a call by capability names in its result.
LISTED_CANDIDATES = 20
DEFAULT_CALL_TIMEOUT = 60.0
MAX_CALL_TIMEOUT = 3600.0
#: Paths of the HTTP transports (DESIGN §3).
STREAMABLE_HTTP_PATH = "/mcp"
SSE_PATH = "/mcp/sse"
SSE_MESSAGE_PATH = "/mcp/message"
#: How long `McpHttpServer.stop()` lets open HTTP responses finish before cancelling them.
HTTP_SHUTDOWN_GRACE = 3
#: How long `McpHttpServer.start()` waits for uvicorn to listen.
HTTP_STARTUP_TIMEOUT = 10.0

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Where `_Authenticated` keeps a request's `Caller` in its ASGI scope, for the tools to read.
CALLER_SCOPE_KEY = "agentmesh.caller"

INSTRUCTIONS = """\
This server is a node of an agentmesh: a BGP-style routing mesh of AI agents. Agents have dotted \
names (acme.weather.forecast) and capability tags. Use list_agents to discover them, call_agent to \
call one by name or by capability (the call is forwarded hop by hop to the node hosting it), \
resolve_agent to see which path a name takes and why, and mesh_status for this node and its peers."""


class ChatMessageInput(BaseModel):
    """One message of a conversation sent to a chat agent."""

    model_config = ConfigDict(extra="forbid")

    role: Annotated[str, Field(description="Who speaks: 'user', 'assistant' or 'system'.")]
    content: Annotated[str, Field(description="The message text.")]


# -- results ----------------------------------------------------------------------------------


def _result(payload: dict[str, Any], *, error: bool = False, text: str | None = None) -> CallToolResult:
    """A tool result carrying `payload` as JSON text and as structured content."""
    # Round-trip through JSON so that whatever a backend put in `data` is plain JSON on the wire.
    encoded = json.dumps(payload, ensure_ascii=False, default=str)
    content = [TextContent(type="text", text=encoded if text is None else f"{text}\n{encoded}")]
    return CallToolResult(content=content, structured_content=json.loads(encoded), is_error=error)


def _failure(failure: CallFailure, agent: str, what: str = "Call to agent", **extra: Any) -> CallToolResult:
    """An error result: the code, the node that decided and why, first in words, then as JSON."""
    payload = {
        "agent": agent,
        "error": {"code": failure.code.value, "node": failure.node, "reason": failure.reason},
        **extra,
    }
    text = f"{what} {agent!r} failed: {failure.code.value} at node {failure.node}: {failure.reason}"
    return _result(payload, error=True, text=text)


def _served(served: Served) -> dict[str, Any]:
    return {
        "text": served.reply.text,
        "data": served.reply.data,
        "served_by": served.served_by,
        "route": served.route,
        "trace": list(served.trace),
    }


# -- the tools --------------------------------------------------------------------------------


class _Tools:
    """The tool functions, bound to one node and its access settings."""

    def __init__(self, node: Node, access: Access) -> None:
        self.node = node
        self.access = access
        self._log = get_logger(node=node.name)

    async def list_agents(
        self,
        ctx: Context,
        prefix: Annotated[
            str, Field(description="Only agents whose name starts with this, e.g. 'acme.weather.'.")
        ] = "",
        capability: Annotated[str, Field(description="Only agents advertising this capability tag.")] = "",
        limit: Annotated[
            int, Field(ge=1, le=MAX_LIST_LIMIT, description="At most this many agents, by name.")
        ] = DEFAULT_LIST_LIMIT,
    ) -> CallToolResult:
        node = self.node
        try:
            caller = self._caller(ctx)
        except CallFailure as failure:
            return _failure(failure, prefix or capability, "Listing")
        if capability:
            entries = await node.with_capability(capability)
        else:
            entries = sorted((await node.loc_rib()).items())
        # Filtered by the caller's rules: a caller sees only what it may call.
        selected = [
            (name, path) for name, path in entries if name.startswith(prefix) and _may(caller, name, path)
        ]
        agents = [agent_view(name, path, node.asn) for name, path in selected[:limit]]
        return _result(
            {
                "node": node.name,
                "agents": agents,
                "count": len(agents),
                "matched": len(selected),
                "truncated": len(selected) > limit,
            }
        )

    async def call_agent(
        self,
        ctx: Context,
        name: Annotated[str, Field(description="The agent's name, e.g. 'demo.capitals'.")] = "",
        capability: Annotated[
            str,
            Field(
                description="Instead of a name: a capability tag; the first agent by name with it is called."
            ),
        ] = "",
        message: Annotated[str, Field(description="A single user message (a chat call).")] = "",
        messages: Annotated[
            list[ChatMessageInput] | None,
            Field(
                description="A conversation, oldest first; `message`, if given, is appended as the user's."
            ),
        ] = None,
        arguments: Annotated[
            dict[str, Any] | None,
            Field(description="JSON arguments for an agent with an input schema, instead of messages."),
        ] = None,
        options: Annotated[
            dict[str, Any] | None,
            Field(description="Backend options passed through unchanged (e.g. threadId, resourceId)."),
        ] = None,
        stream: Annotated[
            bool, Field(description="Stream the reply: chunks arrive as progress notifications.")
        ] = False,
        timeout_seconds: Annotated[
            float,
            Field(gt=0, le=MAX_CALL_TIMEOUT, description="Deadline for the whole call, every hop included."),
        ] = DEFAULT_CALL_TIMEOUT,
    ) -> CallToolResult:
        node = self.node
        agent = name or capability
        selection: dict[str, Any] | None = None
        try:
            caller = self._caller(ctx)
            if name and capability:
                raise _invalid(node, "give either name or capability, not both")
            if capability:
                agent, selection = await self._by_capability(caller, capability)
            elif not name:
                raise _invalid(node, "give the agent's name or a capability")
            else:
                await self._permit(caller, name)
            request = _request(node, message, messages, arguments, options)
            if stream:
                served, chunks = await self._stream(ctx, agent, request, timeout_seconds)
            else:
                served, chunks = await node.call_agent(agent, request, timeout=timeout_seconds), None
        except CallFailure as failure:
            return _failure(failure, agent, selected_by_capability=selection)
        payload = {"agent": agent, "selected_by_capability": selection, **_served(served), "streamed": stream}
        if chunks is not None:
            payload["chunks"] = chunks
        return _result(payload)

    async def _by_capability(self, caller: Caller | None, capability: str) -> tuple[str, dict[str, Any]]:
        """The agent a call by capability goes to: the first by name that the caller may call."""
        entries = await self.node.with_capability(capability)
        if not entries:
            raise CallFailure(
                CallErrorCode.NOT_FOUND, self.node.name, f"no agent advertises capability {capability!r}"
            )
        candidates = [entry for entry, path in entries if _may(caller, entry, path)]
        if caller is not None and not candidates:
            # Refused with the rule that refuses the first of them, without naming the agents hidden.
            first, path = entries[0]
            raise self._deny(caller, first, caller.check(first, path.attrs.agent.capabilities), capability)
        selection = {
            "capability": capability,
            "chosen": candidates[0],
            "candidates": candidates[:LISTED_CANDIDATES],
            "candidate_count": len(candidates),
        }
        return candidates[0], selection

    async def _stream(
        self, ctx: Context, agent: str, request: AgentRequest, timeout: float
    ) -> tuple[Served, list[str]]:
        """Collect a streamed reply, reporting each chunk to the client as it arrives."""
        chunks: list[str] = []
        served: Served | None = None
        events = self.node.stream_agent(agent, request, timeout=timeout)
        try:
            async for event in events:
                if isinstance(event, Served):
                    served = event
                    continue
                chunks.append(event)
                # A no-op unless the client sent a progress token with the call.
                await ctx.report_progress(len(chunks), None, event)
        finally:
            # If the client went away mid-stream, end the call (and its gRPC stream) now.
            if isinstance(events, AsyncGenerator):
                await events.aclose()
        if served is None:
            raise CallFailure(
                CallErrorCode.BACKEND_ERROR, self.node.name, "the stream ended without a result"
            )
        return served, chunks

    async def resolve_agent(
        self,
        ctx: Context,
        name: Annotated[str, Field(description="An agent name; resolved by longest match, like a route.")],
    ) -> CallToolResult:
        node = self.node
        try:
            caller = self._caller(ctx)
            found = await node.resolve_with_policy(name)
            if found is None:
                raise CallFailure(CallErrorCode.NOT_FOUND, node.name, f"no route to {name!r}")
            entry, decision = found.entry, found.decision
            # A name the caller may not call is refused naming the rule, as a call to it would be:
            # answering "not found" would send the caller looking for a route that is there.
            if caller is not None:
                verdict = caller.check(name, decision.best.attrs.agent.capabilities)
                if not verdict.allowed:
                    raise self._deny(caller, name, verdict)
        except CallFailure as failure:
            return _failure(failure, name, "Resolving")
        agent = agent_view(entry, decision.best, node.asn)
        best_verdict, *other_verdicts = found.verdicts
        alternatives = [
            {**path_view(path, node.asn), "policy": _policy_view(verdict)}
            for path, verdict in zip(decision.ranked[1:], other_verdicts, strict=True)
        ]
        payload: dict[str, Any] = {
            "name": name,
            "entry": entry,
            "exact": entry == name,
            "best_path": {**agent.pop("best_path"), "policy": _policy_view(best_verdict)},
            "agent": agent,
            "reason": decision.reason.value,
            "alternatives": alternatives,
        }
        return _result(payload)

    async def mesh_status(self, ctx: Context) -> CallToolResult:
        try:
            caller = self._caller(ctx)
        except CallFailure as failure:
            return _failure(failure, self.node.name, "Status of")
        return _result(await _status_for(self.node, caller))

    # -- access control ---------------------------------------------------------------------------

    def _caller(self, ctx: Context) -> Caller | None:
        """Whose rules apply to this message; None: nobody's, everything is open.

        The credential of the HTTP request the message came with, as `_Authenticated` found it; for
        a session with no HTTP request behind it (stdio, in-process), `access.stdio_caller`.
        """
        scope = getattr(ctx.request_context.request, "scope", None)
        if not isinstance(scope, Mapping):
            return self.access.stdio
        caller = scope.get(CALLER_SCOPE_KEY)
        if caller is None and self.access.authenticates:
            # Served over HTTP without `_Authenticated` in front (an app built elsewhere): fail closed.
            raise CallFailure(
                CallErrorCode.PERMISSION_DENIED, self.node.name, "the request carries no authenticated caller"
            )
        return caller if isinstance(caller, Caller) else None

    async def _permit(self, caller: Caller | None, name: str) -> None:
        """Refuse a call the caller's rules do not allow, judging the tags the agent advertises here."""
        if caller is None:
            return
        verdict = await _verdict(self.node, caller, name)
        if not verdict.allowed:
            raise self._deny(caller, name, verdict)

    def _deny(
        self, caller: Caller, name: str, verdict: Verdict, capability: str | None = None
    ) -> CallFailure:
        """Audit a refusal (never with the credential) and make it the failure the caller reads."""
        self._log.warning(
            "call_denied", caller=caller.name, name=name, rule=verdict.rule, capability=capability, via="mcp"
        )
        return CallFailure(CallErrorCode.PERMISSION_DENIED, self.node.name, verdict.reason)


def _policy_view(verdict: PolicyVerdict | None) -> dict[str, Any] | None:
    """How import policy treated a path: None when none applied (originated here, or no policy)."""
    if verdict is None:
        return None
    last = verdict.trail[-1]
    return {
        "accepted": verdict.accepted,
        "decided_by": "default" if verdict.decided_by_default else f"{last.policy}/{last.statement}",
        "trail": [str(step) for step in verdict.trail],
    }


def _may(caller: Caller | None, name: str, path: Path) -> bool:
    return caller is None or caller.check(name, path.attrs.agent.capabilities).allowed


async def _status_for(node: Node, caller: Caller | None) -> dict[str, Any]:
    """`mesh_status`, with the agents of hosted backends narrowed to those the caller may call."""
    status = await mesh_status(node)
    if caller is None:
        return status
    for backend in status["backends"]:
        backend["agents"] = [
            name for name in backend["agents"] if (await _verdict(node, caller, name)).allowed
        ]
    return status


async def _verdict(node: Node, caller: Caller, name: str) -> Verdict:
    """The caller's rules on `name`, judging the tags its best path advertises at this node."""
    found = await node.resolve(name)
    return caller.check(name, found[1].attrs.agent.capabilities if found is not None else ())


def _invalid(node: Node, reason: str) -> CallFailure:
    return CallFailure(CallErrorCode.INVALID_ARGUMENT, node.name, reason)


def _request(
    node: Node,
    message: str,
    messages: list[ChatMessageInput] | None,
    arguments: dict[str, Any] | None,
    options: dict[str, Any] | None,
) -> AgentRequest:
    conversation = [ChatMessage(m.role, m.content) for m in messages or ()]
    if message:
        conversation.append(ChatMessage("user", message))
    if arguments is not None and conversation:
        # Only one of the two travels on the wire (agentmesh.v1.AgentCall): refuse rather than drop one.
        raise _invalid(node, "give either messages or arguments, not both")
    return AgentRequest(tuple(conversation), arguments, options or {})


def _compiled(access: AccessConfig | Access | None) -> Access:
    return access if isinstance(access, Access) else compile_access(access)


def build_server(node: Node, *, access: AccessConfig | Access | None = None) -> MCPServer:
    """The MCP server of `node`: the four meta-tools, ready for any transport.

    `access` (the node's `access` configuration, or its compiled `Access`) decides what callers
    may see and call; without it everything is open, as before access control existed.
    """
    server: MCPServer = MCPServer(
        name=f"agentmesh-{node.name}",
        title=f"agentmesh node {node.name} (AS{node.asn})",
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )
    tools = _Tools(node, _compiled(access))
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    server.add_tool(
        tools.list_agents,
        name="list_agents",
        title="List agents",
        description=(
            "List the agents this node can reach (its Loc-RIB), optionally only those whose name starts "
            "with `prefix` or that advertise a `capability` tag. Each has its name, description, "
            "capabilities, backend protocol, input schema (JSON Schema or null) and best path: AS path, "
            "next hop, origin AS, whether it is hosted here, and backend health."
        ),
        annotations=read_only,
    )
    server.add_tool(
        tools.call_agent,
        name="call_agent",
        title="Call an agent",
        description=(
            "Call an agent anywhere in the mesh, by `name` or by `capability` (the first agent with that "
            "tag, by name; the result says which). Send a chat (`message` and/or `messages`) or JSON "
            "`arguments` matching the agent's input schema. With `stream` the reply's chunks arrive as "
            "progress notifications. The result has the reply `text` and `data`, the node that "
            "`served_by` it, the `route` (Loc-RIB entry) used and the `trace` of router ids it crossed. "
            "A failed call is an error result naming the code, the node that decided and why."
        ),
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
    )
    server.add_tool(
        tools.resolve_agent,
        name="resolve_agent",
        title="Resolve an agent name",
        description=(
            "Show how this node routes a name: the Loc-RIB entry that serves it (longest match), the "
            "chosen path, the reason it won the BGP decision process, and the alternative paths with "
            "their AS paths, next hops and sources. Each path's `policy` says how this node's import "
            "policy treated it (accepted, the statement or default that decided, the trail of "
            "statements that matched), or is null when no import policy applied."
        ),
        annotations=read_only,
    )
    server.add_tool(
        tools.mesh_status,
        name="mesh_status",
        title="Mesh status",
        description=(
            "This node (name, ASN, router id, address), its peers (address, ASN, session state and the "
            "reason of its last change) and the sizes of its routing tables."
        ),
        annotations=read_only,
    )
    return server


def _lowlevel(server: MCPServer) -> Server[Any]:
    # MCPServer has no public accessor for its protocol server, which the SSE transport and the
    # session manager need; the SDK's own Client and in-memory transport read it the same way.
    lowlevel: Server[Any] = server._lowlevel_server
    return lowlevel


# -- stdio ------------------------------------------------------------------------------------


async def serve_stdio(node: Node, server: MCPServer | None = None) -> None:
    """Serve MCP over this process's stdin/stdout until the client closes stdin.

    stdout carries JSON-RPC and nothing else. While serving, the SDK's transport points file
    descriptor 1 at stderr and writes the protocol to a private duplicate, so output of C code and
    child processes misses the wire; on top of that `sys.stdout` is redirected to stderr, and what
    was buffered in it is flushed before descriptor 1 is restored, so a `print()` in a backend never
    reaches the client, not even at exit. Logs go to stderr anyway (`agentmesh.obs.logging`).
    """
    lowlevel = _lowlevel(server or build_server(node))
    log = get_logger(node=node.name)
    stdout = sys.stdout
    # Entered before the redirect: the transport claims descriptor 1 through the real sys.stdout.
    async with stdio_server() as (read, write):
        log.info("mcp_stdio_serving")
        try:
            with contextlib.redirect_stdout(sys.stderr):
                await lowlevel.run(read, write, lowlevel.create_initialization_options())
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdout.flush()  # descriptor 1 still points at stderr here
    log.info("mcp_stdio_closed")


# -- HTTP -------------------------------------------------------------------------------------


class _SseStream:
    """`GET /mcp/sse`: one legacy MCP session per open event stream; it ends when the server stops."""

    def __init__(self, server: Server[Any], transport: SseServerTransport, closing: asyncio.Event) -> None:
        self._server = server
        self._transport = transport
        self._closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connected = False
        try:
            async with self._transport.connect_sse(scope, receive, send) as (read, write):
                connected = True
                async with anyio.create_task_group() as group:
                    group.start_soon(self._cancel_on_close, group.cancel_scope)
                    await self._server.run(read, write, self._server.create_initialization_options())
                    group.cancel_scope.cancel()
                # Closing the session's side ends the event stream, so its response completes rather
                # than being cut off when the server stops.
                await write.aclose()
        except ValueError:
            if connected:
                raise
            # Refused by the transport's Host/Origin checks, which have already answered.

    async def _cancel_on_close(self, scope: anyio.CancelScope) -> None:
        await self._closing.wait()
        scope.cancel()


class _InFlight:
    """Counts the Streamable HTTP requests being answered, so that stopping can wait for their calls.

    A POST carries a JSON-RPC request (a tool call, say) and ends with its response; GETs are
    long-lived notification streams and are not counted. The legacy SSE transport answers over its
    GET stream, so its calls are not counted either.
    """

    #: How long no request may be in flight before the server counts as drained: a client often
    #: follows a call with another request at once (the SDK fetches the tool list to check a result).
    QUIET = 0.3

    def __init__(self) -> None:
        self._count = 0
        self._started = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def track(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope.get("method") != "POST":
                await app(scope, receive, send)
                return
            self._count += 1
            self._started += 1
            self._idle.clear()
            try:
                await app(scope, receive, send)
            finally:
                self._count -= 1
                if not self._count:
                    self._idle.set()

        return counted

    async def idle(self) -> None:
        """Return once no request has been in flight for QUIET seconds."""
        while True:
            await self._idle.wait()
            started = self._started
            await asyncio.sleep(self.QUIET)
            if self._idle.is_set() and self._started == started:
                return


class _SseMessages:
    """`POST /mcp/message?session_id=...`: a client message for an open SSE session."""

    def __init__(self, transport: SseServerTransport) -> None:
        self._transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._transport.handle_post_message(scope, receive, send)


class _Authenticated:
    """An HTTP endpoint that needs a credential of `access.callers` (or a JWT): 401 without one.

    Each request is judged on its own, the SSE stream and every message POST alike, so a token
    that expires or is removed stops working at once. The caller found is put in the request's
    scope for the tools (`CALLER_SCOPE_KEY`) and, as the SDK's `AuthenticatedUser`, for the SDK,
    which then binds each MCP session to the caller that opened it. With no authenticator (neither
    callers nor jwt configured) every request passes through unchanged.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator | None, log: Any) -> None:
        self._app = app
        self._authenticator = authenticator
        self._log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._authenticator is None:
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        bearer = _bearer_token(headers.get("authorization"))
        api_key = headers.get("x-api-key")
        try:
            caller = self._authenticator.authenticate(bearer, api_key, time.time())
        except AuthFailure as failure:
            # The reason is for the operator; the client learns only that it is not let in.
            client = scope.get("client")
            self._log.warning(
                "mcp_unauthenticated",
                reason=str(failure),
                path=scope.get("path"),
                client=client and client[0],
            )
            await _unauthorized(presented=bool(bearer or api_key))(scope, receive, send)
            return
        user = AuthenticatedUser(AccessToken(token="", client_id=caller.name, scopes=[], subject=caller.name))
        scope = {**scope, CALLER_SCOPE_KEY: caller, "user": user, "auth": AuthCredentials()}
        await self._app(scope, receive, send)


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 7235 §2.1)
        return None
    return token.strip() or None


def _unauthorized(*, presented: bool) -> JSONResponse:
    """RFC 6750 §3: a challenge, with `invalid_token` only when a credential was sent.

    The same answer for a missing, unknown, expired or badly signed credential, so that it tells
    nobody which callers exist.
    """
    challenge = 'Bearer realm="agentmesh"' + (', error="invalid_token"' if presented else "")
    return JSONResponse(
        {"error": "unauthorized", "error_description": "a valid bearer token or X-API-Key is required"},
        status_code=401,
        headers={"WWW-Authenticate": challenge},
    )


class McpHttpServer:
    """The node's MCP front-end over HTTP, with uvicorn in a task of the running loop.

    One ASGI app serves Streamable HTTP at `/mcp`, the legacy SSE transport at `GET /mcp/sse` and
    `POST /mcp/message`, `GET /health` and `GET /status` (DESIGN §3). With `access` that
    authenticates (callers or jwt), all but `/health` need a credential; `/health` stays open
    for probes.
    """

    def __init__(
        self,
        node: Node,
        server: MCPServer | None = None,
        *,
        access: AccessConfig | Access | None = None,
        transport_security: TransportSecuritySettings | None = None,
    ) -> None:
        self.node = node
        self.access = _compiled(access)
        self.server = server or build_server(node, access=self.access)
        self._transport_security = transport_security
        self._log = get_logger(node=node.name)
        self._uvicorn: EmbeddedUvicorn | None = None
        self._serving: asyncio.Task[None] | None = None
        self._sessions: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._in_flight = _InFlight()
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        """The Streamable HTTP endpoint, e.g. `http://127.0.0.1:8080/mcp`."""
        return f"http://{join_host_port(self.host, self.port)}{STREAMABLE_HTTP_PATH}"

    @property
    def sse_url(self) -> str:
        """The legacy SSE endpoint."""
        return f"http://{join_host_port(self.host, self.port)}{SSE_PATH}"

    def _shutdown_grace(self) -> int:
        """Seconds open HTTP responses get when the server stops: the node's drain time, if set."""
        drain = self.node.config.timers.drain_time
        return HTTP_SHUTDOWN_GRACE if drain is None else math.ceil(drain)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on `host:port` (0: the OS chooses) and serve; returns the bound port."""
        if self._serving is not None:
            raise RuntimeError("the MCP HTTP server is already started")
        self._closing = asyncio.Event()
        sock = bind(host, port)
        self.host, self.port = host, sock.getsockname()[1]
        security = self._transport_security
        if security is None and host in _LOOPBACK_HOSTS:
            # The SDK's own default for loopback: refuse DNS-rebinding Host and Origin headers.
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
        lowlevel = _lowlevel(self.server)
        manager = StreamableHTTPSessionManager(app=lowlevel, security_settings=security)
        sse = SseServerTransport(SSE_MESSAGE_PATH, security_settings=security)
        guard = self._guard
        app = Starlette(
            routes=[
                Route(STREAMABLE_HTTP_PATH, guard(self._in_flight.track(StreamableHTTPASGIApp(manager)))),
                Route(SSE_PATH, guard(_SseStream(lowlevel, sse, self._closing)), methods=["GET"]),
                Route(SSE_MESSAGE_PATH, guard(_SseMessages(sse)), methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/status", guard(request_response(self._status)), methods=["GET"]),
            ]
        )
        # The session manager runs in a task of ours, not in the app's lifespan, so that stop() can
        # end open streams before uvicorn waits for their connections to close.
        try:
            return await self._serve(manager, app, sock)
        except BaseException:
            await self.stop()  # nothing half-started is left running, and the socket is released
            sock.close()
            raise

    async def _serve(self, manager: StreamableHTTPSessionManager, app: Starlette, sock: socket.socket) -> int:
        ready = asyncio.Event()
        self._sessions = asyncio.create_task(
            self._run_sessions(manager, ready), name="agentmesh-mcp-sessions"
        )
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({waiting, self._sessions}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiting.cancel()
            raise RuntimeError("the MCP session manager failed to start") from self._sessions.exception()
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # uvicorn's default config would send access logs to stdout
            access_log=False,
            timeout_graceful_shutdown=self._shutdown_grace(),
        )
        self._uvicorn = EmbeddedUvicorn(config)
        self._serving = asyncio.create_task(self._uvicorn.serve(sockets=[sock]), name="agentmesh-mcp-http")
        async with asyncio.timeout(HTTP_STARTUP_TIMEOUT):
            while not self._uvicorn.started:
                if self._serving.done():
                    await self.stop()
                    raise RuntimeError("the MCP HTTP server failed to start")
                await asyncio.sleep(0.01)
        self._log.info("mcp_http_started", url=self.url, sse_url=self.sse_url)
        return self.port

    async def stop(self) -> None:
        """Let calls in flight finish (`timers.drain_time`), then end open sessions and streams, stop
        listening and wait for uvicorn to finish."""
        drain = self.node.config.timers.drain_time
        if drain and self._uvicorn is not None:
            # Ending the sessions would cancel the tool calls they run: wait for those first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._in_flight.idle(), drain)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        self._closing.set()
        for task in (self._sessions, self._serving):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        stopped = self._serving is not None
        self._uvicorn = self._serving = self._sessions = None
        if stopped:
            self._log.info("mcp_http_stopped")

    async def _run_sessions(self, manager: StreamableHTTPSessionManager, ready: asyncio.Event) -> None:
        async with manager.run():
            ready.set()
            await self._closing.wait()

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _status(self, request: Request) -> JSONResponse:
        caller = request.scope.get(CALLER_SCOPE_KEY)
        return JSONResponse(await _status_for(self.node, caller if isinstance(caller, Caller) else None))

    def _guard(self, app: ASGIApp) -> ASGIApp:
        """`app` behind the credential check (a pass-through when access control does not authenticate)."""
        return _Authenticated(app, self.access.authenticator, self._log)
