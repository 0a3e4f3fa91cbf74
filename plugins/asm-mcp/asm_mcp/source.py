"""An MCP server as an asm tool source, with the official ``mcp`` Python SDK.

The connection lives in one background task for the whole life of the kernel: the SDK's
transports and session are anyio context managers, which must be entered and left by the same
task, while the kernel opens sources in ``start()`` and closes them in ``close()`` — possibly
from other tasks. The task connects (stdio: starts the command; streamable HTTP: the URL),
initializes the session, then waits until it is told to close. Tool calls go through the
session from any task (JSON-RPC requests are matched by id, so calls of one model turn run in
parallel); a cancelled call is cancelled at the server too.

Every failure to connect, list or call names the server and raises
:class:`~asm_kernel.errors.ToolSourceError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import logging
import os
from pathlib import Path
from typing import Any

from asm_kernel.errors import ToolExecutionError, ToolSourceError
from asm_kernel.model import ToolSpec

from .settings import McpSettings

__all__ = ["McpSource", "McpTool", "render_result"]

log = logging.getLogger("asm.mcp")

#: Seconds the server gets to shut down when the kernel stops.
CLOSE_GRACE = 5.0


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (anyio task groups wrap what fails in ExceptionGroups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    leaf = _leaf(exc)
    text = str(leaf) or type(leaf).__name__
    return f"{type(leaf).__name__}: {text}" if str(leaf) else text


def _wire(model: Any) -> Any:
    """An SDK (pydantic) object as its JSON wire form (camelCase keys, as in the spec)."""
    dump = getattr(model, "model_dump", None)
    return dump(by_alias=True, mode="json", exclude_none=True) if dump is not None else model


def render_result(result: Any) -> tuple[Any, bool]:
    """A ``tools/call`` result as asm tool output (text, or blocks when there are images), and
    whether the server said it failed (``isError``)."""
    data = _wire(result)
    blocks: list[dict[str, Any]] = []
    for item in data.get("content") or []:
        kind = item.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": item.get("text", "")})
        elif kind == "image":
            blocks.append({"type": "image", "media_type": item.get("mimeType", ""), "data": item.get("data")})
        elif kind == "resource":
            resource = item.get("resource") or {}
            text = resource.get("text")
            about = f"[resource {resource.get('uri', '?')} ({resource.get('mimeType', '?')})]"
            shown = text if text is not None else about
            blocks.append({"type": "text", "text": shown})
        elif kind == "resource_link":
            blocks.append({"type": "text", "text": f"[resource link: {item.get('uri', '?')}]"})
        else:  # audio and anything newer: say what it was rather than drop it silently
            blocks.append({"type": "text", "text": f"[{kind} content ({item.get('mimeType', '?')})]"})
    if not blocks and data.get("structuredContent") is not None:
        import json

        blocks.append({"type": "text", "text": json.dumps(data["structuredContent"], ensure_ascii=False)})
    failed = bool(data.get("isError"))
    if all(b["type"] == "text" for b in blocks):
        return "\n".join(b["text"] for b in blocks), failed
    return blocks, failed


class McpTool:
    """One tool of an MCP server (see :class:`asm_kernel.interfaces.Tool`)."""

    def __init__(self, server: McpSource, remote: dict[str, Any], name: str) -> None:
        self._server = server
        self.remote_name = str(remote["name"])
        schema = remote.get("inputSchema") or {"type": "object", "properties": {}}
        self.spec = ToolSpec(name, str(remote.get("description") or ""), dict(schema))
        self.source = f"mcp:{server.name}"
        self.timeout = server.settings.timeout

    def __repr__(self) -> str:
        return f"McpTool({self.spec.name!r}, source={self.source!r})"

    async def __call__(self, input: dict[str, Any]) -> Any:
        output, failed = await self._server.call(self.remote_name, input)
        if failed:
            text = output if isinstance(output, str) else "; ".join(b.get("text", "") for b in output)
            raise ToolExecutionError(
                f"MCP server {self._server.name!r}: tool {self.remote_name!r} failed: {text}",
                tool=self.spec.name,
                source=self.source,
            )
        return output


class McpSource:
    """The tools of one MCP server (see :class:`asm_kernel.interfaces.ToolSource`)."""

    def __init__(self, name: str, settings: McpSettings, *, path: str = "tools[0]", config_dir: Any = None) -> None:
        self.name = name
        self.settings = settings
        self.path = path
        self._config_dir = Path(config_dir) if config_dir is not None else None
        self._session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"McpSource({self.name!r}, {self.where})"

    @property
    def where(self) -> str:
        s = self.settings
        return f"url {s.url}" if s.url else f"command {s.command!r}"

    def _error(self, doing: str, exc: BaseException | None = None, hint: str | None = None) -> ToolSourceError:
        detail = f": {_describe(exc)}" if exc is not None else ""
        return ToolSourceError(
            f"MCP server {self.name!r} ({self.where}) {doing}{detail}",
            path=self.path,
            hint=hint or "check that the server runs and speaks MCP; `asm config check` builds every tool source",
            source=self.name,
        )

    # -- the connection ---------------------------------------------------------------------

    def _transport(self) -> Any:
        s = self.settings
        if s.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            cwd = s.cwd
            if cwd is not None and self._config_dir is not None and not Path(cwd).is_absolute():
                cwd = str(self._config_dir / cwd)
            params = StdioServerParameters(command=s.command, args=list(s.args), env=dict(s.env) or None, cwd=cwd)
            return stdio_client(params, errlog=_errlog())
        import mcp.client.streamable_http as http

        assert s.url is not None
        modern = getattr(http, "streamable_http_client", None)
        if modern is None:  # older SDKs take the headers themselves
            return http.streamablehttp_client(s.url, headers=dict(s.headers) or None)  # type: ignore[attr-defined]
        from mcp.shared._httpx_utils import create_mcp_http_client

        return _owning(modern, s.url, create_mcp_http_client(headers=dict(s.headers) or None))

    async def _serve(self, ready: asyncio.Future[None]) -> None:
        from mcp import ClientSession

        assert self._closing is not None
        try:
            async with contextlib.AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
                await session.initialize()
                self._session = session
                if not ready.done():
                    ready.set_result(None)
                await self._closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP server %s (%s) went away: %s", self.name, self.where, _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._session = None

    async def open(self) -> None:
        if self._task is not None:
            return
        self._closing = asyncio.Event()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._serve(ready), name=f"asm-mcp-{self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.settings.connect_timeout)
        except TimeoutError:
            await self.aclose()
            raise self._error(f"did not answer within connect_timeout = {self.settings.connect_timeout:g} s") from None
        except Exception as exc:
            await self.aclose()
            raise self._error("could not be reached", exc) from None

    async def list_tools(self) -> list[McpTool]:
        session = self._require()
        settings = self.settings
        tools: list[McpTool] = []
        cursor: str | None = None
        takes_params = "params" in inspect.signature(session.list_tools).parameters
        try:
            while True:
                if cursor is None:
                    page = await session.list_tools()
                elif takes_params:
                    from mcp.types import PaginatedRequestParams

                    page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
                else:  # older SDKs take the cursor itself
                    page = await session.list_tools(cursor=cursor)
                data = _wire(page)
                for remote in data.get("tools") or []:
                    name = str(remote.get("name", ""))
                    wanted = any(fnmatch.fnmatchcase(name, p) for p in settings.include)
                    if wanted and not any(fnmatch.fnmatchcase(name, p) for p in settings.exclude):
                        tools.append(McpTool(self, remote, settings.prefix + name))
                cursor = data.get("nextCursor")
                if not cursor:
                    return tools
        except Exception as exc:
            raise self._error("could not list its tools", exc) from None

    def _require(self) -> Any:
        if self._session is None:
            raise self._error("is not connected", hint="the server stopped, or the kernel is not started")
        return self._session

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[Any, bool]:
        session = self._require()
        try:
            result = await session.call_tool(name, arguments)
        except Exception as exc:
            raise self._error(f"failed calling tool {name!r}", exc) from None
        return render_result(result)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if self._closing is not None:
            self._closing.set()
        done, _ = await asyncio.wait({task}, timeout=CLOSE_GRACE)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled() and task.exception() is not None:
            log.debug("MCP server %s closed with: %s", self.name, _describe(task.exception()))  # type: ignore[arg-type]


def _errlog() -> Any:
    """Where a stdio server's stderr goes: ours, when it is a real file (an embedding application
    or a test may have replaced it with one that has no descriptor), else the original one."""
    import sys

    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = open(os.devnull, "w")  # noqa: SIM115  (kept open: every server may write to it)
    return _DEVNULL


_DEVNULL: Any = None


@contextlib.asynccontextmanager
async def _owning(transport: Any, url: str, client: Any) -> Any:
    """The streamable HTTP transport with an HTTP client it did not make (closed after it)."""
    async with client, transport(url, http_client=client) as streams:
        yield streams
