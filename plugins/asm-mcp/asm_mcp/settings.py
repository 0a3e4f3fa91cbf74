"""``[[tools]] use = "mcp"``: which MCP server, and which of its tools."""

from __future__ import annotations

import math
from typing import Any

from attrs import field, frozen

__all__ = ["McpSettings"]


def _positive(instance: Any, attribute: Any, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value}")


@frozen
class McpSettings:
    """One MCP server. Give ``command`` (stdio: asm starts the server) or ``url`` (streamable HTTP).

    Put secrets in ``env`` or ``headers`` as ``${VAR}``: interpolated values are masked everywhere.
    """

    #: stdio: the program that runs the server, and its arguments.
    command: str | None = None
    args: list[str] = field(factory=list)
    #: stdio: environment variables for the server (over a minimal safe environment).
    env: dict[str, str] = field(factory=dict)
    #: stdio: the server's working directory (relative to the config file).
    cwd: str | None = None
    #: streamable HTTP: the server's endpoint (``http://127.0.0.1:8000/mcp``).
    url: str | None = None
    #: streamable HTTP: headers sent with every request (``Authorization = "Bearer ${TOKEN}"``).
    headers: dict[str, str] = field(factory=dict)
    #: Prepended to each tool's name as the model sees it (two servers may share tool names).
    prefix: str = ""
    #: Globs of the server's tool names to offer (default: all), and to leave out.
    include: list[str] = field(factory=lambda: ["*"])
    exclude: list[str] = field(factory=list)
    #: Seconds one tool call may take.
    timeout: float = field(default=60.0, validator=_positive)
    #: Seconds to connect, initialize and list the tools when the kernel starts.
    connect_timeout: float = field(default=30.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError('give exactly one of command (a stdio server) or url (a streamable HTTP server)')
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.command is not None and (self.headers or False):
            raise ValueError("headers apply to url (streamable HTTP) servers only")
