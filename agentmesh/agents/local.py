"""The `local` backend: Python callables in the node's own process.

Health: a local callable cannot be unreachable, so a local backend is healthy unless it is given a
`probe`, a callable (sync or async, no arguments) that checks what the agents depend on (a model
server, a database...). It fails by raising or by returning False; its duration is the backend's
probe latency.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from agentmesh.agents.base import AgentInfo, AgentReply, AgentRequest, RequestError
from agentmesh.bgp.messages import BackendProtocol

#: A local agent: called with the request, returns a reply, text or a JSON-able value, or yields text
#: chunks (an async generator streams).
AgentFunction = Callable[[AgentRequest], Any]
#: A local backend's health check: no arguments; raises or returns False (or an awaitable of it) when
#: the backend cannot serve.
ProbeFunction = Callable[[], Any]


class UnknownLocalAgent(KeyError, RequestError):
    """A call named an agent this backend does not offer (a KeyError, as it always was)."""


@dataclass(frozen=True, slots=True)
class LocalAgent:
    info: AgentInfo
    function: AgentFunction


class LocalBackend:
    """Agents that are functions of this process."""

    protocol = BackendProtocol.LOCAL

    def __init__(self, name: str, agents: list[LocalAgent], *, probe: ProbeFunction | None = None) -> None:
        self.name = name
        self._agents = {agent.info.id: agent for agent in agents}
        self._probe = probe
        #: Why the latest probe failed, None after one that worked.
        self.last_probe_error: str | None = None

    def add(self, agent: LocalAgent) -> None:
        """Offer another agent (it is announced at the next discovery)."""
        self._agents[agent.info.id] = agent

    def remove(self, agent_id: str) -> None:
        """Stop offering an agent (it is withdrawn at the next discovery)."""
        self._agents.pop(agent_id, None)

    async def discover(self) -> list[AgentInfo]:
        return [agent.info for agent in self._agents.values()]

    async def call(self, agent_id: str, request: AgentRequest) -> AgentReply:
        function = self._function(agent_id)
        if inspect.isasyncgenfunction(function):
            return AgentReply("".join([chunk async for chunk in function(request)]))
        result = function(request)
        if inspect.isawaitable(result):
            result = await result
        return _reply(result)

    async def stream(self, agent_id: str, request: AgentRequest) -> AsyncIterator[str]:
        function = self._function(agent_id)
        if inspect.isasyncgenfunction(function):
            async for chunk in function(request):
                yield str(chunk)
        else:
            yield (await self.call(agent_id, request)).text

    async def probe(self) -> bool:
        if self._probe is None:
            return True
        try:
            result = self._probe()
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            self.last_probe_error = str(error) or repr(error)
            return False
        if result is False:
            self.last_probe_error = "the probe function returned False"
            return False
        self.last_probe_error = None
        return True

    async def close(self) -> None:
        return None

    def _function(self, agent_id: str) -> AgentFunction:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise UnknownLocalAgent(f"no local agent {agent_id!r}")
        return agent.function


def _reply(result: Any) -> AgentReply:
    if isinstance(result, AgentReply):
        return result
    if isinstance(result, str):
        return AgentReply(result)
    return AgentReply(str(result), data=result)
