"""A real MCP server for the tests, written with the SDK's server API.

``python mcp_server.py stdio`` or ``python mcp_server.py http PORT``.
"""

from __future__ import annotations

import os
import sys

import anyio

try:  # mcp 2
    from mcp.server.mcpserver import MCPServer as Server
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1
    from mcp.server.fastmcp import FastMCP as Server  # type: ignore[no-redef]
    from mcp.server.fastmcp.exceptions import ToolError  # type: ignore[no-redef]

server = Server("asm-test-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message (a ToolError: the server passes its text on)."""
    raise ToolError(message)


@server.tool()
def whoami() -> str:
    """The MCP_TEST_NAME environment variable the server was started with."""
    return os.environ.get("MCP_TEST_NAME", "nobody")


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        port = int(sys.argv[2])
        try:
            server.run("streamable-http", host="127.0.0.1", port=port)
        except TypeError:  # mcp 1: host and port are settings
            server.settings.host, server.settings.port = "127.0.0.1", port  # type: ignore[attr-defined]
            server.run("streamable-http")
