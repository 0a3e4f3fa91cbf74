"""The requests the writer thread handles, its counters, and how a group becomes statements."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from asm_kernel.errors import StorageError
from asm_kernel.writes import WriteUnit

from .codec import RUNS, SESSIONS, Row, insert_events
from .planner import Overlay, Writes

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
]


#: Longest time an acknowledged write-behind event stays uncommitted (the kill -9 window).
BEHIND_MAX_DELAY = 0.05
#: Most acknowledged write-behind events kept uncommitted before a commit is forced.
BEHIND_MAX_ROWS = 4000
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
        with CLAIMS:
            if self.state == "queued":
                self.state = "withdrawn"
                return True
            return False


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
    tables: tuple[tuple[Any, dict[str, list[Any]], set[str]], ...] = (
        (SESSIONS, sessions, ov.new_sessions),
        (RUNS, runs, ov.new_runs),
    )
    for table, final, created in tables:
        inserts = [p for k, p in final.items() if k in created]
        updates = [p for k, p in final.items() if k not in created]
        if updates:
            table.update(rec, updates)  # type: ignore[arg-type]
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


def deliver(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Resolve a group's futures on their own loop (callers that gave up are skipped)."""
    for fut, result, exc in answers:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
