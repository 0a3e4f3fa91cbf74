"""Finishing work a cancel must not cut short.

A run's terminal write, its start commit, a budget's settlement and the run task behind a
stream must all end whatever cancels their caller meanwhile: cancelling the *wait* for a
commit does not cancel the commit, so the caller has to learn how it ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["finish", "through_cancel"]

T = TypeVar("T")


async def finish(task: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait until ``task`` is done, through any cancels of the caller; return the last of them.

    What the task returned or raised stays in it for the caller to read.
    """
    cancel: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if not task.done():
                cancel = exc
        except BaseException:  # the task's own failure, left in it
            break
    return cancel


async def through_cancel(awaitable: Awaitable[T]) -> tuple[T, asyncio.CancelledError | None]:
    """Await ``awaitable`` to the end even if cancelled meanwhile; return it and the cancel, if any.

    For a write whose outcome the caller must know (a run learns whether it started before the
    cancel unwinds it). If the work failed or was itself cancelled while a cancel was pending,
    the cancel is raised: it did not happen, and the cancel is what the caller asked for.
    """
    task = asyncio.ensure_future(awaitable)
    cancel = await finish(task)
    if cancel is not None and (task.cancelled() or task.exception() is not None):
        raise cancel
    return task.result(), cancel
