"""A real ``AsmServer`` on 127.0.0.1 (uvicorn, port 0) in a thread of its own, for the tests.

The server thread runs its own event loop, so tests can talk to it from anywhere: httpx (sync
or async), schemathesis, Playwright, the ``asm`` CLI in-process. :meth:`ServerThread.call`
runs a coroutine on the server's loop (to read the kernel directly).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from asm_kernel import Kernel

from asm_serve.server import AsmServer
from asm_serve.settings import load_settings

T = TypeVar("T")

#: Long enough to be seen streaming; short enough for fast tests.
SLOW_ECHO = {"name": "echo", "use": "echo", "chunk_size": 3, "delay": 0.01}
TOKEN_A = "tenant-a-token-0123456789abcdef"
TOKEN_B = "tenant-b-token-0123456789abcdef"
TOKEN_OPS = "operator-token-0123456789abcdef"
KEYS = [
    {"name": "ops", "token": TOKEN_OPS},
    {"name": "tenant-a", "token": TOKEN_A, "agent_ids": ["agent-a"]},
    {"name": "tenant-b", "token": TOKEN_B, "agent_ids": ["agent-b", "agent-b2"]},
]


class ServerThread:
    """``with ServerThread(config) as srv: httpx.get(srv.url + "/v1/health")``."""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        serve: Mapping[str, Any] | None = None,
        kernel: Kernel | None = None,
        poll: float = 0.5,
    ) -> None:
        cfg = {"store": {"use": "memory"}, "providers": [SLOW_ECHO], **(config or {})}
        self.kernel = kernel or Kernel(cfg)
        settings = load_settings({"port": 0, "access_log": False, **(serve or {})})
        self.server = AsmServer(self.kernel, settings, poll=poll)
        self._thread = threading.Thread(target=self._main, name="asm-serve-test", daemon=True)
        self._error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self.server.ready.set()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        if not self.server.ready.wait(30):
            raise TimeoutError("the server did not start")
        if self._error is not None:
            raise self._error

    def stop(self, force: bool = False) -> None:
        if self._thread.is_alive():
            self.server.request_stop(force=force)
            self._thread.join(60)
            assert not self._thread.is_alive(), "the server did not stop"
        if self._error is not None:
            raise self._error

    @property
    def url(self) -> str:
        assert self.server.url is not None
        return self.server.url

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        loop = self.server.loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sse_messages(lines: Iterator[str]) -> Iterator[tuple[str, str | None, str]]:
    """(event name, id, data) of each SSE message from an iterator of lines."""
    name, ident, data = "message", None, []
    for line in lines:
        if line == "":
            if data:
                yield name, ident, "\n".join(data)
            name, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
            elif field == "id":
                ident = value


def event_of(data: str) -> dict[str, Any]:
    return json.loads(data)  # type: ignore[no-any-return]
