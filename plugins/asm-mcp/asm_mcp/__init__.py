"""asm-mcp: the tools of a Model Context Protocol server as asm tools (``[[tools]] use = "mcp"``).

The ``mcp`` SDK is imported when a source is built, never by ``import asm_mcp``.
"""

from __future__ import annotations

from .settings import McpSettings

__all__ = ["McpSettings"]
