"""A small MCP server with deterministic tools, run as a subprocess by the MCP backend tests.

    python tests/support/mcp_tool_server.py            # stdio
    python tests/support/mcp_tool_server.py --http PORT  # Streamable HTTP on 127.0.0.1:PORT/mcp

Tools: `add(a, b)`, `shout(text)`, `echo(message)` (a chat-style tool), `whoami()` (the server's PID, so a
test can tell whether calls share one server process), `fail(reason)` (always an error result) and
`crash()` (the process exits at once, to break the session). Self-contained: it imports only `mcp`.
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("agentmesh-test-tools")


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b


@server.tool(description="Upper-case a text and add an exclamation mark.")
def shout(text: str) -> str:
    return text.upper() + "!"


@server.tool(description="Repeat the message.")
def echo(message: str) -> str:
    return f"echo: {message}"


@server.tool(description="The process id of this server.")
def whoami() -> int:
    return os.getpid()


@server.tool(description="Always fails.")
def fail(reason: str) -> str:
    raise ToolError(f"failed on purpose: {reason}")


@server.tool(description="Exit the server process at once.")
def crash() -> str:
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
