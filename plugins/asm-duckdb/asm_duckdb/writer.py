"""The writer thread: group commit of write units, write-behind, and what happens when writes fail.

One thread owns the DuckDB connection that writes. It drains every pending request (units,
claims, lease renewals) into one group, plans each in order (:mod:`asm_duckdb.planner`),
writes the whole group in a few statements and commits once, then answers every caller - one
wake-up per event loop. A request whose condition fails stores nothing and fails alone; a
statement error is traced to its request (the group is redone one request at a time) and only
that request fails; a retried event id (the unique index refuses it) makes the group be redone
with explicit lookups, so the retry gets the stored events.

**Write-behind** (``durability = "fast"``). A unit of events alone under a run's lease - a
stream delta, a tool call - is acknowledged as soon as its seqs are assigned, on the caller's
thread (:meth:`Writer.try_fast`) when the session and run are cached, else by the writer once
its rows are in the open transaction. Such rows are *owed*: committed by the next unit that
writes a record (a run's outcome), within :data:`BEHIND_MAX_DELAY`, on a read that would return
them, or on close. If the commit fails they stay owed and are written by the next transaction;
a seq once acknowledged is never given to another event. While the file cannot be written,
every write fails with a :class:`StorageError` that says how many acknowledged events wait.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import AsmError, StorageError, StoreClosedError
from asm_kernel.model import Event
from asm_kernel.storage import Notifier
from asm_kernel.writes import Committed, WriteUnit

from .behind import acknowledge_now, finish, rollback
from .caches import Records, Tail
from .codec import Row, insert_events
from .planner import Overlay, Planner
from .requests import (
    BEHIND_MAX_DELAY,
    BEHIND_MAX_ROWS,
    RETRY_FIRST,
    RETRY_MAX,
    DuckDBStats,
    Failed,
    Outbox,
    Redo,
    Req,
    cannot_write,
    drain,
    io_errors,
    refused,
    statements,
    storage_error,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["Writer", "Req", "DuckDBStats", "BEHIND_MAX_DELAY", "BEHIND_MAX_ROWS"]

log = logging.getLogger("asm.duckdb")


class Writer:
    """Owns the writing connection and the thread that drains the request queue."""

    def __init__(
        self,
        path: Path,
        conn: duckdb.DuckDBPyConnection,
        *,
        lock: threading.Lock,
        records: Records,
        tail: Tail,
        notifier: Notifier,
        clock: Callable[[], datetime],
        stats: DuckDBStats,
        on_commit: Callable[[dict[str, int]], None] | None = None,
        next_n: int = 1,
        merge_mark: Callable[[], int] = lambda: 0,
        last_committed: Callable[[str], int] | None = None,
    ) -> None:
        self.path = path
        self.conn = conn
        self.lock = lock
        self.records = records
        self.tail = tail
        self.notifier = notifier
        self.clock = clock
        self.stats = stats
        self.on_commit = on_commit
        #: The next log number (``n``) to give an event row; only grows, gaps are fine.
        self.next_n = next_n
        self._merge_mark = merge_mark
        #: The merge mark when the open transaction began (its snapshot's view of the log).
        self.txn_mark = 0
        self.planner = Planner(conn, records, tail, clock, self.read_mark, last_committed)
        self.queue: queue.SimpleQueue[Req] = queue.SimpleQueue()
        #: Acknowledged rows not committed: inserted in the open transaction, or not yet.
        self.owed_inserted: list[Row] = []
        self.owed_pending: list[Row] = []
        self.owed_since = 0.0
        #: Runs a group in flight writes (the caller-thread fast path leaves them alone).
        self.inflight_runs: set[str] = set()
        self.failing: StorageError | None = None
        self._retry_delay = RETRY_FIRST
        self._retry_at = 0.0
        self.in_txn = False
        self._last_group = 0
        #: The writer sleeps with no deadline (see :meth:`_wait`).
        self.idle = False
        self.outbox = Outbox()
        self.io_errors = io_errors()
        self.thread = threading.Thread(target=self._main, name=f"asm-duckdb-writer:{path.name}", daemon=True)

    def number(self, k: int) -> int:
        """The first of ``k`` new log numbers."""
        first = self.next_n
        self.next_n += k
        return first

    def read_mark(self) -> int:
        """The merge mark the writer's own queries may use (see :func:`asm_duckdb.layout.select_events`).

        Inside a transaction, the mark it began with: its snapshot may predate a later merge.
        """
        return self.txn_mark if self.in_txn else self._merge_mark()

    @property
    def owed(self) -> int:
        return len(self.owed_inserted) + len(self.owed_pending)

    def try_fast(self, unit: WriteUnit, payloads: Sequence[str]) -> Committed | None:
        return acknowledge_now(self, unit, payloads)

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        stops: list[Req] = []
        try:
            while True:
                group = self._drain(self._wait())
                stops = [r for r in group if r.kind == "stop"]
                try:
                    self._process(group)
                finally:
                    self.outbox.send()
                if stops:
                    break
        except BaseException:  # pragma: no cover - a bug; keep the file consistent and report
            log.exception("the duckdb writer thread of %s failed", self.path)
        finally:
            self._shutdown()
            for req in stops:  # close() waits for this: the file is released after it
                if not req.fut.done():
                    req.fut.set_result(None)

    def _timeout(self) -> float | None:
        if not self.owed:
            return None
        due = self._retry_at if self.failing is not None else self.owed_since + BEHIND_MAX_DELAY
        return max(0.0, due - time.monotonic())

    def _wait(self) -> float | None:
        """How long the next drain may wait. With nothing owed, no deadline: the writer then
        sleeps until a request comes, and says so (:attr:`idle`), so that the caller-thread fast
        path wakes it when it makes rows owed (checked and set under the lock: no lost wake-up)."""
        with self.lock:
            timeout = self._timeout()
            self.idle = timeout is None
        return timeout

    def _drain(self, timeout: float | None) -> list[Req]:
        group = drain(self.queue, timeout, self._last_group)
        self.idle = False
        real = sum(r.kind != "wake" for r in group)
        if real or not group:  # a lone wake-up says nothing about how busy the callers are
            self._last_group = real
        return group

    def _process(self, group: list[Req]) -> None:
        stop = any(r.kind == "stop" for r in group)
        reqs = [r for r in group if r.kind != "stop" and r.claim()]
        work = [r for r in reqs if r.kind not in ("flush", "wake")]
        flush = any(r.kind == "flush" for r in reqs)
        force = stop or flush or self.owed >= BEHIND_MAX_ROWS
        if work:
            self.stats.groups += 1
            self.stats.largest_group = max(self.stats.largest_group, len(work))
            self._group(work, force)
        elif self.owed and (force or self._timeout() == 0):
            self._group([], True)
        for req in reqs:
            if req.kind == "wake":  # it only made the writer look at its deadline again
                self.outbox.reply(req, None)
            elif req.kind == "flush":
                if self.owed and self.failing is not None:
                    self.outbox.reply(req, exc=self.failing)
                else:
                    self.outbox.reply(req, None)

    # -- one group --------------------------------------------------------------------------

    def _group(self, work: list[Req], force: bool) -> None:
        known: dict[str, Event] | None = None
        isolate = False
        active = list(work)
        for _ in range(len(work) + 3):
            ov = self._plan(active, known)
            try:
                committed = self._write(active, ov, force, isolate)
            except Redo as redo:
                rollback(self, ov)
                if redo.culprit is not None:
                    redo.culprit.error = redo.error
                    redo.culprit.writes = None
                    active.remove(redo.culprit)
                    self.stats.isolated += 1
                elif redo.how == "ids" and known is None:
                    self.stats.retries += 1
                    ids = [e.id for r in active if r.unit is not None for e in r.unit.events]
                    try:
                        known = self.planner.lookup_events(ids)
                    except Exception as exc:
                        failed = storage_error(self.path, "reading", exc)
                        for req in active:
                            req.error = req.error or failed
                        break
                else:
                    isolate = True
                continue
            except Failed as failed:
                rollback(self, ov)
                for req in active:
                    if req.error is None:
                        req.error = failed.error
                break
            finish(self, active, ov, committed)
            break
        for req in work:
            if req.error is not None:
                self.outbox.reply(req, exc=req.error)
            else:
                self.outbox.reply(req, req.result)

    def _plan(self, reqs: list[Req], known: dict[str, Event] | None) -> Overlay:
        ov = Overlay()
        with self.lock:
            for req in reqs:
                req.error = None
                req.writes = None
                try:
                    if req.kind == "unit":
                        assert req.unit is not None
                        plan, req.writes = self.planner.plan(req.unit, req.payloads, ov, known)
                        req.result = plan.committed()
                    elif req.kind == "claim":
                        owner, limit, ttl, most = req.args
                        req.result, req.writes = self.planner.claim(owner, limit, ttl, most, ov)
                    elif req.kind == "renew":
                        fences, ttl = req.args
                        req.result, req.writes = self.planner.renew(fences, ttl, ov)
                except AsmError as exc:
                    req.error = exc
                except Exception as exc:  # a lookup failed: this request cannot be planned
                    req.error = storage_error(self.path, "reading", exc)
            # Reserve the planned seqs and runs: the caller-thread fast path must not hand out
            # the same seqs, nor act on a run whose record is about to change.
            for sid, seq in ov.seqs.items():
                state = self.records.sessions.get(sid)
                if state is not None:
                    state.seq = max(state.seq, seq)
            self.inflight_runs = set(ov.runs)
        return ov

    def _write(self, reqs: list[Req], ov: Overlay, force: bool, isolate: bool) -> bool:
        """Run the group's statements; commit if needed. Returns whether it committed."""
        import duckdb

        writes = [r.writes for r in reqs if r.writes]
        awaited = any(r.writes and not r.behind for r in reqs)
        with self.lock:
            pending = list(self.owed_pending)
        due = bool(self.owed) and (time.monotonic() >= self.owed_since + BEHIND_MAX_DELAY or force)
        commit = awaited or force or due or self.failing is not None
        # Owed rows ride in the group's own event insert when it has one (one statement less
        # at a run's outcome: a DuckDB statement costs about a millisecond here).
        fold = bool(pending) and not isolate and any(w.rows for w in writes)
        batch = [] if isolate else statements(writes, ov, self.number, first=pending if fold else ())  # type: ignore[arg-type]
        conn = self.conn
        try:
            if pending and not fold:
                self._begin()
                insert_events(conn, pending, self.number(len(pending)))
                self._owed_inserted(pending)
        except duckdb.Error as exc:
            raise Failed(self._cannot_write(exc)) from None
        try:
            if isolate:
                for req in reqs:
                    if req.writes:
                        self._run(statements([req.writes], None, self.number), req)
            elif commit and not self.in_txn and len(batch) == 1:
                sql, params = batch[0]  # autocommit: one statement is its own transaction
                conn.execute(sql, params)
                if fold:
                    self._owed_inserted(pending)
                self.stats.commits += 1
                return True
            else:
                self._run(batch, None)
                if fold:
                    self._owed_inserted(pending)
        except self.io_errors as exc:  # the file refuses writes: not any one request's fault
            self.stats.failed_commits += 1
            raise Failed(self._cannot_write(exc)) from None
        except duckdb.ConstraintException as exc:
            raise Redo("ids") from exc
        except duckdb.Error as exc:
            raise Redo("isolate") from exc
        if not commit:
            return False
        try:
            if self.in_txn:
                self.in_txn = False
                conn.execute("COMMIT")
            self.stats.commits += 1
        except duckdb.Error as exc:
            self.stats.failed_commits += 1
            raise Failed(self._cannot_write(exc)) from None
        return True

    def _owed_inserted(self, rows: list[Row]) -> None:
        """Owed rows are now in the open transaction (or committed by an autocommit statement)."""
        with self.lock:
            del self.owed_pending[: len(rows)]
            self.owed_inserted.extend(rows)

    def _run(self, statements: list[tuple[str, Any]], req: Req | None) -> None:
        import duckdb

        if not statements:
            return
        self._begin()
        try:
            for sql, params in statements:
                self.conn.execute(sql, params)
        except self.io_errors:
            raise
        except duckdb.ConstraintException:
            if req is None:
                raise
            raise Redo(
                "drop", req, storage_error(self.path, "writing", None, "a stored record or event id conflicts")
            ) from None
        except duckdb.Error as exc:
            if req is None:
                raise
            raise Redo("drop", req, refused(self.path, exc)) from None

    def _begin(self) -> None:
        if not self.in_txn:
            mark = self._merge_mark()
            self.conn.execute("BEGIN TRANSACTION")
            self.txn_mark = mark
            self.in_txn = True

    # -- errors -----------------------------------------------------------------------------

    def _cannot_write(self, exc: BaseException) -> StorageError:
        now = time.monotonic()
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
        self.failing = cannot_write(self.path, exc, self.owed)
        return self.failing

    # -- shutting down ----------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self.owed:
            try:
                self._group([], True)
            except Exception:  # pragma: no cover - reported below
                log.exception("final commit to %s failed", self.path)
        if self.owed:
            log.error("closing %s: %d acknowledged event(s) could not be stored and are lost", self.path, self.owed)
        self.outbox.close(self.queue, StoreClosedError(f"the duckdb store {self.path} is closed"))
