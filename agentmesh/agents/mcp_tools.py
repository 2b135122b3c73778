"""The `mcp` backend: the tools of one MCP server, advertised as agents (DESIGN.md §3).

This makes agentmesh a federating MCP gateway: every tool of the server becomes an agent whose id is the
tool's name and whose input schema is the tool's `inputSchema`.

The server is reached either by running a command (stdio transport, the server is a subprocess of the
node) or at a URL (Streamable HTTP). One client session is opened for the backend's lifetime and reused
by every call.

Who owns the session: the MCP client (`mcp.Client`) holds anyio task groups and cancel scopes, which must
be entered and exited in one and the same task. A call of the backend runs in whatever task the caller
has, so the session cannot be entered there. Instead each session is owned by a dedicated asyncio task
(`_Connection`): it enters the client, hands it out, waits until it is told to stop, and exits the client
itself. Callers only send requests through the entered session (sending is allowed from any task of the
loop: it is anyio memory streams and per-request cancel scopes that the caller enters and exits itself),
so concurrent calls share the session. When the connection breaks (the subprocess died, the HTTP session
was lost) the failed operation is retried once on a new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import mcp_types
from mcp import Client, MCPError, StdioServerParameters

from agentmesh.agents.base import AgentInfo, AgentReply, AgentRequest, RequestError
from agentmesh.bgp.messages import BackendProtocol

#: Running a tool may take long; establishing a session may not.
DEFAULT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 30.0
#: How long `close` waits for the session (and the subprocess) to end before cancelling its task.
CLOSE_TIMEOUT = 10.0
#: The property of a tool's input schema that a chat-style request fills with the user's last message.
MESSAGE_PROPERTY = "message"
#: A server whose listing never ends cannot hang discovery.
_MAX_LIST_PAGES = 100

_T = TypeVar("_T")


class McpBackendError(Exception):
    """The MCP server could not be used: unreachable, a protocol error, an unknown tool, a bad request."""


class McpRequestError(McpBackendError, RequestError):
    """The request does not fit the server: an unknown tool, arguments it refuses (INVALID_PARAMS)."""


class McpToolError(McpBackendError, RequestError):
    """The tool ran and reported an error (`isError: true`); the message is the tool's own text.

    The server served the call, so this is no sign of its ill health.
    """


class _Connection:
    """One MCP client session, owned by a task of its own that enters and exits it."""

    def __init__(self, target: StdioServerParameters | str, timeout: float | None) -> None:
        self._target = target
        self._timeout = timeout
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        #: Why the owning task ended, when it ended with an error.
        self.error: BaseException | None = None

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stop.is_set()

    async def open(self, connect_timeout: float) -> Client:
        self._task = asyncio.create_task(self._own(), name=f"mcp-session {self._describe()}")
        waiting: set[asyncio.Future[Any]] = {self._ready, self._task}
        done, _ = await asyncio.wait(waiting, timeout=connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._ready in done and not self._ready.cancelled():
            return self._ready.result()
        await self.close()
        if self.error is not None:
            raise McpBackendError(
                f"cannot connect to MCP server {self._describe()}: {_text(self.error)}"
            ) from (self.error)
        raise McpBackendError(f"cannot connect to MCP server {self._describe()}: timed out")

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _own(self) -> None:
        """The task that owns the session: enter it, publish it, wait for the stop, exit it."""
        try:
            # No response cache: a listing must show the tools the server has now.
            async with Client(self._target, read_timeout_seconds=self._timeout, cache=None) as client:
                self._ready.set_result(client)
                await self._stop.wait()
        except Exception as error:
            self.error = error
        finally:
            if not self._ready.done():
                self._ready.cancel()

    def _describe(self) -> str:
        if isinstance(self._target, str):
            return self._target
        return " ".join([self._target.command, *self._target.args])


class McpToolsBackend:
    """The tools of one MCP server (a stdio subprocess or a Streamable HTTP URL) as agents."""

    protocol = BackendProtocol.MCP

    def __init__(
        self,
        name: str,
        *,
        command: list[str] | None = None,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        if (command is None) == (url is None):
            raise ValueError("an MCP backend needs exactly one of `command` and `url`")
        self.name = name
        self.command = list(command) if command is not None else None
        self.url = url
        self._target: StdioServerParameters | str
        if command is not None:
            if not command:
                raise ValueError("the MCP server command is empty")
            # Resolved now, so that a missing executable is a clear error rather than a spawn failure later.
            executable = shutil.which(command[0]) or command[0]
            self._target = StdioServerParameters(
                command=executable, args=list(command[1:]), env=dict(env) if env else None, cwd=cwd
            )
        else:
            assert url is not None
            self._target = url
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: The tools of the last listing, by name: their schemas decide how chat requests are sent.
        self._tools: dict[str, mcp_types.Tool] = {}
        #: Why the latest probe failed, None after one that worked.
        self.last_probe_error: str | None = None

    def __repr__(self) -> str:
        where = f"url={self.url!r}" if self.url is not None else f"command={self.command!r}"
        return f"McpToolsBackend({self.name!r}, {where})"

    # --- the Backend protocol ------------------------------------------------------------------------------

    async def discover(self) -> list[AgentInfo]:
        tools = await self._list_tools()
        return [
            AgentInfo(
                id=tool.name,
                description=(tool.description or tool.title or "").strip(),
                input_schema=dict(tool.input_schema),
            )
            for tool in tools
        ]

    async def call(self, agent_id: str, request: AgentRequest) -> AgentReply:
        arguments = await self._arguments(agent_id, request)
        # Not retried once sent: a tool call may have side effects, and running it twice is worse than
        # reporting the failure. A session found dead before sending is still replaced first.
        result = await self._run(lambda client: client.call_tool(agent_id, arguments), retry=False)
        text = "\n".join(block.text for block in result.content if isinstance(block, mcp_types.TextContent))
        if result.is_error:
            raise McpToolError(text or f"tool {agent_id!r} failed without a message")
        data: Any = result.structured_content
        if data is None:
            data = [
                block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
            ]
        return AgentReply(text=text, data=data)

    async def stream(self, agent_id: str, request: AgentRequest) -> AsyncIterator[str]:
        # A tool call has one result: the whole text, once.
        yield (await self.call(agent_id, request)).text

    async def probe(self) -> bool:
        """List the tools, as discovery does: the session works (a broken one is replaced first)."""
        try:
            await self._list_tools()
        except Exception as error:
            self.last_probe_error = str(error) or type(error).__name__
            return False
        self.last_probe_error = None
        return True

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            connection, self._connection, self._client = self._connection, None, None
            if connection is not None:
                await connection.close()

    # --- internals -----------------------------------------------------------------------------------------

    async def _list_tools(self) -> list[mcp_types.Tool]:
        async def list_all(client: Client) -> list[mcp_types.Tool]:
            tools: list[mcp_types.Tool] = []
            cursor: str | None = None
            for _ in range(_MAX_LIST_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools

        tools = await self._run(list_all)
        self._tools = {tool.name: tool for tool in tools}
        return tools

    async def _arguments(self, agent_id: str, request: AgentRequest) -> dict[str, Any]:
        """The arguments of `tools/call`: the request's JSON arguments, or its last user message."""
        if request.arguments is not None:
            return dict(request.arguments)
        tool = self._tools.get(agent_id)
        if tool is None:
            await self._list_tools()
            tool = self._tools.get(agent_id)
        if tool is None:
            raise McpRequestError(f"MCP server {self._where()} has no tool {agent_id!r}")
        properties = tool.input_schema.get("properties")
        if not isinstance(properties, Mapping) or MESSAGE_PROPERTY not in properties:
            raise McpRequestError(
                f"tool {agent_id!r} takes JSON arguments, not a chat message "
                f"(its input schema has no {MESSAGE_PROPERTY!r} property)"
            )
        return {MESSAGE_PROPERTY: request.last_user_text()}

    async def _run(self, operation: Callable[[Client], Awaitable[_T]], *, retry: bool = True) -> _T:
        """Run `operation` on the session, opening it first if need be, and (when `retry`) once more on a
        new session when the connection turns out to be broken."""
        connection, client = await self._session()
        try:
            return await operation(client)
        except Exception as error:
            if not _broken(error, connection):
                raise self._error(error) from error
            if not retry:
                await self._discard(connection)  # the next operation starts a new session
                raise self._error(error) from error
        connection, client = await self._session(replace=connection)
        try:
            return await operation(client)
        except Exception as error:
            raise self._error(error) from error

    async def _session(self, replace: _Connection | None = None) -> tuple[_Connection, Client]:
        async with self._lock:
            if self._closed:
                raise McpBackendError(f"MCP backend {self.name!r} is closed")
            connection = self._connection
            if connection is not None and (connection is replace or not connection.alive):
                # Broken: end it (and its subprocess) before starting the next one.
                self._connection, self._client = None, None
                await connection.close()
            if self._connection is None or self._client is None:
                connection = _Connection(self._target, self._timeout)
                self._client = await connection.open(self._connect_timeout)
                self._connection = connection
            return self._connection, self._client

    async def _discard(self, connection: _Connection) -> None:
        async with self._lock:
            if self._connection is connection:
                self._connection, self._client = None, None
                await connection.close()

    def _error(self, error: Exception) -> McpBackendError:
        if isinstance(error, McpBackendError):
            return error
        if isinstance(error, MCPError):
            kind = McpRequestError if error.code == mcp_types.INVALID_PARAMS else McpBackendError
            return kind(f"MCP server {self._where()} answered an error: {error.message}")
        return McpBackendError(f"request to MCP server {self._where()} failed: {_text(error)}")

    def _where(self) -> str:
        return self.url if self.url is not None else " ".join(self.command or ())


def _broken(error: BaseException, connection: _Connection) -> bool:
    """Whether `error` means the session is gone (and so is worth one retry on a new session)."""
    if not connection.alive:
        return True
    if isinstance(error, MCPError):
        return error.code == mcp_types.CONNECTION_CLOSED
    if isinstance(error, BaseExceptionGroup):
        return any(_broken(inner, connection) for inner in error.exceptions)
    return isinstance(
        error, anyio.ClosedResourceError | anyio.BrokenResourceError | anyio.EndOfStream | ConnectionError
    )


def _text(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return _text(error.exceptions[0])
    return str(error) or type(error).__name__
