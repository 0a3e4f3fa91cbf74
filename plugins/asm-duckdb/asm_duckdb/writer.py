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

import asyncio
import concurrent.futures as cf
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import AsmError, StorageError, StoreClosedError, ValidationError
from asm_kernel.model import Event
from asm_kernel.storage import Notifier
from asm_kernel.writes import Committed, UnitState, WriteUnit, plan_unit

from .caches import Records, Tail
from .codec import RUNS, SESSIONS, Row, event_row, insert_events
from .planner import Overlay, Planner, Writes

if TYPE_CHECKING:
    import duckdb

__all__ = ["Writer", "Req", "DuckDBStats", "BEHIND_MAX_DELAY", "BEHIND_MAX_ROWS"]

log = logging.getLogger("asm.duckdb")

#: Longest time an acknowledged write-behind event stays uncommitted (the kill -9 window).
BEHIND_MAX_DELAY = 0.05
#: Most acknowledged write-behind events kept uncommitted before a commit is forced.
BEHIND_MAX_ROWS = 4000
#: Cap on the events gathered into one group commit.
MAX_GROUP_EVENTS = 20_000
#: While requests keep arriving, the writer waits up to this long for the callers it just
#: answered to queue their next writes into the next group (one commit instead of two).
GATHER_MAX_DELAY = 0.002
GATHER_POLL = 0.0002
#: First and longest wait between attempts to write owed events while the file refuses writes.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0


@dataclass
class DuckDBStats:
    """Counters kept by the writer (read them in tests and benchmarks)."""

    commits: int = 0  #: transactions committed
    groups: int = 0  #: batches of requests drained from the queue
    units: int = 0  #: units that stored something
    events: int = 0  #: events inserted
    behind_acks: int = 0  #: units acknowledged before their commit (fast mode)
    fast_acks: int = 0  #: of those, acknowledged on the caller's thread
    largest_group: int = 0  #: most requests handled by one group
    retries: int = 0  #: groups redone with id lookups after a duplicate id
    isolated: int = 0  #: requests failed alone after a statement error
    failed_commits: int = 0


@dataclass(eq=False)
class Req:
    kind: str  # unit | claim | renew | flush | stop
    fut: asyncio.Future[Any] | cf.Future[Any]
    unit: WriteUnit | None = None
    payloads: Sequence[str] = ()
    behind: bool = False
    args: tuple[Any, ...] = ()
    writes: Writes | None = None
    result: Any = None
    error: BaseException | None = None
    #: queued -> claimed (the writer took it: it will be answered) | withdrawn (the caller gave up)
    state: str = "queued"

    def withdraw(self) -> bool:
        """Take the request back if the writer has not claimed it yet (then nothing is written)."""
        with _CLAIMS:
            if self.state == "queued":
                self.state = "withdrawn"
                return True
            return False


_CLAIMS = threading.Lock()


class _Recorder:
    """Collects statements instead of running them (so a group's can be counted and batched)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append((sql, params))


def _statements(writes: Sequence[Writes], ov: Overlay | None) -> list[tuple[str, Any]]:
    """The statements of ``writes``: coalesced by record id over ``ov``, or one request's in order."""
    rec = _Recorder()
    if ov is None:
        for w in writes:
            for params, new in w.sessions:
                (SESSIONS.insert if new else SESSIONS.update)(rec, [params])  # type: ignore[arg-type]
            for params, new in w.runs:
                (RUNS.insert if new else RUNS.update)(rec, [params])  # type: ignore[arg-type]
            if w.rows:
                insert_events(rec, w.rows)  # type: ignore[arg-type]
        return rec.statements
    sessions: dict[str, list[Any]] = {}
    runs: dict[str, list[Any]] = {}
    rows: list[Row] = []
    for w in writes:
        for params, _ in w.sessions:
            sessions[params[0]] = params
        for params, _ in w.runs:
            runs[params[0]] = params
        rows.extend(w.rows)
    for table, final, new in ((SESSIONS, sessions, ov.new_sessions), (RUNS, runs, ov.new_runs)):
        inserts = [p for k, p in final.items() if k in new]
        updates = [p for k, p in final.items() if k not in new]
        if updates:
            table.update(rec, updates)  # type: ignore[arg-type]
        if inserts:
            table.insert(rec, inserts)  # type: ignore[arg-type]
    if rows:
        insert_events(rec, rows)  # type: ignore[arg-type]
    return rec.statements


#: duckdb's errors that mean the file refuses writes (resolved when a writer starts: duckdb is
#: imported lazily).
_IO_ERRORS: tuple[type[BaseException], ...] = ()


class _Redo(Exception):
    """The group must be planned again: with id lookups (``"ids"``), one request at a time to
    find the one a statement error came from (``"isolate"``), or without ``culprit``."""

    def __init__(self, how: str, culprit: Req | None = None, error: BaseException | None = None) -> None:
        super().__init__(how)
        self.how = how
        self.culprit = culprit
        self.error = error


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
        self.planner = Planner(conn, records, tail, clock)
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
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        self.thread = threading.Thread(target=self._main, name=f"asm-duckdb-writer:{path.name}", daemon=True)

    @property
    def owed(self) -> int:
        return len(self.owed_inserted) + len(self.owed_pending)

    # -- the caller-thread fast path --------------------------------------------------------

    def try_fast(self, unit: WriteUnit, payloads: Sequence[str]) -> Committed | None:
        """Acknowledge a write-behind unit now, on the caller's thread, or None to queue it.

        Only when everything the unit's plan needs is cached and settled: the session (with no
        unit of it in flight), the fenced run (no write of it in flight), and no event id that
        could be a retry (one the tail knows). Conditions are then judged by ``plan_unit`` on
        the committed state, exactly as the writer would.
        """
        if not self.lock.acquire(blocking=False):
            return None
        try:
            if self.failing is not None or unit.fence is None:
                return None
            state = self.records.sessions.get(unit.session_id)
            if state is None or state.seq != state.acked:
                return None
            run = self.records.run(unit.fence.run_id)
            if run is None or run.id in self.inflight_runs:
                return None
            if any(self.tail.stored(e.id) is not None for e in unit.events):
                return None
            plan = plan_unit(
                unit,
                UnitState(
                    session=state.session,
                    runs={run.id: run},
                    last_seq=state.seq,
                    stored=[None] * len(unit.events),
                    now=self.clock(),
                ),
            )
            rows = [event_row(e, p, e.seq) for e, p in zip(plan.new_events, payloads, strict=True)]
            state.seq = state.acked = plan.last_seq
            if not self.owed:
                self.owed_since = time.monotonic()
            self.owed_pending.extend(rows)
            self.tail.feed(rows)
            self.stats.behind_acks += 1
            self.stats.fast_acks += 1
            many = self.owed >= BEHIND_MAX_ROWS
        finally:
            self.lock.release()
        if many:
            self.queue.put(Req("flush", cf.Future()))
        self.notifier.notify(unit.session_id)
        return plan.committed()

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        global _IO_ERRORS
        _IO_ERRORS = _io_errors()
        self.thread.start()

    def _main(self) -> None:
        stops: list[Req] = []
        try:
            while True:
                group = self._drain(self._timeout())
                stops = [r for r in group if r.kind == "stop"]
                try:
                    self._process(group)
                finally:
                    self._send()
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

    def _drain(self, timeout: float | None) -> list[Req]:
        try:
            first = self.queue.get(timeout=timeout) if timeout is None or timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            return []
        group = [first]
        size = len(first.unit.events) if first.unit is not None else 0
        deadline = expected = 0.0
        idle = 0
        while size < MAX_GROUP_EVENTS and group[-1].kind != "stop":
            try:
                req = self.queue.get_nowait()
            except queue.Empty:
                now = time.monotonic()
                if not deadline:
                    expected = len(group) + self._last_group
                    deadline = now + GATHER_MAX_DELAY
                if self._last_group < 2 or len(group) >= expected or idle >= 2 or now >= deadline:
                    break
                idle += 1
                time.sleep(GATHER_POLL)
                continue
            idle = 0
            group.append(req)
            if req.unit is not None:
                size += len(req.unit.events)
        self._last_group = len(group)
        return group

    @staticmethod
    def _claim(req: Req) -> bool:
        """False when the caller gave up (cancelled) before the writer got to the request."""
        if isinstance(req.fut, cf.Future):
            return req.fut.set_running_or_notify_cancel()
        with _CLAIMS:
            if req.state != "queued":
                return False
            req.state = "claimed"
            return True

    def _process(self, group: list[Req]) -> None:
        stop = any(r.kind == "stop" for r in group)
        reqs = [r for r in group if r.kind != "stop" and self._claim(r)]
        work = [r for r in reqs if r.kind != "flush"]
        force = stop or len(work) < len(reqs) or self.owed >= BEHIND_MAX_ROWS
        if work:
            self.stats.groups += 1
            self.stats.largest_group = max(self.stats.largest_group, len(work))
            self._group(work, force)
        elif self.owed and (force or self._timeout() == 0):
            self._group([], True)
        for req in reqs:
            if req.kind == "flush":
                if self.owed and self.failing is not None:
                    self._reply(req, exc=self.failing)
                else:
                    self._reply(req, None)

    # -- one group --------------------------------------------------------------------------

    def _group(self, work: list[Req], force: bool) -> None:
        known: dict[str, Event] | None = None
        isolate = False
        active = list(work)
        for _ in range(len(work) + 3):
            ov = self._plan(active, known)
            try:
                committed = self._write(active, ov, force, isolate)
            except _Redo as redo:
                self._rollback(ov)
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
                        failed = self._storage_error("reading", exc)
                        for req in active:
                            req.error = req.error or failed
                        break
                else:
                    isolate = True
                continue
            except _Failed as failed:
                self._rollback(ov)
                for req in active:
                    if req.error is None:
                        req.error = failed.error
                break
            self._finish(active, ov, committed)
            break
        for req in work:
            if req.error is not None:
                self._reply(req, exc=req.error)
            else:
                self._reply(req, req.result)

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
                        req.result, req.writes = self.planner.claim(*req.args, ov)
                    elif req.kind == "renew":
                        req.result, req.writes = self.planner.renew(*req.args, ov)
                except AsmError as exc:
                    req.error = exc
                except Exception as exc:  # a lookup failed: this request cannot be planned
                    req.error = self._storage_error("reading", exc)
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
        statements = [] if isolate else _statements(writes, ov)  # type: ignore[arg-type]
        conn = self.conn
        try:
            if pending:
                self._begin()
                insert_events(conn, pending)
                with self.lock:
                    del self.owed_pending[: len(pending)]
                    self.owed_inserted.extend(pending)
        except duckdb.Error as exc:
            raise _Failed(self._cannot_write(exc)) from None
        try:
            if isolate:
                for req in reqs:
                    if req.writes:
                        self._run(_statements([req.writes], None), req)
            elif commit and not self.in_txn and len(statements) == 1:
                sql, params = statements[0]  # autocommit: one statement is its own transaction
                conn.execute(sql, params)
                self.stats.commits += 1
                return True
            else:
                self._run(statements, None)
        except _IO_ERRORS as exc:  # the file refuses writes: not any one request's fault
            self.stats.failed_commits += 1
            raise _Failed(self._cannot_write(exc)) from None
        except duckdb.ConstraintException as exc:
            raise _Redo("ids") from exc
        except duckdb.Error as exc:
            raise _Redo("isolate") from exc
        if not commit:
            return False
        try:
            if self.in_txn:
                self.in_txn = False
                conn.execute("COMMIT")
            self.stats.commits += 1
        except duckdb.Error as exc:
            self.stats.failed_commits += 1
            raise _Failed(self._cannot_write(exc)) from None
        return True

    def _run(self, statements: list[tuple[str, Any]], req: Req | None) -> None:
        import duckdb

        if not statements:
            return
        self._begin()
        try:
            for sql, params in statements:
                self.conn.execute(sql, params)
        except _IO_ERRORS:
            raise
        except duckdb.ConstraintException:
            if req is None:
                raise
            raise _Redo(
                "drop", req, self._storage_error("writing", None, "a stored record or event id conflicts")
            ) from None
        except duckdb.Error as exc:
            if req is None:
                raise
            raise _Redo("drop", req, self._refused(exc)) from None

    def _begin(self) -> None:
        if not self.in_txn:
            self.conn.execute("BEGIN TRANSACTION")
            self.in_txn = True

    def _rollback(self, ov: Overlay) -> None:
        """Undo the open transaction; owed rows go back to be inserted again."""
        import duckdb

        if self.in_txn:
            self.in_txn = False
            try:
                self.conn.execute("ROLLBACK")
            except duckdb.Error:
                pass
        with self.lock:
            self.owed_pending[:0] = self.owed_inserted
            self.owed_inserted = []
            for sid in ov.seqs:
                state = self.records.sessions.get(sid)
                if state is not None:
                    state.seq = state.acked
            self.inflight_runs = set()

    def _finish(self, reqs: list[Req], ov: Overlay, committed: bool) -> None:
        """Make the group's outcome visible: caches, tail, answers, wake-ups."""
        new_rows: list[Row] = []
        touched: set[str] = set()
        with self.lock:
            for req in reqs:
                if req.error is None and req.writes:
                    self.stats.units += 1
                    new_rows.extend(req.writes.rows)
                    if req.behind and not committed:
                        self.stats.behind_acks += 1
            if committed:
                done = self.owed_inserted
                self.owed_inserted = []
                self.failing = None
                self._retry_delay = RETRY_FIRST
                if self.owed_pending:
                    self.owed_since = time.monotonic()
            else:
                done = []
                if new_rows and not self.owed:
                    self.owed_since = time.monotonic()
                self.owed_inserted.extend(new_rows)
            for sid, session in ov.sessions.items():
                state = self.records.sessions.get(sid)
                if state is not None:
                    state.session = session
                    self.records.resized(state)
            for run in ov.runs.values():
                if run.id in ov.new_runs or self.records.runs.get(run.id) is not None:
                    self.records.put_run(run)
            for sid, index in ov.run_index.items():
                state = self.records.sessions.get(sid)
                if state is not None and state.runs is not None:
                    state.runs.update(index)
                    self.records.resized(state)
            marks: dict[str, int] = {}
            for row in done:
                marks[row[1]] = max(marks.get(row[1], 0), row[2])
            for sid, seq in ov.seqs.items():
                state = self.records.sessions.get(sid)
                if state is None and sid in ov.new_sessions:
                    from .caches import SessionState

                    state = SessionState(ov.sessions[sid], 0, 0, 0, runs={})
                    self.records.put_session(state)
                if state is not None:
                    state.seq = state.acked = max(state.acked, seq)
                if committed:
                    marks[sid] = max(marks.get(sid, 0), seq)
            for sid, seq in marks.items():
                state = self.records.sessions.get(sid)
                if state is not None:
                    state.committed = max(state.committed, seq)
            self.inflight_runs = set()
            self.tail.feed(new_rows)
            self.stats.events += len(new_rows)
            touched = {row[1] for row in new_rows}
        if committed and self.on_commit is not None and marks:
            self.on_commit(marks)
        for sid in touched:
            self.notifier.notify(sid)

    # -- errors -----------------------------------------------------------------------------

    def _storage_error(self, doing: str, exc: BaseException | None, what: str | None = None) -> StorageError:
        detail = what or f"{type(exc).__name__}: {exc}"
        return StorageError(f"{doing} {self.path} failed: {detail}", file=str(self.path))

    def _refused(self, exc: BaseException) -> ValidationError:
        """A statement error that only this request causes: its data cannot be stored."""
        return ValidationError(
            f"{self.path} refused this write: {type(exc).__name__}: {exc}",
            path="unit",
            hint="a value is out of the range DuckDB stores (an integer above 2**63, a date after year 9999?)",
        )

    def _cannot_write(self, exc: BaseException) -> StorageError:
        now = time.monotonic()
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)
        waiting = self.owed
        log.error("writing to %s failed (%d acknowledged events wait to be stored): %s", self.path, waiting, exc)
        self.failing = StorageError(
            f"the store cannot write to {self.path} ({type(exc).__name__}: {exc}); "
            f"{waiting} acknowledged event(s) wait to be stored and are retried",
            hint="free disk space or fix the file's permissions; writes succeed again once the file can be written",
            file=str(self.path),
            retryable=True,
            waiting=waiting,
        )
        return self.failing

    # -- answers ----------------------------------------------------------------------------

    def _reply(self, req: Req, result: Any = None, exc: BaseException | None = None) -> None:
        fut = req.fut
        if isinstance(fut, cf.Future):
            if not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            return
        self._outbox.setdefault(fut.get_loop(), []).append((fut, result, exc))

    def _send(self) -> None:
        """Wake each waiting event loop once for all its answers (not once per request)."""
        outbox, self._outbox = self._outbox, {}
        for loop, answers in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, answers)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                pass

    # -- shutting down ----------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self.owed:
            try:
                self._group([], True)
            except Exception:  # pragma: no cover - reported below
                log.exception("final commit to %s failed", self.path)
        if self.owed:
            log.error("closing %s: %d acknowledged event(s) could not be stored and are lost", self.path, self.owed)
        leftover: list[Req] = []
        while True:
            try:
                leftover.append(self.queue.get_nowait())
            except queue.Empty:
                break
        for req in leftover:
            if req.kind != "stop" and self._claim(req):
                self._reply(req, exc=StoreClosedError(f"the duckdb store {self.path} is closed"))
            elif req.kind == "stop" and not req.fut.done():
                req.fut.set_result(None)
        self._send()


def _io_errors() -> tuple[type[BaseException], ...]:
    import duckdb

    return (duckdb.IOException, duckdb.FatalException, duckdb.PermissionException)


class _Failed(Exception):
    def __init__(self, error: StorageError) -> None:
        super().__init__(error)
        self.error = error


def _deliver(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Resolve a group's futures on their own loop (callers that gave up are skipped)."""
    for fut, result, exc in answers:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
