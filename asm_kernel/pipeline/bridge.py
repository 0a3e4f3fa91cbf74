"""The stream/task bridge: a run executes in its own task, its caller reads an async stream.

The run's task owns the run: if the caller stops reading, is cancelled, or is interrupted, the
task is cancelled with the reason and the bridge waits — through further cancels — until the
run's terminal unit is durable. So a caller can never leave a run half-finished, and the
``RunResult`` a caller gets always describes what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..errors import AsmError
from ..model import Event, RunResult

__all__ = ["stream_run_task"]

_END = object()


async def stream_run_task(
    start: Callable[[Callable[[Event], None]], Awaitable[tuple[RunResult, AsmError | None]]],
    *,
    raise_on_error: bool,
    name: str,
) -> AsyncIterator[Event | RunResult]:
    """Yield the run's stored events as they are stored, then its RunResult.

    ``start(listener)`` executes the run, handing each stored event to ``listener``, and returns
    ``(result, error)``. With ``raise_on_error`` a failed run's error is raised after its result
    was stored (and not yielded); otherwise the result is yielded whatever the outcome.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def body() -> None:
        try:
            result, error = await start(queue.put_nowait)
            queue.put_nowait(result)
            if error is not None:
                queue.put_nowait(error)
        except BaseException as exc:
            queue.put_nowait(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(body(), name=name)
    reason: tuple[Any, ...] = ()
    pending_result: RunResult | None = None
    try:
        while True:
            try:
                item = await queue.get()
            except asyncio.CancelledError as exc:
                reason = exc.args  # hand the reason on to the run's own task
                raise
            if item is _END:
                break
            if isinstance(item, RunResult):
                pending_result = item
                continue
            if isinstance(item, BaseException):
                if isinstance(item, AsmError) and pending_result is not None:
                    if raise_on_error:
                        item.details.setdefault("run_id", pending_result.run_id)
                        item.details.setdefault("session_id", pending_result.session_id)
                        raise item
                    continue
                if isinstance(item, asyncio.CancelledError):
                    raise asyncio.CancelledError(*item.args)
                raise item
            yield item
        if pending_result is not None:
            yield pending_result
    finally:
        if not task.done():
            task.cancel(*reason[:1])
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        if not task.cancelled():
            task.exception()  # retrieved here; what it raised was queued for the caller
