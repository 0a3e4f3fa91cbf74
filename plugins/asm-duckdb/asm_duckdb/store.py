"""``use = "duckdb"``: sessions, runs and the event log in one DuckDB file (store contract v2).

:class:`DuckDBStore` is the async face. Writes go to the writer thread (:mod:`asm_duckdb.writer`,
group commit of atomic units) or, for write-behind units, are acknowledged on the caller's
thread. Reads are answered from memory when it can tell (:mod:`asm_duckdb.caches`: the records
the store wrote, the tail of recent events), otherwise by DuckDB on a small pool of reader
threads, each with its own cursor. A read that would return acknowledged events not yet
committed first asks the writer to commit them, so what any reader saw survives a crash.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
import duckdb
from asm_kernel.errors import StorageError, StoreClosedError, StoreReadOnlyError
from asm_kernel.model import utcnow
from asm_kernel.writes import StoreCapabilities

from .caches import Records, Tail
from .compactor import Compactor
from .files import FileClaim, connect, real_path
from .layout import HOT_EVENTS, LEVELS, Filled, filled_levels
from .marks import Marks, check, file_id, losses_before
from .reads import LogReads
from .recordreads import RecordReads
from .schema import SCHEMA_VERSION, expire_leases, log_state, prepare
from .writer import BEHIND_MAX_DELAY, BEHIND_MAX_ROWS, DuckDBStats, Req, Writer
from .writing import Writing

__all__ = [
    "DuckDBStore",
    "DuckDBStats",
    "MemoryUse",
    "LEAN_DISABLED",
    "SCHEMA_VERSION",
    "BEHIND_MAX_DELAY",
    "BEHIND_MAX_ROWS",
    "CACHE_BYTES",
    "TAIL_BYTES",
]

log = logging.getLogger("asm.duckdb")

T = TypeVar("T")

#: Default budget of the record cache (session states and run records).
CACHE_BYTES = 64 * 2**20
#: Default budget of the event tail (recent events of recently used sessions).
TAIL_BYTES = 128 * 2**20
#: Reader threads (each with its own cursor).
READERS = 3
#: DuckDB optimizers ``lean_planning`` turns off. asm's statements are point and range reads,
#: inserts and updates by key, and the merges' sorted copies: none has a join to order, a
#: sub-plan to share or an expression worth rewriting, and the scans prune row groups by their
#: own table filters, without statistics propagation. Measured side by side (interleaved, one
#: process): a three-part session read 2.3 -> 1.95 ms of DuckDB time, an event INSERT 1.40 ->
#: 1.28 ms, a run UPDATE 1.01 -> 0.92 ms; through the store on a 10M-event file a cold full read
#: 5.0 -> 4.3 ms and `last(50)` 4.1 -> 3.9 ms; merges unchanged. Index scans and top-n stay.
LEAN_DISABLED = ("join_order", "common_subplan", "statistics_propagation", "expression_rewriter")


@attrs.frozen
class MemoryUse:
    """What an open store holds in memory now, in bytes (:meth:`DuckDBStore.memory`).

    ``duckdb`` is DuckDB's own use by tag (``duckdb_memory()``: cached table blocks, indexes,
    sort and merge buffers; bounded by ``memory_limit``); ``records`` and ``tail`` are the
    store's caches (bounded by ``cache_bytes`` and ``tail_bytes``; estimated sizes).
    """

    duckdb: dict[str, int]
    records: int
    tail: int

    @property
    def total(self) -> int:
        return sum(self.duckdb.values()) + self.records + self.tail


MODES = ("safe", "fast")

_LIVE: weakref.WeakSet[DuckDBStore] = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    """Commit write-behind events of stores nobody closed before the interpreter exits."""
    for store in list(_LIVE):
        try:
            store._close_sync(timeout=10.0)
        except Exception:  # pragma: no cover - best effort at exit
            log.exception("closing %r at exit failed", store)


class DuckDBStore(Writing, LogReads, RecordReads):
    """The asm store in one DuckDB file. See the module docstring and the README."""

    def __init__(
        self,
        path: str | Path,
        *,
        durability: str = "fast",
        lock_timeout: float = 0.0,
        read_only: bool = False,
        memory_limit: str | None = None,
        threads: int | None = None,
        cache_bytes: int = CACHE_BYTES,
        tail_bytes: int = TAIL_BYTES,
        hot_events: int = HOT_EVENTS,
        lean_planning: bool = True,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if durability not in MODES:
            raise ValueError(f"durability must be 'safe' or 'fast', got {durability!r}")
        self.path = Path(path).expanduser().absolute()
        self.durability = durability
        self.lock_timeout = float(lock_timeout)
        self.read_only = bool(read_only)
        self.memory_limit = memory_limit
        self.threads = threads
        self.lean_planning = lean_planning
        if isinstance(hot_events, bool) or not isinstance(hot_events, int) or hot_events < 1:
            raise ValueError(f"hot_events must be an integer >= 1, got {hot_events!r}")
        self.hot_events = hot_events
        self.clock = clock
        self.stats = DuckDBStats()
        self.records = Records(cache_bytes)
        self.tail = Tail(tail_bytes)
        self.capabilities = StoreCapabilities(
            shared=False,
            durable=True,
            durability="fast" if durability == "fast" else "safe",
            durability_modes=MODES,
            leases=True,
            sql=True,
        )
        #: Committed events a damaged WAL dropped, found at this open: ``{session_id: events lost}``
        #: (see :mod:`asm_duckdb.marks`). Empty when the log is whole.
        self.lost: dict[str, int] = {}
        #: Losses found by earlier opens of the file: ``[{"detected_at": ..., "sessions": {...}}]``.
        self.lost_before: list[dict[str, Any]] = []
        self._marks: Marks | None = None
        from asm_kernel.storage import Notifier

        self._notifier = Notifier()
        self._lock = threading.Lock()  # guards records, the writer's owed rows and the fast path
        self._submit_lock = threading.Lock()
        self._state = "new"  # new | open | closing | closed
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._cursors: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._all_cursors: list[duckdb.DuckDBPyConnection] = []
        self._readers: cf.ThreadPoolExecutor | None = None
        self._writer: Writer | None = None
        self._stop: cf.Future[None] | None = None
        self._claim: FileClaim | None = None
        self._compactor: Compactor | None = None
        self._mark = 0
        self._static_filled = Filled(0, LEVELS)

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    # -- opening and closing ----------------------------------------------------------------

    async def open(self) -> None:
        with self._submit_lock:
            if self._state in ("open", "closing"):
                return
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        real = real_path(self.path)
        claim = FileClaim(str(real))
        config: dict[str, Any] = {}
        if self.threads is not None:
            config["threads"] = self.threads
        if self.memory_limit is not None:
            config["memory_limit"] = self.memory_limit
        conn = connect(real, claim, read_only=self.read_only, lock_timeout=self.lock_timeout, config=config)
        try:
            if self.lean_planning:
                _plan_lean(conn)
            prepare(conn, str(self.path), read_only=self.read_only)
            self.lost_before = losses_before(conn)
            ident = file_id(conn, read_only=self.read_only)
            marks, self.lost = check(conn, real, str(self.path), read_only=self.read_only, file=ident)
            self._mark, next_n = log_state(conn)
            # Nothing merges in a read-only open: the levels holding rows stay the ones found now.
            self._static_filled = filled_levels(conn) if self.read_only else Filled(0, LEVELS)
            self._opened_at = self.clock()
            if not self.read_only:
                ended = expire_leases(conn, self._opened_at)
                if ended:
                    log.info("%s: %d lease(s) of a previous process ended at open", self.path, ended)
            cursors = [conn.cursor() for _ in range(READERS)]
            compactor = None
            if not self.read_only:
                compactor = Compactor(conn, str(self.path), self.hot_events, lambda: self.stats.events, self._mark)
            self._marks = None if self.read_only else Marks(real, marks, ident[0])
        except BaseException:
            try:
                conn.close()
            except duckdb.Error:
                pass
            claim.release()
            raise
        self._conn = conn
        self._claim = claim
        self._all_cursors = cursors
        self._cursors = queue.SimpleQueue()
        for cur in cursors:
            self._cursors.put(cur)
        self.records.clear()
        self.tail.clear()
        self._readers = cf.ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="asm-duckdb-read")
        self._compactor = compactor
        self._writer = Writer(
            self.path,
            conn,
            lock=self._lock,
            records=self.records,
            tail=self.tail,
            notifier=self._notifier,
            clock=self.clock,
            stats=self.stats,
            on_commit=None if self.read_only else self._committed,
            next_n=next_n,
            merge_mark=self._merge_mark,
            last_committed=self._last_committed if self._marks is not None else None,
        )
        with self._submit_lock:
            self._state = "open"
        self._writer.start()
        if self._compactor is not None:
            self._compactor.start()
        _LIVE.add(self)
        log.debug("opened %s (durability=%s, read_only=%s)", self.path, self.durability, self.read_only)

    def _last_committed(self, session_id: str) -> int:
        """A session's last committed seq (writer thread; the marks are exact while open)."""
        assert self._marks is not None
        return self._marks.marks.get(session_id, 0)

    def _filled(self) -> Filled:
        """The levels a read must query (all of them when the store does not merge)."""
        compactor = self._compactor
        return compactor.filled if compactor is not None else self._static_filled

    def _merge_mark(self) -> int:
        """The current merge mark (see :mod:`asm_duckdb.layout`)."""
        compactor = self._compactor
        return compactor.mark if compactor is not None else self._mark

    def _committed(self, marks: dict[str, int]) -> None:
        """After each commit (writer thread): record the marks, nudge the compactor."""
        if self._marks is not None:
            self._marks.committed(marks)
        if self._compactor is not None:
            self._compactor.poke()

    async def memory(self) -> MemoryUse:
        """What the store holds in memory now: DuckDB's buffers by tag, and the store's caches."""
        rows = await self._read(_memory_rows)
        return MemoryUse({str(tag): int(used) for tag, used in rows if used}, self.records.bytes, self.tail.bytes)

    async def close(self) -> None:
        """Commit everything acknowledged, stop the writer and release the file."""
        stop = self._begin_close()
        if stop is None:
            return
        try:
            await asyncio.wrap_future(stop)
        finally:
            self._finish_close()

    def _begin_close(self) -> cf.Future[None] | None:
        with self._submit_lock:
            if self._state != "open":
                return self._stop if self._state == "closing" else None
            self._state = "closing"
            self._stop = cf.Future()
            assert self._writer is not None
            self._writer.queue.put(Req("stop", self._stop))
        return self._stop

    def _finish_close(self) -> None:
        writer = self._writer
        if writer is not None and writer.thread is not threading.current_thread():
            writer.thread.join()
        lost = writer.owed if writer is not None else 0
        # Every acknowledged event committed and the writer stopped: the marks describe the file.
        clean = writer is not None and lost == 0 and not writer.thread.is_alive()
        if self._compactor is not None:
            self._compactor.close()
            self._compactor = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)  # reads in flight finish before their cursors close
        for cur in self._all_cursors:
            try:
                cur.close()
            except duckdb.Error:
                pass
        if self._conn is not None:
            try:
                self._conn.close()
            except duckdb.Error:
                clean = False
                log.exception("closing %s failed", self.path)
        self._conn = None
        if self._marks is not None:
            self._marks.close(clean=clean)
            self._marks = None
        with self._submit_lock:
            if self._state == "closing":
                self._state = "closed"
        if self._claim is not None:
            self._claim.release()
        _LIVE.discard(self)
        if lost:
            raise StorageError(
                f"closed {self.path} with {lost} acknowledged event(s) that could not be stored",
                hint="the file refused writes (disk full? permissions?); they are lost",
                file=str(self.path),
            )

    def _close_sync(self, timeout: float) -> None:
        stop = self._begin_close()
        if stop is not None:
            stop.result(timeout)
            self._finish_close()

    def _check_open(self) -> None:
        if self._state != "open":
            state = "not open" if self._state == "new" else "closed"
            raise StoreClosedError(
                f"the duckdb store {self.path} is {state}", hint="open it first (or use a new kernel)"
            )

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreReadOnlyError(
                f"the duckdb store {self.path} was opened read_only; it cannot be written",
                hint="set store.read_only = false",
                file=str(self.path),
            )

    # -- plumbing ---------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        readers = self._readers
        if readers is None:
            raise StoreClosedError(f"the duckdb store {self.path} is not open")
        try:
            fut = readers.submit(self._with_cursor, fn, *args)
        except RuntimeError:  # executor shut down by close()
            raise StoreClosedError(f"the duckdb store {self.path} is closed") from None
        return await asyncio.wrap_future(fut)

    def _with_cursor(self, fn: Callable[..., T], *args: Any) -> T:
        cur = self._cursors.get()
        try:
            return fn(cur, *args)
        except duckdb.Error as exc:
            raise StorageError(f"reading {self.path} failed: {exc}", file=str(self.path)) from exc
        finally:
            self._cursors.put(cur)


def _memory_rows(cur: duckdb.DuckDBPyConnection) -> list[Any]:
    return cur.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()


def _plan_lean(conn: duckdb.DuckDBPyConnection) -> None:
    """Turn off :data:`LEAN_DISABLED` (those this DuckDB has: older ones lack some).

    SET, not a connect option: a connection made in this process to the same file with default
    options then shares this database instead of being refused.
    """
    known = {row[0] for row in conn.execute("SELECT name FROM duckdb_optimizers()").fetchall()}
    off = [name for name in LEAN_DISABLED if name in known]
    if off:
        conn.execute(f"SET disabled_optimizers = '{','.join(off)}'")
