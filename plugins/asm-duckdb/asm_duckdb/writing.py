"""Writing to the store: units, appends, claims, leases, flushes and merges, through the writer.

Mixed into :class:`~asm_duckdb.store.DuckDBStore`. Every write is a request the writer thread
answers (:mod:`asm_duckdb.writer`), except a write-behind unit the caller's thread can
acknowledge at once; a cancelled caller whose request the writer took still gets its answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
from asm_kernel.errors import StorageError, ValidationError
from asm_kernel.model import Event, Fence, Run
from asm_kernel.storage import append_unit, check_claim, check_unit
from asm_kernel.writes import Committed, WriteUnit

from .compactor import Compactor, Merge
from .requests import Req
from .writer import Writer

__all__ = ["Writing"]


def _behind(unit: WriteUnit) -> bool:
    """A unit fast mode may acknowledge before its commit: events alone, marked not ``durable``.

    The kernel marks stream deltas and a tool round's intermediate events ``durable=False``; a
    unit that writes a session or run record, has record conditions, or is durable (the
    default) is always awaited to its commit.
    """
    if unit.durable or not unit.events or unit.new_session or unit.session or unit.new_runs or unit.runs:
        return False
    return unit.session_status is None and not unit.no_live_runs


class Writing:
    """``commit``, ``append``, ``claim_runs``, ``renew_leases``, ``flush`` and ``compact``."""

    path: Path
    durability: str
    read_only: bool
    _submit_lock: threading.Lock
    _writer: Writer | None
    _compactor: Compactor | None
    _check_open: Callable[[], None]
    _check_writable: Callable[[], None]

    async def _submit(self, req: Req) -> Any:
        fut = req.fut
        assert isinstance(fut, _Answer)
        fut.req = req
        self._check_writable()
        with self._submit_lock:
            self._check_open()
            assert self._writer is not None
            self._writer.queue.put(req)
        try:
            return await fut
        except asyncio.CancelledError as exc:
            if fut.cancelled():  # withdrawn before the writer took it: nothing was written
                raise
            cancel = exc
        # The writer had the request: it was written or refused whatever the caller did, so a
        # cancel must not hide which. Like a write with no await point, the unit is atomic with
        # respect to cancellation: its answer is returned and the cancel is delivered at the
        # caller's next await.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
            task.cancel(*cancel.args)
        return fut.result()

    async def compact(self, *, full: bool = False) -> Merge | None:
        """Merge the hot log rows into the sorted levels now (see :mod:`asm_duckdb.layout`).

        The store does this by itself once ``hot_events`` rows are hot; call it after a bulk
        import, or with ``full=True`` to merge every level into the last (the fewest row groups
        per session a read can touch). Returns what was merged, or None when nothing was hot.
        Writes and reads go on meanwhile.
        """
        self._check_open()
        self._check_writable()
        await self.flush()
        compactor = self._compactor
        assert compactor is not None
        try:
            return await asyncio.to_thread(compactor.merge, full=full)
        except duckdb.Error as exc:
            raise StorageError(
                f"merging the events of {self.path} failed: {exc}",
                hint="nothing changed; the store merges again later (check free disk space)",
                file=str(self.path),
            ) from None

    async def flush(self) -> None:
        """Commit every acknowledged write-behind event now."""
        if self.read_only:
            return
        await self._submit(Req("flush", _future()))

    async def commit(self, unit: WriteUnit) -> Committed:
        self._check_open()
        self._check_writable()
        payloads = check_unit(unit)
        behind = self.durability == "fast" and _behind(unit)
        if behind and unit.fence is not None:
            assert self._writer is not None
            done = self._writer.try_fast(unit, payloads)
            if done is not None:
                return done
        return await self._submit(Req("unit", _future(), unit, payloads, behind=behind))  # type: ignore[no-any-return]

    async def append(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int | None = None,
        fence: Fence | None = None,
        durable: bool = True,
    ) -> list[Event]:
        unit = append_unit(session_id, events, expected_seq=expected_seq, fence=fence, durable=durable)
        return list((await self.commit(unit)).events)

    async def claim_runs(
        self, owner: str, *, limit: int, lease_ttl: float, max_running_per_session: int = 1
    ) -> list[Run]:
        self._check_open()
        check_claim(owner, limit, lease_ttl, max_running_per_session)
        args = (owner, limit, float(lease_ttl), max_running_per_session)
        return await self._submit(Req("claim", _future(), args=args))  # type: ignore[no-any-return]

    async def renew_leases(self, fences: Sequence[Fence], ttl: float) -> list[str]:
        self._check_open()
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0:
            raise ValidationError(f"ttl must be a number of seconds >= 0, got {ttl!r:.40}", path="ttl")
        return await self._submit(Req("renew", _future(), args=(list(fences), float(ttl))))  # type: ignore[no-any-return]


class _Answer(asyncio.Future[Any]):
    """The writer's answer to a request, awaited by the caller without a shield.

    A task cancelled while it awaits this asks the future to cancel. That succeeds only while
    the writer has not taken the request (it is withdrawn: nothing is written). Once taken,
    the cancel is refused: the task then gets its ``CancelledError`` when the answer arrives,
    and :meth:`Writing._submit` returns the answer and delivers the cancel at the next await.
    (``asyncio.shield`` did the same at the price of a second future and a loop turn per write.)
    """

    req: Req | None = None

    def cancel(self, msg: Any = None) -> bool:
        if self.req is not None and not self.done() and not self.req.withdraw():
            return False
        return super().cancel(msg)


def _future() -> _Answer:
    return _Answer(loop=asyncio.get_running_loop())
