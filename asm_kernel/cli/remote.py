"""The CLI as a client of ``asm serve``: discovery, a small JSON-over-HTTP client, SSE by hand.

When a server owns the store, commands talk to it instead of opening the store (a DuckDB file
admits one process). The server is found, in order:

1. ``ASM_URL`` (``http://127.0.0.1:8765``); ``ASM_API_KEY`` is sent as the bearer key;
2. the **server file** next to the store file, ``<store file>.server.json``, which ``asm serve``
   writes once it listens and removes when it stops (:mod:`.serverfile`). A stale file (its
   process is gone) is ignored; a server that answers with another ``instance`` than the file's
   is not the one that wrote it, and is not used either.

Only the standard library is used (``http.client``), so the kernel keeps no web dependency.
Records come back through :func:`asm_kernel.serialization.from_dict`, so a command prints them
with the same code whether it read the store or the server: the output is identical.
Commands use :meth:`asm_kernel.cli.CliContext.remote`; plugin commands (``asm cost``,
``asm approve``) can call :meth:`Remote.get` / :meth:`Remote.post` on any ``/v1`` route.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AsmError, StorageError, error_codes
from ..secrets import register_secret
from .serverfile import SERVER_FILE_SUFFIX, ServerFile, read_server_file, server_file_for, write_server_file

if TYPE_CHECKING:
    from ..model import Event, Run, Session
    from .api import CliContext

__all__ = [
    "SERVER_FILE_SUFFIX",
    "ServerFile",
    "server_file_for",
    "write_server_file",
    "read_server_file",
    "Remote",
    "find_server",
    "error_from_dict",
    "ServerGone",
    "quote",
]

log = logging.getLogger("asm.cli")

#: Largest page the server returns; longer reads are paged.
PAGE = 1000


def error_from_dict(data: Mapping[str, Any], status: int) -> AsmError:
    """The AsmError an error body describes: its class when the kernel knows the code."""
    code = str(data.get("code") or f"http.status_{status}")
    cls = error_codes().get(code, AsmError)
    message = str(data.get("message") or f"the server answered HTTP {status}")
    known = {"code", "type", "message", "retryable", "path", "hint"}
    details = {k: v for k, v in data.items() if k not in known and isinstance(k, str) and k.isidentifier()}
    try:
        error = cls(message, path=data.get("path"), hint=data.get("hint"), retryable=data.get("retryable"), **details)
    except TypeError:
        error = AsmError(message, path=data.get("path"), hint=data.get("hint"), retryable=data.get("retryable"))
    if error.code != code:  # a code of a plugin's class (auth.unauthorized): keep it as sent
        error.code = code
    return error


class ServerGone(Exception):
    """The server stopped while a command followed it; ``cursor`` is the last seq printed."""

    def __init__(self, cursor: int) -> None:
        super().__init__(cursor)
        self.cursor = cursor


class Remote:
    """A blocking client of one ``asm serve`` (one connection per request)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60.0, source: str = "ASM_URL") -> None:
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            from ..errors import ConfigError

            raise ConfigError(f"{source} must be an http(s) URL, got {url[:100]!r}", hint="e.g. http://127.0.0.1:8765")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        self._parts = parts
        self._token = token
        if token:
            register_secret(token)
        self.timeout = timeout
        self.source = source

    def __repr__(self) -> str:
        return f"Remote({self.url!r})"

    # -- requests ---------------------------------------------------------------------------

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        return cls(self._parts.hostname or "", self._parts.port, timeout=timeout)

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "asm-cli"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        headers.update(extra or {})
        return headers

    def _target(self, path: str, query: Mapping[str, Any] | None) -> str:
        pairs: list[tuple[str, str]] = []
        for key, value in (query or {}).items():
            if value is None:
                continue
            for item in value if isinstance(value, list | tuple) else [value]:
                pairs.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
        return self._parts.path + path + (f"?{urllib.parse.urlencode(pairs)}" if pairs else "")

    def _unreachable(self, exc: BaseException) -> StorageError:
        return StorageError(
            f"cannot reach the asm server at {self.url} ({self.source}): {exc}",
            hint="is `asm serve` running? unset ASM_URL to use the store directly",
            retryable=True,
        )

    def request(
        self, method: str, path: str, *, query: Mapping[str, Any] | None = None, body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """One request; the JSON answer, or the server's error raised as its AsmError."""
        payload = None if body is None else json.dumps(body).encode()
        headers = self._headers({"Content-Type": "application/json"} if payload is not None else None)
        conn = self._connection(timeout or self.timeout)
        try:
            conn.request(method, self._target(path, query), body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if response.status >= 400:
            if isinstance(data, dict) and "code" in data:
                raise error_from_dict(data, response.status)
            raise StorageError(f"the asm server at {self.url} answered HTTP {response.status}", retryable=True)
        return data

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, query=query, body=body if body is not None else {})

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health", timeout=5.0)  # type: ignore[no-any-return]

    # -- records ----------------------------------------------------------------------------

    def list_sessions(self, *, limit: int, offset: int = 0, **filters: Any) -> list[Session]:
        from ..model import Session
        from ..serialization import from_dict

        found: list[Session] = []
        while len(found) < limit:
            size = min(PAGE, limit - len(found))
            page = self.get("/v1/sessions", limit=size, offset=offset + len(found), **filters)
            found.extend(from_dict(item, Session) for item in page["items"])
            if page.get("next_offset") is None:
                break
        return found

    def session(self, session_id: str) -> tuple[Session, dict[str, Any]]:
        """The session and its summary (``last_seq``, usage, cost, ...)."""
        from ..model import Session
        from ..serialization import from_dict

        data = self.get(f"/v1/sessions/{quote(session_id)}")
        return from_dict(data, Session), data.get("summary") or {}

    def runs(self, session_id: str, *, limit: int) -> list[Run]:
        from ..model import Run
        from ..serialization import from_dict

        found: list[Run] = []
        while len(found) < limit:
            size = min(PAGE, limit - len(found))
            page = self.get(f"/v1/sessions/{quote(session_id)}/runs", limit=size, offset=len(found))
            found.extend(from_dict(item, Run) for item in page["items"])
            if page.get("next_offset") is None:
                break
        return found

    def events(
        self, session_id: str, *, after: int = 0, limit: int | None = None, types: list[str] | None = None,
        run_id: str | None = None,
    ) -> list[Event]:
        """Events after ``after`` (all of them when ``limit`` is None), read in pages."""
        from ..model import Event
        from ..serialization import from_dict

        found: list[Event] = []
        cursor = after
        while limit is None or len(found) < limit:
            size = PAGE if limit is None else min(PAGE, limit - len(found))
            page = self.get(f"/v1/sessions/{quote(session_id)}/events", after=cursor, limit=size,
                            types=",".join(types) if types else None, run_id=run_id)
            items = [from_dict(item, Event) for item in page["items"]]
            found.extend(items)
            if not items or page.get("next_after") is None:
                break
            cursor = items[-1].seq
        return found

    # -- streams ----------------------------------------------------------------------------

    def stream(
        self, session_id: str, *, after: int, types: list[str] | None = None, run_id: str | None = None,
        reconnect_for: float = 10.0,
    ) -> Iterator[Event]:
        """The session's events after ``after`` over SSE, reconnecting with ``Last-Event-ID``.

        Raises :class:`ServerGone` when the server stays unreachable for ``reconnect_for``
        seconds after a stream ended (it shut down): the caller can go on from the store.
        """
        from ..model import Event
        from ..serialization import from_dict

        cursor = after
        down_since: float | None = None
        delay = 0.1
        while True:
            try:
                messages = self._sse(session_id, cursor, types, run_id)
                try:
                    for kind, data in messages:
                        down_since, delay = None, 0.1
                        if kind == "close":
                            break  # the server ended it (shutdown, slow consumer): reconnect from cursor
                        event = from_dict(json.loads(data), Event)
                        cursor = event.seq
                        yield event
                finally:
                    messages.close()  # the connection is closed now, not when collected
            except StorageError as exc:
                if not exc.retryable:
                    raise
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= reconnect_for:
                raise ServerGone(cursor)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _sse(
        self, session_id: str, after: int, types: list[str] | None, run_id: str | None
    ) -> Generator[tuple[str, str], None, None]:
        """(event name, data) of each SSE message of one connection, parsed by hand."""
        query = {"types": ",".join(types) if types else None, "run_id": run_id}
        headers = self._headers({"Accept": "text/event-stream", "Last-Event-ID": str(after)})
        # No read timeout would notice a dead server; the server pings, so 4 silent pings mean gone.
        conn = self._connection(self.timeout)
        try:
            try:
                conn.request("GET", self._target(f"/v1/sessions/{quote(session_id)}/events/stream", query),
                             headers=headers)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from None
            if response.status >= 400:
                raw = response.read()
                with contextlib.suppress(ValueError):
                    data = json.loads(raw)
                    if isinstance(data, dict) and "code" in data:
                        error = error_from_dict(data, response.status)
                        raise error
                raise StorageError(f"the asm server answered HTTP {response.status}", retryable=True)
            name, lines = "message", list[str]()
            while True:
                try:
                    raw_line = response.readline()
                except (OSError, http.client.HTTPException):
                    return
                if not raw_line:
                    return  # the connection ended
                line = raw_line.decode("utf-8").rstrip("\r\n")
                if not line:  # a blank line dispatches the message
                    if lines:
                        yield name, "\n".join(lines)
                    name, lines = "message", []
                elif line.startswith(":"):
                    continue  # a comment: keep-alive
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "data":
                        lines.append(value)
                    elif field == "event":
                        name = value
        finally:
            conn.close()

    def follow_batches(
        self, session_id: str, *, after: int, types: list[str] | None, window: float
    ) -> Iterator[list[Event]]:
        """The stream in batches: what arrives within ``window`` seconds of a batch's first event.

        The stream is read in a thread, so a quiet stream does not delay a batch and Ctrl-C still
        interrupts the command at once. Raises :class:`ServerGone` like :meth:`stream`.
        """
        items: queue.Queue[Any] = queue.Queue()

        def read() -> None:
            try:
                for event in self.stream(session_id, after=after, types=types):
                    items.put(event)
            except BaseException as exc:  # handed to the main thread, which raises it
                items.put(exc)

        threading.Thread(target=read, name="asm-follow", daemon=True).start()
        while True:
            first = items.get()
            batch = [first]
            deadline = time.monotonic() + window
            while not isinstance(batch[-1], BaseException):
                left = deadline - time.monotonic()
                try:
                    batch.append(items.get(timeout=left) if left > 0 else items.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if not isinstance(e, BaseException)]
            if events:
                yield events
            if isinstance(batch[-1], BaseException):
                raise batch[-1]


def quote(value: str) -> str:
    """``value`` as one path segment."""
    return urllib.parse.quote(value, safe="")


def find_server(ctx: CliContext) -> Remote | None:
    """The server this command should talk to, or None to use the store directly."""
    token = os.environ.get("ASM_API_KEY") or None
    url = os.environ.get("ASM_URL", "").strip()
    if url:
        return Remote(url, token=token)
    store_path = _store_file(ctx)
    if store_path is None:
        return None
    try:
        path = server_file_for(store_path)
        info = read_server_file(path)
    except (OSError, ValueError):  # a path no file can have: the store itself says what is wrong
        return None
    if info is None:
        return None
    remote = Remote(info.url, token=token, source=str(path))
    try:
        health = remote.health()
    except AsmError as exc:
        log.warning("the server file %s names %s, which does not answer (%s); using the store", path, info.url,
                    exc.message)
        return None
    if not isinstance(health, dict) or health.get("instance") != info.instance:
        log.warning("the server at %s is not the one that wrote %s; using the store", info.url, path)
        return None
    return remote


def _store_file(ctx: CliContext) -> Path | None:
    """The file of the configured store, if it has one: built, not opened (``store.path``)."""
    kernel = ctx.kernel(store_only=True)
    store = kernel.build("store", kernel.config.store or kernel.default_store_config())
    path = getattr(store, "path", None)
    return Path(path) if isinstance(path, str | os.PathLike) else None
