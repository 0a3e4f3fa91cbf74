"""Tools the model may call: typed Python functions, and sources that provide several (MCP).

* :func:`tool` / :class:`FunctionTool` — a function becomes a tool: name, description and JSON
  Schema derived from it (:mod:`.schema`), the model's arguments validated by structuring them
  into the annotated types (:mod:`.arguments`);
* :func:`register_tool` — a plugin offers a function as a ``[[tools]]`` component;
* :class:`~asm_kernel.interfaces.ToolSource` — a component providing several tools, opened when
  the kernel starts and closed when it stops (:mod:`.sources`).
"""

from __future__ import annotations

from .arguments import structure_arguments
from .function import (
    TOOL_ATTRIBUTE,
    FunctionTool,
    FunctionToolSettings,
    ToolOptions,
    function_tool,
    register_tool,
    tool,
)
from .schema import function_schema, schema_for
from .sources import ToolSet, source_of

__all__ = [
    "tool",
    "register_tool",
    "FunctionTool",
    "FunctionToolSettings",
    "ToolOptions",
    "TOOL_ATTRIBUTE",
    "function_tool",
    "schema_for",
    "function_schema",
    "structure_arguments",
    "ToolSet",
    "source_of",
]
