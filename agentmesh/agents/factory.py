"""Backends from configuration: `agents:` entries of the node's YAML turned into Backend objects."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from agentmesh.agents.a2a import A2aBackend
from agentmesh.agents.base import AgentInfo, Backend
from agentmesh.agents.demo import DEMO_AGENTS, demo_backend
from agentmesh.agents.local import LocalAgent, LocalBackend
from agentmesh.agents.mastra import MastraBackend
from agentmesh.agents.mcp_tools import McpToolsBackend
from agentmesh.config import BackendConfig


class BackendSetupError(ValueError):
    """A configured backend that cannot be set up (an unknown demo agent, a function that won't import)."""


def build_backend(index: int, config: BackendConfig) -> Backend:
    where = f"agents[{index}]"
    if config.type == "demo":
        unknown = sorted(set(config.agents) - set(DEMO_AGENTS))
        if unknown:
            raise BackendSetupError(
                f"{where}.agents: no demo agent {unknown[0]!r}; known: {', '.join(DEMO_AGENTS)}"
            )
        return demo_backend(*config.agents)
    if config.type == "local":
        agents = [
            LocalAgent(
                AgentInfo(f.id, f.description, tuple(f.capabilities), f.input_schema),
                load_function(f.function, f"{where}.functions[{n}].function"),
            )
            for n, f in enumerate(config.functions)
        ]
        probe = load_function(config.probe, f"{where}.probe") if config.probe else None
        return LocalBackend(config.namespace, agents, probe=probe)
    if config.type == "a2a":
        assert config.url is not None
        return A2aBackend(config.namespace, config.url)
    if config.type == "mcp":
        return McpToolsBackend(config.namespace, command=list(config.command) or None, url=config.url)
    assert config.type == "mastra" and config.url is not None
    return MastraBackend(config.namespace, config.url)


def load_function(spec: str, where: str) -> Callable[..., Any]:
    """Import `module:function`; raise BackendSetupError naming the config key when it fails."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise BackendSetupError(f"{where}: cannot import module {module_name!r}: {error}") from error
    # An agent function or a probe function: which signature it has is the configuration's word.
    function: Callable[..., Any] | None = getattr(module, attribute, None)
    if not callable(function):
        raise BackendSetupError(f"{where}: {module_name!r} has no callable {attribute!r}")
    return function
