"""The MCP front-end: meta-tools over a node's in-process API, served over HTTP, SSE and stdio."""

from __future__ import annotations

from agentmesh.mcp.frontend import TOOL_NAMES, McpHttpServer, build_server, serve_stdio

__all__ = ["TOOL_NAMES", "McpHttpServer", "build_server", "serve_stdio"]
