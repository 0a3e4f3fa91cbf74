"""Fault injection for stores: a wrapper that fails at the N-th write.

:class:`FaultyStore` wraps any store and counts its writes (``commit`` and ``append``; lease
renewals are timing-dependent and are not counted). Armed with ``fail_at=N`` it fails the N-th
write in one of three ways:

* ``"before"`` — the write raises and stores nothing (a refused transaction);
* ``"after"`` — the write is stored, then raises (the answer was lost: a dropped connection
  after the commit). The caller cannot tell it apart from ``before``;
* ``"down"`` — that write and every later one raise until :meth:`FaultyStore.heal` (an outage).

Reads always pass through. Use it to prove that whatever write fails, a run's record and its log
agree and nothing acknowledged is lost (``StoreConformance`` does, for every write of a run)::

    faulty = FaultyStore(MemoryStore())
    faulty.arm(3, "after")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from ..errors import StorageError
from ..model import Event, Fence
from ..writes import Committed, WriteUnit

__all__ = ["FaultyStore", "FaultMode"]

FaultMode = Literal["before", "after", "down"]


class FaultyStore:
    """A store wrapper that fails chosen writes (see the module docstring)."""

    def __init__(self, inner: Any, *, close_inner: bool = True) -> None:
        self.inner = inner
        self.close_inner = close_inner
        self.writes = 0
        self.failures = 0
        self._fail_at: int | None = None
        self._mode: FaultMode = "before"
        self._down = False

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r}, writes={self.writes}, failures={self.failures})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def capabilities(self) -> Any:
        return self.inner.capabilities

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        """Close the wrapped store (unless ``close_inner=False``: the caller keeps using it)."""
        if self.close_inner:
            await self.inner.close()

    def arm(self, fail_at: int, mode: FaultMode = "before") -> None:
        """Fail the ``fail_at``-th write from now (1 = the next one) in ``mode``."""
        if fail_at < 1:
            raise ValueError("fail_at counts writes from 1")
        self.writes = 0
        self._fail_at = fail_at
        self._mode = mode
        self._down = False

    def heal(self) -> None:
        """End an outage (and disarm)."""
        self._down = False
        self._fail_at = None

    def _fault(self) -> StorageError:
        self.failures += 1
        return StorageError(f"injected fault at write {self.writes} ({self._mode})", retryable=True, hint="FaultyStore")

    async def _write(self, call: Any) -> Any:
        self.writes += 1
        if self._down:
            raise self._fault()
        if self._fail_at is not None and self.writes == self._fail_at:
            if self._mode == "down":
                self._down = True
                raise self._fault()
            if self._mode == "before":
                raise self._fault()
            await call()
            raise self._fault()
        return await call()

    async def commit(self, unit: WriteUnit) -> Committed:
        result: list[Committed] = []

        async def call() -> Committed:
            result.append(await self.inner.commit(unit))
            return result[-1]

        return await self._write(call)  # type: ignore[no-any-return]

    async def append(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int | None = None,
        fence: Fence | None = None,
        durable: bool = True,
    ) -> list[Event]:
        async def call() -> list[Event]:
            return await self.inner.append(  # type: ignore[no-any-return]
                session_id, events, expected_seq=expected_seq, fence=fence, durable=durable
            )

        return await self._write(call)  # type: ignore[no-any-return]

    async def renew_leases(self, fences: Sequence[Fence], ttl: float) -> list[str]:
        if self._down:
            raise self._fault()
        return await self.inner.renew_leases(fences, ttl)  # type: ignore[no-any-return]
