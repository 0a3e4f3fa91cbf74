"""Process-wide caps on active sessions and running runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from attrs import frozen

from ..errors import ValidationError

__all__ = ["ConcurrencyLimiter", "LimiterStats"]


@frozen
class LimiterStats:
    running: int
    waiting: int
    max_running: int
    peak_running: int


class ConcurrencyLimiter:
    """A FIFO-fair counting limiter for running runs.

    Slots are released by the ``slot()`` context manager whatever way the run ends (completed,
    failed, cancelled, or a crashed task), so a slot can never leak.
    """

    def __init__(self, max_running: int) -> None:
        if not isinstance(max_running, int) or isinstance(max_running, bool) or max_running < 1:
            raise ValidationError(f"max_running must be an integer >= 1, got {max_running!r}", path="max_running")
        self.max_running = max_running
        self._running = 0
        self._peak = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def running(self) -> int:
        return self._running

    def stats(self) -> LimiterStats:
        return LimiterStats(self._running, len(self._waiters), self.max_running, self._peak)

    async def acquire(self) -> None:
        if self._running < self.max_running and not self._waiters:
            self._take()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def _take(self) -> None:
        self._running += 1
        self._peak = max(self._peak, self._running)

    def release(self) -> None:
        if self._running <= 0:
            raise RuntimeError("ConcurrencyLimiter.release() called more times than acquire()")
        self._running -= 1
        while self._waiters and self._running < self.max_running:
            fut = self._waiters.pop(0)
            if not fut.done():
                self._take()
                fut.set_result(None)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()
