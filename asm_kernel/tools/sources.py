"""The kernel's tools: single tools, and tool sources that provide several.

A ``[[tools]]`` component (or an object handed to ``Kernel(tools=[...])``) is one of:

* a **tool** — an object with ``spec`` (a :class:`~asm_kernel.model.ToolSpec`) and
  ``async __call__(input)``; optionally ``source`` (who serves it, recorded on its events) and
  ``timeout`` (seconds one call may take);
* a plain **function** — wrapped in a :class:`~asm_kernel.tools.FunctionTool`;
* a **tool source** (:class:`~asm_kernel.interfaces.ToolSource`) — an object with
  ``async open()``, ``async list_tools()`` and ``async aclose()``: the kernel opens it when it
  starts, offers every tool it lists, and closes it when it stops. An MCP server is one.

Tool names are what the model calls; two tools with one name are refused with both paths.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import AsmError, ConfigError, ToolSourceError
from .function import function_tool

__all__ = ["ToolSet", "source_of", "is_source"]

log = logging.getLogger("asm.tools")


def is_source(value: Any) -> bool:
    return callable(getattr(value, "list_tools", None))


def source_of(tool: Any) -> str:
    """Who serves ``tool`` (its ``source``, else its module's package), or ``caller``."""
    if tool is None:
        return "caller"
    return str(getattr(tool, "source", None) or type(tool).__module__.split(".")[0])


class ToolSet:
    """The tools of one kernel, by name, and the sources they came from."""

    def __init__(self) -> None:
        self.tools: dict[str, Any] = {}
        self._paths: dict[str, str] = {}
        self.sources: list[tuple[Any, str]] = []
        self._opened: list[tuple[Any, str]] = []
        self._listed: set[str] = set()  # names of tools a source listed

    def __repr__(self) -> str:
        return f"ToolSet(tools={sorted(self.tools)}, sources={len(self.sources)})"

    def add(self, item: Any, path: str) -> None:
        """Add a tool, a function or a tool source (opened later, by :meth:`open`)."""
        item = function_tool(item, path)
        if is_source(item):
            self.sources.append((item, path))
            return
        spec = getattr(item, "spec", None)
        name = getattr(spec, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(
                "a tool must have a `spec` with a non-empty `name`",
                path=path,
                hint="give the tool a ToolSpec(name=..., description=..., input_schema=...)",
            )
        if name in self.tools:
            raise ConfigError(
                f"two tools are named {name!r} (the other is at {self._paths[name]})",
                path=path,
                hint="tool names must be unique; an MCP source can prefix its tools (prefix = \"...\")",
            )
        self.tools[name] = item
        self._paths[name] = path

    async def open(self) -> None:
        """Open every source and add the tools it lists; on a failure close what was opened."""
        for source, path in self.sources:
            label = getattr(source, "name", None) or type(source).__name__
            try:
                await source.open()
                self._opened.append((source, path))
                listed = list(await source.list_tools())
            except AsmError:
                await self.close()
                raise
            except Exception as exc:
                await self.close()
                raise ToolSourceError(
                    f"tool source {label!r} could not be opened: {type(exc).__name__}: {exc}",
                    path=path,
                    hint="check that the server it names runs and answers",
                    source=label,
                ) from exc
            for tool in listed:
                try:
                    self.add(tool, f"{path} ({label})")
                    self._listed.add(tool.spec.name)
                except AsmError:
                    await self.close()
                    raise

    async def close(self) -> None:
        """Close every opened source (each failure logged, never raised: closing must finish)."""
        opened, self._opened = self._opened, []
        for source, _path in reversed(opened):
            try:
                await source.aclose()
            except Exception:
                log.exception("closing tool source %s failed", getattr(source, "name", source))
        for name in self._listed:  # a source's tools go with it; listed again when reopened
            self.tools.pop(name, None)
            self._paths.pop(name, None)
        self._listed.clear()
