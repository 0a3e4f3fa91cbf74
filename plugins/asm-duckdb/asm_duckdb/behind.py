"""Acknowledgements: a write-behind unit's on the caller's thread, and a group's outcome.

:func:`acknowledge_now` is the fast path of write-behind: a unit of events alone under a run's
lease is planned on the caller's thread, under the store lock, when everything its plan needs is
cached - no thread hop, no statement; its rows become *owed* and the writer inserts and commits
them with the next durability point. :func:`finish` makes a group's outcome visible once its
statements ran (and, for awaited units, committed): the record cache, the tail, the seqs, the
wake-ups; :func:`rollback` undoes a group that failed. All three are functions of the
:class:`~asm_duckdb.writer.Writer` whose state they change.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from asm_kernel.writes import Committed, UnitState, WriteUnit, plan_unit

from .caches import SessionState
from .codec import Row, event_row
from .planner import Overlay
from .requests import BEHIND_MAX_ROWS, RETRY_FIRST, Req

if TYPE_CHECKING:
    from .writer import Writer

__all__ = ["acknowledge_now", "finish", "rollback"]


def acknowledge_now(self: Writer, unit: WriteUnit, payloads: Sequence[str]) -> Committed | None:
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
        # The writer sleeps with no deadline (nothing was owed): wake it, so that it commits
        # these rows within BEHIND_MAX_DELAY even if no other write comes.
        wake, self.idle = self.idle, False
        self.owed_pending.extend(rows)
        self.tail.feed(rows)
        self.stats.behind_acks += 1
        self.stats.fast_acks += 1
        many = self.owed >= BEHIND_MAX_ROWS
    finally:
        self.lock.release()
    if many:
        self.queue.put(Req("flush", cf.Future()))
    elif wake:
        self.queue.put(Req("wake", cf.Future()))
    self.notifier.notify(unit.session_id)
    return plan.committed()


def finish(self: Writer, reqs: list[Req], ov: Overlay, committed: bool) -> None:
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


def rollback(self: Writer, ov: Overlay) -> None:
    """Undo the open transaction: owed rows go back to be inserted again, planned seqs and
    runs are released (the group's outcome never becomes visible)."""
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
