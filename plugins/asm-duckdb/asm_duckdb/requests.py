"""The requests the writer thread handles: how they are drained, answered and turned into
statements, the errors they fail with, and the writer's counters."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asm_kernel.errors import StorageError, StoreClosedError, ValidationError
from asm_kernel.writes import WriteUnit

from .codec import RUNS, SESSIONS, Row, insert_events, run_params, session_params
from .planner import Overlay, Writes

log = logging.getLogger("asm.duckdb")

__all__ = [
    "BEHIND_MAX_DELAY",
    "BEHIND_MAX_ROWS",
    "RETRY_FIRST",
    "RETRY_MAX",
    "DuckDBStats",
    "Req",
    "CLAIMS",
    "statements",
    "Redo",
    "Failed",
    "deliver",
    "io_errors",
    "drain",
    "Outbox",
    "storage_error",
    "cannot_write",
    "refused",
    "MAX_GROUP_EVENTS",
]


#: Longest time an acknowledged write-behind event stays uncommitted (the kill -9 window).
BEHIND_MAX_DELAY = 0.05
#: Most acknowledged write-behind events kept uncommitted before a commit is forced.
BEHIND_MAX_ROWS = 4000
#: First and longest wait between attempts to write owed events while the file refuses writes.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: Cap on the events gathered into one group commit.
MAX_GROUP_EVENTS = 20_000
#: While requests keep arriving, the writer waits up to this long for the callers it just
#: answered to queue their next writes into the next group (one commit instead of two).
GATHER_MAX_DELAY = 0.002
GATHER_POLL = 0.0002


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
    kind: str  # unit | claim | renew | flush | wake | stop
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
        with CLAIMS:
            if self.state == "queued":
                self.state = "withdrawn"
                return True
            return False

    def claim(self) -> bool:
        """The writer takes the request; False when the caller gave up (cancelled) first."""
        if isinstance(self.fut, cf.Future):
            return self.fut.set_running_or_notify_cancel()
        with CLAIMS:
            if self.state != "queued":
                return False
            self.state = "claimed"
            return True


CLAIMS = threading.Lock()


class _Recorder:
    """Collects statements instead of running them (so a group's can be counted and batched)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append((sql, params))


def statements(
    writes: Sequence[Writes], ov: Overlay | None, number: Callable[[int], int], *, first: Sequence[Row] = ()
) -> list[tuple[str, Any]]:
    """The statements of ``writes``: coalesced by record id over ``ov``, or one request's in order.

    ``number(k)`` hands out the log numbers (``n``) of k new event rows: the first of k in a row.
    ``first`` are event rows inserted ahead of the group's own, in the same statement (only
    with ``ov``, when the group has event rows).
    """
    rec = _Recorder()
    if ov is None:
        for w in writes:
            for params, new in w.sessions:
                (SESSIONS.insert if new else SESSIONS.update)(rec, [params])  # type: ignore[arg-type]
            for params, new in w.runs:
                (RUNS.insert if new else RUNS.update)(rec, [params])  # type: ignore[arg-type]
            if w.rows:
                insert_events(rec, w.rows, number(len(w.rows)))  # type: ignore[arg-type]
        return rec.statements
    sessions: dict[str, list[Any]] = {}
    runs: dict[str, list[Any]] = {}
    rows: list[Row] = list(first)
    for w in writes:
        for params, _ in w.sessions:
            sessions[params[0]] = params
        for params, _ in w.runs:
            runs[params[0]] = params
        rows.extend(w.rows)
    stored_sessions = {k: session_params(s) for k, s in ov.stored_sessions.items() if k in sessions}
    stored_runs = {k: run_params(r) for k, r in ov.stored_runs.items() if k in runs}
    tables: tuple[tuple[Any, dict[str, list[Any]], set[str], dict[str, list[Any]]], ...] = (
        (SESSIONS, sessions, ov.new_sessions, stored_sessions),
        (RUNS, runs, ov.new_runs, stored_runs),
    )
    for table, final, created, stored in tables:
        inserts = [p for k, p in final.items() if k in created]
        updates = [k for k in final if k not in created]
        if updates:
            table.update(rec, [final[k] for k in updates], [stored.get(k) for k in updates])  # type: ignore[arg-type]
        if inserts:
            table.insert(rec, inserts)  # type: ignore[arg-type]
    if rows:
        insert_events(rec, rows, number(len(rows)))  # type: ignore[arg-type]
    return rec.statements


class Redo(Exception):
    """The group must be planned again: with id lookups (``"ids"``), one request at a time to
    find the one a statement error came from (``"isolate"``), or without ``culprit``."""

    def __init__(self, how: str, culprit: Req | None = None, error: BaseException | None = None) -> None:
        super().__init__(how)
        self.how = how
        self.culprit = culprit
        self.error = error


def io_errors() -> tuple[type[BaseException], ...]:
    """duckdb's errors that mean the file refuses writes (duckdb is imported lazily)."""
    import duckdb

    return (duckdb.IOException, duckdb.FatalException, duckdb.PermissionException)


class Failed(Exception):
    def __init__(self, error: StorageError) -> None:
        super().__init__(error)
        self.error = error


def _resolve(fut: asyncio.Future[Any] | cf.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the caller gave up
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def deliver(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Resolve a group's futures on their own loop (callers that gave up are skipped)."""
    for fut, result, exc in answers:
        _resolve(fut, result, exc)


def drain(requests: queue.SimpleQueue[Req], timeout: float | None, last_group: int) -> list[Req]:
    """The next group: the first request (waiting up to ``timeout``), then whatever else is queued.

    While the last group had several requests, waits a little (up to ``GATHER_MAX_DELAY``) for
    the callers just answered to queue their next ones, so they share the next commit.
    """
    try:
        first = requests.get(timeout=timeout) if timeout is None or timeout > 0 else requests.get_nowait()
    except queue.Empty:
        return []
    group = [first]
    size = len(first.unit.events) if first.unit is not None else 0
    deadline = expected = 0.0
    idle = 0
    while size < MAX_GROUP_EVENTS and group[-1].kind != "stop":
        try:
            req = requests.get_nowait()
        except queue.Empty:
            now = time.monotonic()
            if not deadline:
                expected = len(group) + last_group
                deadline = now + GATHER_MAX_DELAY
            if last_group < 2 or len(group) >= expected or idle >= 2 or now >= deadline:
                break
            idle += 1
            time.sleep(GATHER_POLL)
            continue
        idle = 0
        group.append(req)
        if req.unit is not None:
            size += len(req.unit.events)
    return group


class Outbox:
    """Answers to requests, sent to each waiting event loop once per group (not once per request)."""

    def __init__(self) -> None:
        self._answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}

    def reply(self, req: Req, result: Any = None, exc: BaseException | None = None) -> None:
        fut = req.fut
        if isinstance(fut, cf.Future):  # a thread waits on it: resolved from here
            _resolve(fut, result, exc)
            return
        self._answers.setdefault(fut.get_loop(), []).append((fut, result, exc))

    def send(self) -> None:
        answers, self._answers = self._answers, {}
        for loop, batch in answers.items():
            try:
                loop.call_soon_threadsafe(deliver, batch)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                pass

    def close(self, requests: queue.SimpleQueue[Req], closed: StoreClosedError) -> None:
        """Refuse every request still queued (the writer stops) and send the answers."""
        while True:
            try:
                req = requests.get_nowait()
            except queue.Empty:
                break
            if req.kind != "stop" and req.claim():
                self.reply(req, exc=closed)
            elif req.kind == "stop" and not req.fut.done():
                req.fut.set_result(None)
        self.send()


def cannot_write(path: object, exc: BaseException, waiting: int) -> StorageError:
    """The error every write gets while the file refuses writes (``waiting``: owed events)."""
    log.error("writing to %s failed (%d acknowledged events wait to be stored): %s", path, waiting, exc)
    return StorageError(
        f"the store cannot write to {path} ({type(exc).__name__}: {exc}); "
        f"{waiting} acknowledged event(s) wait to be stored and are retried",
        hint="free disk space or fix the file's permissions; writes succeed again once the file can be written",
        file=str(path),
        retryable=True,
        waiting=waiting,
    )


def storage_error(path: object, doing: str, exc: BaseException | None, what: str | None = None) -> StorageError:
    detail = what or f"{type(exc).__name__}: {exc}"
    return StorageError(f"{doing} {path} failed: {detail}", file=str(path))


def refused(path: object, exc: BaseException) -> ValidationError:
    """A statement error that only this request causes: its data cannot be stored."""
    return ValidationError(
        f"{path} refused this write: {type(exc).__name__}: {exc}",
        path="unit",
        hint="a value is out of the range DuckDB stores (an integer above 2**63, a date after year 9999?)",
    )
