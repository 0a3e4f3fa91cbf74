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
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from asm_kernel.errors import RunNotFoundError, StorageError, StoreClosedError, StoreReadOnlyError, ValidationError
from asm_kernel.events import STREAM_TYPES
from asm_kernel.model import Event, Fence, Run, RunStatus, Session, SessionStatus, utcnow
from asm_kernel.storage import check_claim, check_page, check_read_args, check_unit, wait_for_events
from asm_kernel.writes import Committed, StoreCapabilities, WriteUnit

from .caches import Records, Tail
from .codec import (
    EVENT_SELECT,
    RUN_SELECT,
    SESSION_SELECT,
    Row,
    db_row,
    event_from_tail,
    run_from_row,
    session_from_row,
)
from .files import FileClaim, connect, real_path
from .planner import missing_session
from .schema import SCHEMA_VERSION, expire_leases, prepare
from .writer import BEHIND_MAX_DELAY, BEHIND_MAX_ROWS, DuckDBStats, Req, Writer

__all__ = [
    "DuckDBStore",
    "DuckDBStats",
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


def _behind(unit: WriteUnit) -> bool:
    """A unit fast mode may acknowledge before its commit: events alone, inside a run or deltas.

    A unit that writes a session or run record, has record conditions, or is marked ``durable``
    is always awaited to its commit.
    """
    if not unit.events or unit.new_session or unit.session or unit.new_runs or unit.runs:
        return False
    if unit.session_status is not None or unit.no_live_runs or getattr(unit, "durable", False):
        return False
    return unit.fence is not None or all(e.type in STREAM_TYPES for e in unit.events)


class DuckDBStore:
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
        self.clock = clock
        self.stats = DuckDBStats()
        self.records = Records(cache_bytes)
        self.tail = Tail(tail_bytes)
        self.capabilities = StoreCapabilities(
            shared=False, durable=True, durability=durability, durability_modes=MODES, leases=True, sql=True
        )  # type: ignore[arg-type]
        #: Sessions with events lost since the last run, found when the file was opened.
        self.lost: dict[str, int] = {}
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
            prepare(conn, str(self.path), read_only=self.read_only)
            self._opened_at = self.clock()
            if not self.read_only:
                ended = expire_leases(conn, self._opened_at)
                if ended:
                    log.info("%s: %d lease(s) of a previous process ended at open", self.path, ended)
            cursors = [conn.cursor() for _ in range(READERS)]
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
        self._writer = Writer(
            self.path,
            conn,
            lock=self._lock,
            records=self.records,
            tail=self.tail,
            notifier=self._notifier,
            clock=self.clock,
            stats=self.stats,
        )
        with self._submit_lock:
            self._state = "open"
        self._writer.start()
        _LIVE.add(self)
        log.debug("opened %s (durability=%s, read_only=%s)", self.path, self.durability, self.read_only)

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
                log.exception("closing %s failed", self.path)
        self._conn = None
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

    async def _submit(self, req: Req) -> Any:
        self._check_writable()
        with self._submit_lock:
            self._check_open()
            assert self._writer is not None
            self._writer.queue.put(req)
        fut = req.fut
        assert isinstance(fut, asyncio.Future)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError as exc:
            if req.withdraw():
                fut.cancel()
                raise
            cancel = exc
        # The writer has the request: it will be written or refused whatever the caller does, so
        # a cancel must not hide which. Like a write with no await point, the unit is atomic with
        # respect to cancellation: its answer is returned and the cancel is delivered at the
        # caller's next await.
        while not fut.done():
            try:
                await asyncio.wait([fut])
            except asyncio.CancelledError:
                continue
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
            task.cancel(*cancel.args)
        return fut.result()

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

    async def flush(self) -> None:
        """Commit every acknowledged write-behind event now."""
        if self.read_only:
            return
        await self._submit(Req("flush", _future()))

    # -- writing ----------------------------------------------------------------------------

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
    ) -> list[Event]:
        if not isinstance(events, Sequence) or isinstance(events, str | bytes):
            raise ValidationError("append takes a sequence of Event", path="events")
        unit = WriteUnit(session_id, events, expected_seq=expected_seq, fence=fence)
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

    # -- sessions and runs ------------------------------------------------------------------

    async def get_session(self, session_id: str) -> Session:
        self._check_open()
        state = self.records.sessions.get(session_id) if isinstance(session_id, str) else None
        if state is not None:
            return state.session
        row = await self._read(_fetchone, f"SELECT {SESSION_SELECT} FROM sessions WHERE id = ?", [session_id])
        if row is None:
            raise missing_session(session_id)
        return session_from_row(row)

    async def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        agent_id: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Session]:
        self._check_open()
        check_page(limit, offset)
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(SessionStatus(status).value)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if tag is not None:
            where.append("list_contains(tags, ?)")
            params.append(tag)
        sql = f"SELECT {SESSION_SELECT} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        rows = await self._read(_fetchall, sql, [*params, limit, offset])
        return [session_from_row(r) for r in rows]

    async def get_run(self, run_id: str) -> Run:
        self._check_open()
        entry = self.records.runs.get(run_id) if isinstance(run_id, str) else None
        if entry is not None:
            return entry[0]
        row = await self._read(_fetchone, f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r:.80}")
        return run_from_row(row)

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        lease_expired: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        self._check_open()
        check_page(limit, offset)
        where, params = [], []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if status is not None:
            where.append("status = ?")
            params.append(RunStatus(status).value)
        if lease_expired is not None:
            # Judged by the store's clock. A read-only store cannot end the leases of the process
            # that wrote the file at open (expire_leases), so it treats them as ended then.
            now = self.clock()
            cut = min(now, self._opened_at) if self.read_only else now
            expired = "(lease_expires_at IS NULL OR lease_expires_at <= ? OR lease_expires_at <= ?)"
            where.append("status = 'running' AND " + (expired if lease_expired else f"NOT {expired}"))
            params.extend([now, cut])
        sql = f"SELECT {RUN_SELECT} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        rows = await self._read(_fetchall, sql, [*params, limit, offset])
        return [run_from_row(r) for r in rows]

    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None:
        self._check_open()
        row = await self._read(
            _fetchone,
            f"SELECT {RUN_SELECT} FROM runs WHERE session_id = ? AND idempotency_key = ? "
            "ORDER BY created_at, id LIMIT 1",
            [session_id, key],
        )
        return None if row is None else run_from_row(row)

    # -- reading the log --------------------------------------------------------------------

    def _seqs(self, session_id: str) -> tuple[int, int] | None:
        """(acked, committed) of a cached session."""
        state = self.records.sessions.get(session_id) if isinstance(session_id, str) else None
        return None if state is None else (state.acked, state.committed)

    async def _settle(self, session_id: str, upto: int) -> None:
        """Commit owed events before a read returns any with seq <= ``upto`` (see module doc)."""
        seqs = self._seqs(session_id)
        if seqs is not None and seqs[1] < min(seqs[0], upto):
            await self.flush()

    async def read(
        self,
        session_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        types: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> list[Event]:
        self._check_open()
        check_read_args(after, before, limit, types, run_id)
        seqs = self._seqs(session_id)
        acked = seqs[0] if seqs is not None else None
        rows = self.tail.after(session_id, after, acked)
        if rows is not None:
            picked = _select(rows, before, limit, types, run_id)
            if picked:
                await self._settle(session_id, picked[-1][2])
            return [event_from_tail(r) for r in picked]
        await self._settle(session_id, before - 1 if before is not None else 2**62)
        sql = f"SELECT {EVENT_SELECT} FROM events WHERE session_id = ? AND seq > ?"
        params: list[Any] = [session_id, after]
        if before is not None:
            sql += " AND seq < ?"
            params.append(before)
        if types:
            wanted = list(dict.fromkeys(types))
            sql += f" AND type IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        got = [db_row(r) for r in await self._read(_fetchall_or_check, sql, params, session_id)]
        if not types and run_id is None and limit is None and before is None:
            self.tail.fill(session_id, got, self._seqs(session_id)[0] if self._seqs(session_id) else None)
        return [event_from_tail(r) for r in got]

    async def last(self, session_id: str, n: int) -> list[Event]:
        self._check_open()
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"n must be an integer >= 0, got {n!r:.40}", path="n")
        seqs = self._seqs(session_id)
        rows = self.tail.last(session_id, n, seqs[0] if seqs else None)
        if rows is not None:
            if rows:
                await self._settle(session_id, rows[-1][2])
            return [event_from_tail(r) for r in rows]
        await self._settle(session_id, 2**62)
        seqs = self._seqs(session_id)
        # Seqs are gapless, so the last n are a seq range: cheaper than ORDER BY seq DESC LIMIT n.
        if seqs is not None:
            sql = f"SELECT {EVENT_SELECT} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq"
            params: list[Any] = [session_id, seqs[0] - n]
        else:
            sql = (
                f"SELECT {EVENT_SELECT} FROM events WHERE session_id = $1 AND seq > "
                "(SELECT coalesce(max(seq), 0) FROM events WHERE session_id = $1) - $2 ORDER BY seq"
            )
            params = [session_id, n]
        rows = [db_row(r) for r in await self._read(_fetchall_or_check, sql, params, session_id)]
        return [event_from_tail(r) for r in rows[-n:]] if n else []

    async def last_seq(self, session_id: str) -> int:
        self._check_open()
        seqs = self._seqs(session_id)
        if seqs is not None:
            return seqs[0]
        row = await self._read(
            _fetchone,
            "SELECT (SELECT count(*) FROM sessions WHERE id = $1), "
            "(SELECT coalesce(max(seq), 0) FROM events WHERE session_id = $1)",
            [session_id],
        )
        if not row or not row[0]:
            raise missing_session(session_id)
        return int(row[1])

    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        return await wait_for_events(
            self._notifier, session_id, after, timeout, lambda: self.read(session_id, after=after)
        )


def _select(
    rows: list[Row], before: int | None, limit: int | None, types: Sequence[str] | None, run_id: str | None
) -> list[Row]:
    """``read``'s filters applied to tail rows (seq-ordered, all after the wanted seq)."""
    wanted = set(types) if types else None
    out: list[Row] = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        if before is not None and row[2] >= before:
            break
        if (wanted is None or row[4] in wanted) and (run_id is None or row[3] == run_id):
            out.append(row)
    return out


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


# -- reader-side helpers (run on a reader thread with its own cursor) ---------------------------


def _fetchone(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> Any:
    return cur.execute(sql, params).fetchone()


def _fetchall(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[Any]:
    return cur.execute(sql, params).fetchall()


def _fetchall_or_check(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any], session_id: str) -> list[Any]:
    """Rows of an event query; an empty answer checks that the session exists."""
    rows = cur.execute(sql, params).fetchall()
    if not rows and cur.execute("SELECT 1 FROM sessions WHERE id = ?", [session_id]).fetchone() is None:
        raise missing_session(session_id)
    return rows
