"""One write unit in one Postgres transaction: lock, read the state, plan, write.

The kernel's :func:`asm_kernel.writes.plan_unit` is the reference semantics; this module only
gathers its :class:`~asm_kernel.writes.UnitState` under the right locks and writes the plan:

1. lock the session row (``FOR UPDATE``): every unit of a session, and every claim of its runs,
   is serialized from here, so seqs are assigned gapless (``sessions.last_seq``) in this
   transaction; the database clock (``clock_timestamp()``, read once the lock is granted) judges
   leases;
2. lock the runs the unit writes or fences (``FOR UPDATE``, in id order: a lease renewal
   racing a takeover waits for it and then sees the new token); read live runs and idempotency
   keys only when the unit asks;
3. ``plan_unit``; a failed condition raises before anything is written. The unit's event ids
   are looked up (a retry returns the stored events) only when they may matter: see
   :func:`apply_unit`;
4. write the session and runs, then the events and the seq counter in one statement. The
   caller commits (and then announces the new events: :class:`asm_postgres.listener.Announcer`);
   a failure anywhere rolls everything back.

Statements run under READ COMMITTED: each one after the lock sees every transaction that held
the lock before, which is all the isolation the unit needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asm_kernel.errors import AlreadyExistsError, AsmError
from asm_kernel.model import Event, Run
from asm_kernel.writes import UnitPlan, UnitState, WriteUnit, plan_unit
from attrs import evolve
from psycopg import errors as pe

from .rows import event_from_pg, event_rows, run_from_row, run_row, session_from_row, session_row
from .sql import Statements

__all__ = ["apply_unit", "unique_violation", "Duplicate"]

#: Event types a ``"fast"`` store commits without waiting for the WAL flush (see the docs),
#: beside every unit the kernel marks ``durable=False`` (deltas, a tool round's intermediate events).
STREAM_DELTAS = frozenset({"message_streamed", "thinking_streamed"})


async def _stored(conn: Any, sql: Statements, unit: WriteUnit) -> list[Event | None]:
    """The stored event of each of the unit's event ids (None where there is none)."""
    if not unit.events:
        return []
    cur = await conn.execute(sql.events_by_id, [[e.id for e in unit.events]])
    found = {r[0]: event_from_pg(r) for r in await cur.fetchall()}
    return [found.get(e.id) for e in unit.events]


async def _state(conn: Any, sql: Statements, unit: WriteUnit, *, lookup: bool) -> UnitState:
    sid = unit.session_id
    cur = await conn.execute(sql.lock_session, [sid])
    row = await cur.fetchone()
    now: datetime = row[0]
    session = session_from_row(row[1:8]) if row[1] is not None else None
    last_seq = int(row[8]) if row[1] is not None else 0
    stored: list[Event | None] = await _stored(conn, sql, unit) if lookup else [None] * len(unit.events)
    names = {w.run.id for w in unit.new_runs} | {w.run.id for w in unit.runs}
    if unit.fence is not None:
        names.add(unit.fence.run_id)
    runs: dict[str, Run] = {}
    if names:
        cur = await conn.execute(sql.lock_runs, [sorted(names)])
        runs = {r.id: r for r in map(run_from_row, await cur.fetchall())}
    live: list[str] = []
    if unit.no_live_runs and session is not None:
        cur = await conn.execute(sql.live_runs, [sid])
        live = [r[0] for r in await cur.fetchall()]
    keys: dict[str, str] = {}
    wanted = sorted({w.run.idempotency_key for w in unit.new_runs if w.run.idempotency_key is not None})
    if wanted and session is not None:
        cur = await conn.execute(sql.keys, [sid, wanted])
        keys = {k: i for k, i in await cur.fetchall()}
    return UnitState(
        session=session, runs=runs, last_seq=last_seq, stored=stored, now=now, live_runs=live, keys=keys
    )


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


class Duplicate(Exception):
    """An event of a unit planned as new was stored already: run the unit again, looking it up."""


async def apply_unit(
    conn: Any, sql: Statements, unit: WriteUnit, payloads: list[str], *, fast: bool, lookup: bool = False
) -> UnitPlan:
    """Check and write ``unit`` inside the caller's open transaction; returns the plan written.

    ``payloads`` are the events' JSON texts from :func:`asm_kernel.storage.check_unit`; with
    ``fast``, a unit made only of stream deltas commits without waiting for its WAL flush.

    Without ``lookup`` the unit's events are first taken to be new (they nearly always are: a
    retry is rare), which saves the id lookup. When that plan fails a condition, the ids are
    looked up and the unit planned again in the same transaction (a retried unit may be a
    replay); when the insert meets an id stored already, :class:`Duplicate` is raised and the
    caller runs the whole transaction again with ``lookup``. The unique index on event ids
    keeps this exact: a plan that took a stored event for new can never be committed.
    """
    state = await _state(conn, sql, unit, lookup=lookup)
    try:
        plan = plan_unit(unit, state)
    except AsmError:
        if lookup or not unit.events:
            raise
        plan = plan_unit(unit, evolve(state, stored=await _stored(conn, sql, unit)))
        lookup = True
    try:
        return await _write(conn, sql, unit, plan, payloads, fast=fast)
    except pe.UniqueViolation as exc:
        if exc.diag.constraint_name == "events_id" and not lookup:
            raise Duplicate() from None
        raise unique_violation(exc.diag.constraint_name, unit) from None


async def _write(
    conn: Any, sql: Statements, unit: WriteUnit, plan: UnitPlan, payloads: list[str], *, fast: bool
) -> UnitPlan:
    if plan.replayed:
        return plan
    sid = unit.session_id
    session_written = False
    if plan.create_session and plan.session is not None:
        await conn.execute(sql.insert_session, [*session_row(plan.session), plan.last_seq])
        session_written = True
    elif unit.session is not None and plan.session is not None:
        s = session_row(plan.session)
        await conn.execute(sql.update_session, [*s[1:], plan.last_seq, sid])
        session_written = True
    new = [run_row(r) for r in plan.runs if r.id in plan.create_runs]
    if new:
        await conn.execute(sql.insert_runs, _columns(new))
    changed = [run_row(r) for r in plan.runs if r.id not in plan.create_runs]
    if changed:
        await conn.execute(sql.update_runs, _columns(changed))
    if plan.new_events:
        by_id = {e.id: p for e, p in zip(unit.events, payloads, strict=True)}
        cols = event_rows(plan.new_events, by_id)
        lazy = not unit.durable or all(e.type in STREAM_DELTAS for e in plan.new_events)
        sync = "off" if fast and lazy and not (unit.runs or unit.new_runs or unit.session) else "on"
        if session_written:
            await conn.execute(sql.append_only, [*cols, sync])
        else:
            await conn.execute(sql.append_and_bump, [*cols, plan.last_seq, sid, sync])
    return plan


def unique_violation(constraint: str | None, unit: WriteUnit) -> AlreadyExistsError:
    """A unique index refused a row that a concurrent unit in another session stored first."""
    sid = unit.session_id
    if constraint == "events_id":
        return AlreadyExistsError(
            "an event id of this unit was stored by another session at the same moment",
            hint="event ids must be unique across the store",
            session_id=sid,
        )
    if constraint == "sessions_pkey":
        return AlreadyExistsError(f"session {sid!r} already exists", session_id=sid)
    if constraint == "runs_pkey":
        return AlreadyExistsError("a run id of this unit was created by another session at the same moment")
    return AlreadyExistsError(
        f"a row of this unit already exists ({constraint or 'unique index'})", session_id=sid
    )
