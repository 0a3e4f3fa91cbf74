"""asm entry point (group ``asm``, name ``mcp``): registers the ``mcp`` tool source.

Thin on purpose: importing this module imports neither the ``mcp`` SDK nor the client.
"""

from __future__ import annotations

from typing import Any

from asm_kernel import hookimpl

from .settings import McpSettings

__all__ = ["build", "asm_register_tools"]


def build(settings: McpSettings, context: Any) -> Any:
    """Factory for ``use = "mcp"``: a tool source the kernel opens when it starts."""
    from .source import McpSource

    return McpSource(context.name, settings, path=getattr(context, "path", "tools[0]"),
                     config_dir=getattr(context, "config_dir", None))


@hookimpl
def asm_register_tools(register: Any) -> None:
    register("mcp", build, settings=McpSettings,
             description="the tools of an MCP server, over stdio (a command) or streamable HTTP (a URL)")
