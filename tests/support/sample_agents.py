"""Agents for tests that configure a `local` backend by `module:function`."""

from __future__ import annotations

from agentmesh.agents.base import AgentRequest


def greet(request: AgentRequest) -> str:
    return f"hello {request.last_user_text() or (request.arguments or {}).get('name', 'you')}"


NOT_CALLABLE = 42
