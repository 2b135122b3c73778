"""The backend interface and the values of a call, shared by backends, forwarding and front-ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from agentmesh.bgp.messages import BackendProtocol


class CallErrorCode(Enum):
    """Why a call has no reply (mirrors agentmesh.v1.CallErrorCode)."""

    NOT_FOUND = "not_found"
    LOOP = "loop"
    HOP_LIMIT = "hop_limit"
    BACKEND_ERROR = "backend_error"
    DEADLINE = "deadline"
    UNAVAILABLE = "unavailable"
    INVALID_ARGUMENT = "invalid_argument"
    #: Access control refused the call (agentmesh.access); the reason names the rule.
    PERMISSION_DENIED = "permission_denied"


class RequestError(Exception):
    """A backend refused or failed one call because of the call itself: an unknown agent, arguments it
    cannot take, a tool that ran and reported an error.

    The backend answered, so health monitoring (agentmesh.agents.health) counts such a call as served,
    not as a sign that the backend is unwell: five bad requests in a row must not withdraw an agent that
    works. Backends raise subclasses of their own error types that also derive from this one.
    """


class CallFailure(Exception):
    """A call that failed, with the code and the node where that was decided."""

    def __init__(self, code: CallErrorCode, node: str, reason: str, *, delivered: bool = True) -> None:
        super().__init__(f"{code.value} at {node}: {reason}")
        self.code = code
        self.node = node
        self.reason = reason
        #: False when the call certainly never left this node (its next hop could not be connected
        #: to): no backend ran it, so another path may take it.
        self.delivered = delivered


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """What a caller sends an agent: a conversation, or JSON arguments, plus backend options."""

    messages: tuple[ChatMessage, ...] = ()
    arguments: Mapping[str, Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def last_user_text(self) -> str:
        """The newest user message, the usual input of a chat agent."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


@dataclass(frozen=True, slots=True)
class AgentReply:
    """An agent's answer: text, and the backend's full reply when it has more than text."""

    text: str
    data: Any = None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent as its backend describes it."""

    id: str
    description: str = ""
    capabilities: tuple[str, ...] = ()
    input_schema: Mapping[str, Any] | None = None


class Backend(Protocol):
    """A source of agents: discover them, call them, stream from them, check they are alive.

    `probe` is the active health check (agentmesh.agents.health): a cheap request that proves the
    backend can serve (Mastra lists its agents, A2A fetches its card, MCP lists its tools). It returns
    False, or raises, when the backend cannot; a backend may keep why in a `last_probe_error` attribute
    (str or None) for operators to see. The caller bounds its duration.
    """

    name: str
    protocol: BackendProtocol

    async def discover(self) -> list[AgentInfo]: ...

    async def call(self, agent_id: str, request: AgentRequest) -> AgentReply: ...

    def stream(self, agent_id: str, request: AgentRequest) -> AsyncIterator[str]: ...

    async def probe(self) -> bool: ...

    async def close(self) -> None: ...
