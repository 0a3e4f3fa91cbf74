"""RunHandle: what submitting a run gives back; awaiting it gives the run's result."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from ..model import RunResult

__all__ = ["RunHandle"]


class RunHandle:
    """A submitted run: ``await handle`` (or ``await handle.result()``) gives its RunResult."""

    def __init__(self, session_id: str, run_id: str) -> None:
        self.session_id = session_id
        self.run_id = run_id
        self._future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        state = "done" if self._future.done() else "pending"
        return f"RunHandle(run_id={self.run_id!r}, {state})"

    def done(self) -> bool:
        return self._future.done()

    async def result(self, timeout: float | None = None) -> RunResult:
        """The run's result, whatever its status (completed, failed, cancelled, timed_out)."""
        return await asyncio.wait_for(asyncio.shield(self._future), timeout)

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self.result().__await__()

    def _resolve(self, result: RunResult) -> None:
        if not self._future.done():
            self._future.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(exc)
            self._future.exception()  # mark retrieved: a caller may never await a handle
