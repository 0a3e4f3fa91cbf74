"""Applying write units to the writer's state: :func:`asm_kernel.writes.plan_unit` over memory.

The writer plans every request of a group, in order, against a :class:`Overlay` (what the
group has planned so far) over the :class:`~asm_duckdb.caches.Records` cache over the file:
a session, run or event the cache does not hold is read from the file on the writer's own
connection. The kernel's ``plan_unit`` decides; this module only gathers its ``UnitState`` and
records the outcome as rows to write (:class:`Writes`). Nothing here touches the shared caches:
the writer promotes an overlay into them only once its transaction committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import SessionNotFoundError
from asm_kernel.model import Event, Fence, Run, RunStatus, Session, SessionStatus
from asm_kernel.writes import UnitPlan, UnitState, WriteUnit, lease_expired, plan_unit
from attrs import evolve

from .caches import Records, SessionState, Tail
from .codec import (
    EVENT_SELECT,
    RUN_SELECT,
    SESSION_SELECT,
    Row,
    event_from_db,
    event_from_tail,
    event_row,
    run_from_row,
    run_params,
    session_from_row,
    session_params,
)
from .layout import select_events, session_key

if TYPE_CHECKING:
    import duckdb

__all__ = ["Overlay", "Writes", "Planner"]

#: Runs that hold their session's place: queued, executing, or waiting for a person.
_LIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


@dataclass(eq=False)
class Writes:
    """What one request writes: event rows, and session/run rows (``True`` = insert)."""

    rows: list[Row] = field(default_factory=list)
    sessions: list[tuple[list[Any], bool]] = field(default_factory=list)
    runs: list[tuple[list[Any], bool]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.rows or self.sessions or self.runs)


@dataclass(eq=False)
class Overlay:
    """Everything a group planned, on top of the cache (the last write of a record wins)."""

    sessions: dict[str, Session] = field(default_factory=dict)
    new_sessions: set[str] = field(default_factory=set)
    seqs: dict[str, int] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    new_runs: set[str] = field(default_factory=set)
    #: Per session, the runs this group created or changed: id -> (status, idempotency key).
    run_index: dict[str, dict[str, tuple[RunStatus, str | None]]] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)
    #: The records as the file holds them (committed) for those the group updates, so that an
    #: update sets only the columns that change.
    stored_sessions: dict[str, Session] = field(default_factory=dict)
    stored_runs: dict[str, Run] = field(default_factory=dict)

    def record_run(self, run: Run, created: bool) -> None:
        self.runs[run.id] = run
        if created:
            self.new_runs.add(run.id)
        self.run_index.setdefault(run.session_id, {})[run.id] = (run.status, run.idempotency_key)


def top_seq(session_id: str, mark: int) -> tuple[str, list[object]]:
    """A scalar query for the highest stored seq of a session (0 for none), and its parameters."""
    key = session_key(session_id)
    sql, params = select_events("max(seq) AS top", "skey = ? AND session_id = ?", [key, session_id], mark)
    return f"SELECT coalesce(max(top), 0) FROM ({sql})", params


class Planner:
    """Plans requests for the writer (called with the store lock held, on the writer thread)."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        records: Records,
        tail: Tail,
        clock: Callable[[], datetime],
        merge_mark: Callable[[], int] = lambda: 0,
        last_committed: Callable[[str], int] | None = None,
    ) -> None:
        self.conn = conn
        self.records = records
        self.tail = tail
        self.clock = clock
        self.merge_mark = merge_mark
        #: A session's last committed seq from the marks (exact from open on; see
        #: :mod:`asm_duckdb.marks`), which spares the first write to a session a ``max(seq)``
        #: over every part of the log. None: ask the log.
        self.last_committed = last_committed

    # -- reading what the cache lacks -------------------------------------------------------

    def session_state(self, session_id: str) -> SessionState | None:
        state = self.records.session(session_id)
        if state is not None:
            return state
        if self.last_committed is not None:
            # Every event of a session the cache does not hold is committed (the cache keeps
            # any session with acknowledged events not yet committed), so its mark is its top.
            row = self.conn.execute(f"SELECT {SESSION_SELECT} FROM sessions WHERE id = ?", [session_id]).fetchone()
            if row is None:
                return None
            seq = self.last_committed(session_id)
        else:
            top, params = top_seq(session_id, self.merge_mark())
            row = self.conn.execute(
                f"SELECT {SESSION_SELECT}, ({top}) FROM sessions WHERE id = ?", [*params, session_id]
            ).fetchone()
            if row is None:
                return None
            seq = int(row[-1])
            row = row[:-1]
        state = SessionState(session_from_row(row), seq, seq, seq)
        self.records.put_session(state)
        return state

    def run(self, run_id: str, ov: Overlay) -> Run | None:
        if run_id in ov.runs:
            return ov.runs[run_id]
        run = self.records.run(run_id)
        if run is not None:
            return run
        row = self.conn.execute(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            return None
        run = run_from_row(row)
        self.records.put_run(run)
        return run

    def run_index(self, state: SessionState) -> dict[str, tuple[RunStatus, str | None]]:
        if state.runs is None:
            rows = self.conn.execute(
                "SELECT id, status, idempotency_key FROM runs WHERE session_id = ?", [state.session.id]
            ).fetchall()
            state.runs = {r[0]: (RunStatus(r[1]), r[2]) for r in rows}
            self.records.resized(state)
        return state.runs

    def lookup_events(self, ids: Sequence[str]) -> dict[str, Event]:
        """Stored events with these ids, read from the file (after a duplicate id was hit)."""
        if not ids:
            return {}
        rows = self.conn.execute(
            f"SELECT {EVENT_SELECT} FROM events WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)]
        ).fetchall()
        return {r[0]: event_from_db(r) for r in rows}

    def lookup_ids(self, table: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.conn.execute(f"SELECT id FROM {table} WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])
        return {r[0] for r in rows.fetchall()}

    # -- planning a unit -------------------------------------------------------------------

    def plan(
        self, unit: WriteUnit, payloads: Sequence[str], ov: Overlay, known: dict[str, Event] | None
    ) -> tuple[UnitPlan, Writes]:
        """Plan ``unit`` over ``ov``; ``known`` are events looked up by id (a redo), else None."""
        sid = unit.session_id
        # Creates are optimistic: an id neither planned nor cached is taken to be new (the
        # primary key refuses it if it is stored after all, and the group is then redone with
        # ``known`` set, looking everything up). A create costs no query.
        careful = known is not None
        state: SessionState | None = None
        if sid in ov.sessions:
            session: Session | None = ov.sessions[sid]
        elif unit.new_session is not None and not careful:
            state = self.records.session(sid)
            session = state.session if state is not None else None
        else:
            state = self.session_state(sid)
            session = state.session if state is not None else None
        if session is not None and sid not in ov.sessions:
            ov.stored_sessions.setdefault(sid, session)
        last = ov.seqs.get(sid, state.seq if state is not None else 0)
        names = {w.run.id for w in unit.runs}
        if unit.fence is not None:
            names.add(unit.fence.run_id)
        runs: dict[str, Run] = {}
        for name in names:
            run = self.run(name, ov)
            if run is not None:
                runs[name] = run
                if name not in ov.runs:  # from the cache or the file: what is committed
                    ov.stored_runs.setdefault(name, run)
        for write in unit.new_runs:
            name = write.run.id
            if name not in runs:
                run = self.run(name, ov) if careful else ov.runs.get(name) or self.records.run(name)
                if run is not None:
                    runs[name] = run
        live: list[str] = []
        keys: dict[str, str] = {}
        wanted = {w.run.idempotency_key for w in unit.new_runs} - {None}
        if session is not None and (unit.no_live_runs or wanted):
            index: dict[str, tuple[RunStatus, str | None]] = {}
            if state is not None:
                index.update(self.run_index(state))
            index.update(ov.run_index.get(sid, {}))
            live = [r for r, (status, _) in index.items() if status in _LIVE]
            keys = {key: r for r, (_, key) in index.items() if key is not None and key in wanted}
        stored: list[Event | None] = []
        for event in unit.events:
            found = ov.events.get(event.id)
            if found is None:
                row = self.tail.stored(event.id)
                if row is not None:
                    found = event_from_tail(row)
                elif known is not None:
                    found = known.get(event.id)
            stored.append(found)
        plan = plan_unit(
            unit,
            UnitState(
                session=session, runs=runs, last_seq=last, stored=stored, now=self.clock(), live_runs=live, keys=keys
            ),
        )
        return plan, self._record(plan, payloads, unit, ov)

    def _record(self, plan: UnitPlan, payloads: Sequence[str], unit: WriteUnit, ov: Overlay) -> Writes:
        writes = Writes()
        if plan.replayed:
            return writes
        sid = unit.session_id
        if plan.create_session or unit.session is not None:
            assert plan.session is not None
            created = plan.create_session or sid in ov.new_sessions
            writes.sessions.append((session_params(plan.session), plan.create_session))
            ov.sessions[sid] = plan.session
            if created:
                ov.new_sessions.add(sid)
        elif plan.session is not None and sid not in ov.sessions:
            ov.sessions.setdefault(sid, plan.session)
        for run in plan.runs:
            created = run.id in plan.create_runs
            writes.runs.append((run_params(run), created))
            ov.record_run(run, created or run.id in ov.new_runs)
        by_id = {id(e): p for e, p in zip(unit.events, payloads, strict=True)}
        new_ids = {e.id for e in plan.new_events}
        payload_of = {e.id: by_id[id(e)] for e in unit.events if e.id in new_ids}
        for event in plan.new_events:
            writes.rows.append(event_row(event, payload_of[event.id], event.seq))
            ov.events[event.id] = event
        ov.seqs[sid] = plan.last_seq
        return writes

    # -- claims and renewals ----------------------------------------------------------------

    def claim(
        self, owner: str, limit: int, lease_ttl: float, max_running: int, ov: Overlay
    ) -> tuple[list[Run], Writes]:
        """Claim queued runs as :meth:`asm_kernel.builtin.memory.MemoryStore.claim_runs` does."""
        now = self.clock()
        expires = now + timedelta(seconds=lease_ttl)
        rows = self.conn.execute(
            f"SELECT {RUN_SELECT} FROM runs WHERE status IN ('pending', 'running', 'awaiting_approval')"
        ).fetchall()
        runs = {r.id: r for r in map(run_from_row, rows)}
        runs.update({rid: r for rid, r in ov.runs.items()})
        runs = {rid: r for rid, r in runs.items() if r.status in _LIVE}
        busy: dict[str, int] = {}
        for run in runs.values():
            if run.status is not RunStatus.PENDING or not lease_expired(run, now):
                busy[run.session_id] = busy.get(run.session_id, 0) + 1
        statuses: dict[str, SessionStatus | None] = {}
        claimed: list[Run] = []
        writes = Writes()
        for run in sorted(
            (r for r in runs.values() if r.status is RunStatus.PENDING), key=lambda r: (r.created_at, r.id)
        ):
            if len(claimed) >= limit:
                break
            if run.session_id not in statuses:
                session = ov.sessions.get(run.session_id)
                if session is None:
                    state = self.session_state(run.session_id)
                    session = state.session if state is not None else None
                statuses[run.session_id] = session.status if session is not None else None
            if statuses[run.session_id] not in (SessionStatus.PENDING, SessionStatus.ACTIVE):
                continue
            if not lease_expired(run, now) or busy.get(run.session_id, 0) >= max_running:
                continue
            taken = evolve(run, owner=owner, lease_token=run.lease_token + 1, lease_expires_at=expires)
            busy[run.session_id] = busy.get(run.session_id, 0) + 1
            claimed.append(taken)
            writes.runs.append((run_params(taken), run.id in ov.new_runs))
            ov.record_run(taken, run.id in ov.new_runs)
        return claimed, writes

    def renew(self, fences: Sequence[Fence], ttl: float, ov: Overlay) -> tuple[list[str], Writes]:
        expires = self.clock() + timedelta(seconds=ttl)
        lost: list[str] = []
        writes = Writes()
        for fence in fences:
            run = self.run(fence.run_id, ov) if isinstance(fence, Fence) and isinstance(fence.run_id, str) else None
            if run is None or run.lease_token != fence.token or run.status is not RunStatus.RUNNING:
                lost.append(getattr(fence, "run_id", repr(fence)))
                continue
            renewed = evolve(run, lease_expires_at=expires)
            writes.runs.append((run_params(renewed), run.id in ov.new_runs))
            ov.record_run(renewed, run.id in ov.new_runs)
        return lost, writes


def missing_session(session_id: str) -> SessionNotFoundError:
    return SessionNotFoundError(f"no session {session_id!r:.80}", hint="`asm sessions list` shows the ids")
