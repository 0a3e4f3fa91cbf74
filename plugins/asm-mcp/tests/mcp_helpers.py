"""Helpers of the MCP tests: the test server's path, a free port, a stdio ``[[tools]]`` table."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

SERVER = Path(__file__).parent / "mcp_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stdio_tool(name: str = "calc", **extra: Any) -> dict[str, Any]:
    """A ``[[tools]]`` table that starts the test server over stdio."""
    return {"use": "mcp", "name": name, "command": sys.executable, "args": [str(SERVER), "stdio"], **extra}
