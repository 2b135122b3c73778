"""The old Mastra proxy's MCP tools, `listMastraAgents` and `callMastraAgent`, for its unchanged clients.

DESIGN.md §3: clients of the proxy this project replaces must keep working when pointed at an agentmesh
node. Their tools, input schemas, output JSON and error texts are copied from the recorded transcripts in
/work/shared/compat/old-proxy (`tools-list.json`, `list-agents.json`, `call-generate-unique.json`,
`call-stream-unique.json`, `call-error-unknown-agent.json`).

`MastraDirectory` is the configured Mastra servers, `server0..N` in `MASTRA_SERVERS` order; it lists their
agents (concurrently; a failing server shows its error and nothing else) and resolves a `targetAgentId`:

=========================================  ==========================  ===================================
targetAgentId / serverUrl                   server used                 resolutionMethod
=========================================  ==========================  ===================================
`serverN:agent` (N configured)              serverN                     `explicit_qualification`
`name:agent`, unknown name, `serverUrl`     the server with that URL    `explicit_url_override`
`name:agent`, unknown name, no serverUrl    error (available servers)   -
`agent` with `serverUrl`                    the server with that URL    `explicit_url_override`
`agent` on exactly one server               that server                 `unique_auto_resolution`
`agent` on several, server0 among them      server0                     `conflict_default_server`
`agent` on several, server0 not among them  the lowest index            `conflict_first_available`
`agent` on no server                        error (available servers)   -
=========================================  ==========================  ===================================

`unique_auto_resolution` is in the transcripts; the other names are the old proxy's own (its
`callMastraAgent` source), which the transcripts do not exercise.

Fixed on purpose, compared with the old proxy:

* in a conflict the lowest-indexed server wins, always (server0 when it has the agent);
* `server1:agent:with:colons` calls `agent:with:colons` (the old proxy's `split(':', 2)` cut it to `agent`);
* POSTs are `application/json` (the old proxy's `text/plain` fails against Mastra 1.x), and both
  generations' streams are decoded (`agentmesh.agents.mastra`);
* `agentOptions` cannot replace `messages`, `threadId` or `resourceId` (`request_body`);
* `serverUrl` must be one of the configured servers unless the directory is built with
  `allow_custom_urls=True`: otherwise any MCP client could make the node send requests to any URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, Field

from agentmesh.agents.base import AgentRequest, ChatMessage
from agentmesh.agents.mastra import MASTRA_SERVERS_ENV, MastraBackend, MastraError, named_mastra_servers

#: The tool names, in the order the old proxy listed them.
COMPAT_TOOL_NAMES = ("callMastraAgent", "listMastraAgents")

#: How long listing one server may take before it is reported as failed.
DEFAULT_LIST_TIMEOUT = 10.0

UNIQUE_AUTO_RESOLUTION = "unique_auto_resolution"
CONFLICT_DEFAULT_SERVER = "conflict_default_server"
CONFLICT_FIRST_AVAILABLE = "conflict_first_available"
EXPLICIT_QUALIFICATION = "explicit_qualification"
EXPLICIT_URL_OVERRIDE = "explicit_url_override"

STREAM_NOTE = (
    "Stream was collected in real-time with timestamps. "
    "Each chunk was processed as it arrived from the agent."
)

# The descriptions and input schemas exactly as the old proxy listed them (tools-list.json).
CALL_DESCRIPTION = (
    "Proxies requests to a target Mastra agent using @mastra/client-js. Supports 'generate' and 'stream' "
    "interactions. Stream responses collect chunks in real-time with timestamps for optimal streaming "
    "experience within MCP constraints. Use 'server:agentId' format for multi-server environments with "
    "agent name conflicts."
)
LIST_DESCRIPTION = (
    "Lists available agents on all configured Mastra servers. Supports both single and multi-server setups "
    "with automatic conflict detection."
)
_DRAFT_07 = "http://json-schema.org/draft-07/schema#"
CALL_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "targetAgentId": {"type": "string", "minLength": 1},
        "interactionType": {"type": "string", "enum": ["generate", "stream"]},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant", "system"]},
                    "content": {"type": "string"},
                },
                "required": ["role", "content"],
                "additionalProperties": False,
            },
            "minItems": 1,
        },
        "serverUrl": {"type": "string", "format": "uri"},
        "threadId": {"type": "string"},
        "resourceId": {"type": "string"},
        "agentOptions": {"type": "object", "additionalProperties": {}},
    },
    "required": ["targetAgentId", "interactionType", "messages"],
    "additionalProperties": False,
    "$schema": _DRAFT_07,
}
LIST_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
    "$schema": _DRAFT_07,
}


class CompatError(Exception):
    """A call the directory cannot make; the text is what the old proxy's clients read after the prefix."""


# -- the directory ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MastraServerEntry:
    """One configured Mastra server."""

    name: str
    url: str
    backend: MastraBackend


@dataclass(frozen=True, slots=True)
class CompatAgent:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ServerListing:
    """The agents of one server, or why they could not be listed (`error` set, `agents` empty)."""

    server: MastraServerEntry
    agents: tuple[CompatAgent, ...] = ()
    error: str | None = None

    @property
    def online(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a `targetAgentId` goes, and why."""

    server: MastraServerEntry
    agent_id: str
    fully_qualified_id: str
    resolution_method: str


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


class MastraDirectory:
    """The configured Mastra servers as `(serverN, url, MastraBackend)`, in `MASTRA_SERVERS` order."""

    def __init__(
        self,
        servers: Iterable[tuple[str, str, MastraBackend]],
        *,
        list_timeout: float = DEFAULT_LIST_TIMEOUT,
        allow_custom_urls: bool = False,
    ) -> None:
        self.servers = tuple(MastraServerEntry(name, url, backend) for name, url, backend in servers)
        if not self.servers:
            raise ValueError("a MastraDirectory needs at least one server")
        names = [server.name for server in self.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate server names in {names}")
        self.list_timeout = list_timeout
        self.allow_custom_urls = allow_custom_urls

    @classmethod
    def from_env(cls, value: str | None = None, **options: Any) -> MastraDirectory:
        """The servers of a `MASTRA_SERVERS` value (by default the environment's), named server0..N."""
        if value is None:
            value = os.environ.get(MASTRA_SERVERS_ENV)
        return cls(
            ((name, url, MastraBackend(name, url)) for name, url in named_mastra_servers(value)), **options
        )

    def __repr__(self) -> str:
        return f"MastraDirectory({[(s.name, s.url) for s in self.servers]!r})"

    @property
    def server_names(self) -> list[str]:
        return [server.name for server in self.servers]

    def server(self, name: str) -> MastraServerEntry | None:
        return next((server for server in self.servers if server.name == name), None)

    def server_for_url(self, url: str) -> MastraServerEntry | None:
        return next((server for server in self.servers if _same_url(server.url, url)), None)

    async def aclose(self) -> None:
        """Close every server's HTTP client."""
        await asyncio.gather(*(server.backend.close() for server in self.servers))

    # listing

    async def list_agents(self) -> list[ServerListing]:
        """Every server's agents, fetched concurrently, in server order."""
        return list(await asyncio.gather(*(self._list_one(server) for server in self.servers)))

    async def _list_one(self, server: MastraServerEntry) -> ServerListing:
        try:
            async with asyncio.timeout(self.list_timeout):
                # The raw listing, not `discover()`: the old proxy showed each agent's `name`.
                listing = await server.backend._get_json("/api/agents")
        except MastraError as error:
            return ServerListing(server, error=str(error))
        except TimeoutError:
            return ServerListing(server, error=f"listing agents timed out after {self.list_timeout:g}s")
        if not isinstance(listing, Mapping):
            return ServerListing(server, error="/api/agents did not answer an object keyed by agent id")
        agents = []
        for agent_id, entry in listing.items():
            name = entry.get("name") if isinstance(entry, Mapping) else None
            agents.append(
                CompatAgent(str(agent_id), name if isinstance(name, str) and name else str(agent_id))
            )
        return ServerListing(server, tuple(agents))

    async def listing_payload(self) -> dict[str, Any]:
        """The JSON `listMastraAgents` answers (list-agents.json)."""
        listings = await self.list_agents()
        holders: dict[str, list[str]] = {}
        server_agents: list[dict[str, Any]] = []
        for listing in listings:
            server = listing.server
            entry: dict[str, Any] = {
                "serverName": server.name,
                "serverUrl": server.url,
                "serverDescription": f"Mastra Server ({server.name})",
                "agents": [
                    {"id": agent.id, "name": agent.name, "fullyQualifiedId": f"{server.name}:{agent.id}"}
                    for agent in listing.agents
                ],
                "status": "online" if listing.online else "error",
            }
            if not listing.online:
                entry["error"] = listing.error
            server_agents.append(entry)
            for agent in listing.agents:
                holders.setdefault(agent.id, []).append(server.name)
        return {
            "serverAgents": server_agents,
            "summary": {
                "totalServers": len(listings),
                "onlineServers": sum(listing.online for listing in listings),
                "totalAgents": sum(len(listing.agents) for listing in listings),
                "agentConflicts": [
                    {"agentId": agent_id, "servers": servers}
                    for agent_id, servers in holders.items()
                    if len(servers) > 1
                ],
            },
        }

    # resolution

    async def resolve(self, target_agent_id: str, server_url: str | None = None) -> Resolution:
        """The server and agent id a `callMastraAgent` call goes to (see the module's table)."""
        if ":" in target_agent_id:
            # Everything after the FIRST colon is the agent id.
            server_name, _, agent_id = target_agent_id.partition(":")
            server = self.server(server_name)
            if server is not None:
                return Resolution(server, agent_id, target_agent_id, EXPLICIT_QUALIFICATION)
            if server_url:
                return Resolution(
                    self._url_server(server_url), agent_id, target_agent_id, EXPLICIT_URL_OVERRIDE
                )
            raise CompatError(
                f"Unknown server '{server_name}'. Available servers: {', '.join(self.server_names)}. "
                "Or provide serverUrl parameter."
            )
        agent_id = target_agent_id
        if server_url:
            server = self._url_server(server_url)
            return Resolution(server, agent_id, f"{server.name}:{agent_id}", EXPLICIT_URL_OVERRIDE)
        listings = await self.list_agents()
        found = [
            listing.server for listing in listings if any(agent.id == agent_id for agent in listing.agents)
        ]
        if not found:
            message = (
                f"Agent '{agent_id}' not found on any configured server. Available servers: "
                f"{', '.join(self.server_names)}. Use 'server:agentId' format or check agent name."
            )
            failed = [f"{listing.server.name}: {listing.error}" for listing in listings if not listing.online]
            if failed:
                message += f" Servers that could not be listed: {'; '.join(failed)}."
            raise CompatError(message)
        # `found` is in server order: the lowest index wins.
        server = found[0]
        if len(found) == 1:
            method = UNIQUE_AUTO_RESOLUTION
        elif server is self.servers[0]:
            method = CONFLICT_DEFAULT_SERVER
        else:
            method = CONFLICT_FIRST_AVAILABLE
        return Resolution(server, agent_id, f"{server.name}:{agent_id}", method)

    def _url_server(self, url: str) -> MastraServerEntry:
        server = self.server_for_url(url)
        if server is not None:
            return server
        if not self.allow_custom_urls:
            configured = ", ".join(f"{s.name} ({s.url})" for s in self.servers)
            raise CompatError(
                f"Server URL '{url}' is not a configured server. Configured servers: {configured}."
            )
        # The old proxy named a server it was not configured with "custom".
        return MastraServerEntry("custom", url, MastraBackend("custom", url))

    async def call(
        self,
        resolution: Resolution,
        interaction_type: Literal["generate", "stream"],
        request: AgentRequest,
    ) -> Any:
        """The `responseData` of a call: the server's generate JSON, or the collected stream."""
        server = resolution.server
        try:
            if interaction_type == "generate":
                reply = await server.backend.call(resolution.agent_id, request)
                return reply.data if reply.data is not None else {"text": reply.text}
            return await _collect_stream(server.backend, resolution.agent_id, request)
        finally:
            if server not in self.servers:  # a one-off "custom" server
                await server.backend.close()


def _timestamp(moment: datetime | None = None) -> str:
    """JavaScript's `Date.toISOString()`: UTC, milliseconds, `Z`."""
    moment = moment or datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _collect_stream(backend: MastraBackend, agent_id: str, request: AgentRequest) -> dict[str, Any]:
    """The `collected_stream` of call-stream-unique.json: each text piece with when it arrived."""
    start = datetime.now(UTC)
    started = time.monotonic()
    chunks: list[dict[str, Any]] = []
    async for piece in backend.stream(agent_id, request):
        chunks.append({"content": piece, "timestamp": _timestamp(), "index": len(chunks)})
    end = datetime.now(UTC)
    return {
        "type": "collected_stream",
        "chunks": chunks,
        "summary": {
            "totalChunks": len(chunks),
            "startTime": _timestamp(start),
            "endTime": _timestamp(end),
            "durationMs": round((time.monotonic() - started) * 1000),
            "note": STREAM_NOTE,
        },
    }


# -- the MCP tools ----------------------------------------------------------------------------


class CompatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str


def _json_text(payload: Any) -> str:
    # JSON.stringify: no spaces, non-ASCII as is.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)


def _ok(payload: Any) -> CallToolResult:
    # Text only, as the old proxy answered (no structuredContent).
    return CallToolResult(content=[TextContent(type="text", text=_json_text(payload))], is_error=False)


def _error(target_agent_id: str, reason: str) -> CallToolResult:
    text = f"Error: Failed to interact with Mastra agent '{target_agent_id}': {reason}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class _CompatTools:
    def __init__(self, directory: MastraDirectory) -> None:
        self.directory = directory

    # camelCase parameters: they are the old proxy's argument names.
    async def call_mastra_agent(
        self,
        targetAgentId: Annotated[str, Field(min_length=1)],
        interactionType: Literal["generate", "stream"],
        messages: Annotated[list[CompatMessage], Field(min_length=1)],
        serverUrl: str | None = None,
        threadId: str | None = None,
        resourceId: str | None = None,
        agentOptions: dict[str, Any] | None = None,
    ) -> CallToolResult:
        options: dict[str, Any] = {}
        if threadId:
            options["threadId"] = threadId
        if resourceId:
            options["resourceId"] = resourceId
        if agentOptions:
            options["agentOptions"] = agentOptions
        request = AgentRequest(tuple(ChatMessage(m.role, m.content) for m in messages), None, options)
        try:
            resolution = await self.directory.resolve(targetAgentId, serverUrl)
            response_data = await self.directory.call(resolution, interactionType, request)
        except (CompatError, MastraError) as error:
            return _error(targetAgentId, str(error))
        return _ok(
            {
                "success": True,
                "responseData": response_data,
                "interactionType": interactionType,
                "serverUsed": resolution.server.url,
                "agentIdUsed": resolution.agent_id,
                "fullyQualifiedId": resolution.fully_qualified_id,
                "resolutionMethod": resolution.resolution_method,
            }
        )

    async def list_mastra_agents(self) -> CallToolResult:
        return _ok(await self.directory.listing_payload())


def register_compat_tools(server: MCPServer, directory: MastraDirectory) -> None:
    """Add the old proxy's `callMastraAgent` and `listMastraAgents` to `server`, with its exact schemas."""
    tools = _CompatTools(directory)
    # No annotations or titles: the old proxy listed name, description and input schema only.
    server.add_tool(
        tools.call_mastra_agent,
        name="callMastraAgent",
        description=CALL_DESCRIPTION,
    )
    server.add_tool(
        tools.list_mastra_agents,
        name="listMastraAgents",
        description=LIST_DESCRIPTION,
    )
    # Arguments are still validated by the functions' pydantic models; what clients see is the old
    # proxy's JSON Schema, byte for byte. MCPServer has no public accessor for a registered tool.
    for name, schema in (("callMastraAgent", CALL_INPUT_SCHEMA), ("listMastraAgents", LIST_INPUT_SCHEMA)):
        tool = server._tool_manager.get_tool(name)
        if tool is None:  # pragma: no cover - add_tool just registered it
            raise RuntimeError(f"tool {name} was not registered")
        tool.parameters = json.loads(json.dumps(schema))
