"""The store's atomic write unit, its conditions, and what a store declares about itself.

Every change of state in asm is one :class:`WriteUnit`: the events that record the change and
the session and/or run records it implies, written in **one transaction**. A run's start is a
unit (run ``pending -> running`` with its lease, ``run_started``, ``message_sent``, routing), so
is its end (the terminal run record with its terminal event), the cancel of a queued run and
the recovery of a crashed one. So a run's record and its log can never disagree: either both
changed or neither did.

Conditions make units safe when several writers race (two cancels of one queued run, a worker
whose lease was taken over, a session completed while a run starts):

* ``session_status`` — the stored session must be in one of these statuses;
* ``no_live_runs`` — the session has no ``pending`` or ``running`` run;
* :class:`RunWrite` ``expect_status`` / ``expect_token`` / ``expect_lease_expired`` — compare
  and set on a run record;
* ``fence`` — the writer still holds the run's lease (its token is current);
* ``expected_seq`` — optimistic concurrency on the log.

A unit whose condition fails stores nothing and raises a typed error
(:class:`~asm_kernel.errors.WriteConflictError`, :class:`~asm_kernel.errors.LeaseLostError`,
:class:`~asm_kernel.errors.SeqConflictError`). A unit is idempotent by its events' ids: when every
event of a unit is already stored, the store returns the stored events and writes nothing else,
so a writer that lost the answer to a commit (a dropped connection) can safely send it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from attrs import evolve, field, frozen

from .errors import (
    AlreadyExistsError,
    LeaseLostError,
    RunNotFoundError,
    SeqConflictError,
    SessionNotFoundError,
    ValidationError,
    WriteConflictError,
)
from .model import Event, Fence, Run, RunStatus, Session, SessionStatus

#: Fields of a run record fixed at its creation; a unit that changes one is refused.
RUN_FIXED = ("session_id", "idempotency_key", "created_at")

__all__ = [
    "RunWrite",
    "WriteUnit",
    "Committed",
    "StoreCapabilities",
    "Durability",
    "UnitState",
    "UnitPlan",
    "plan_unit",
    "RUN_FIXED",
    "lease_expired",
]


def _events(value: Iterable[Event]) -> tuple[Event, ...]:
    return tuple(value)


def _runs(value: Iterable[Run]) -> tuple[Run, ...]:
    return tuple(value)


def _run_writes(value: Iterable[RunWrite | Run]) -> tuple[RunWrite, ...]:
    return tuple(v if isinstance(v, RunWrite) else RunWrite(v) for v in value)


def _statuses(value: Iterable[SessionStatus] | None) -> frozenset[SessionStatus] | None:
    return None if value is None else frozenset(SessionStatus(v) for v in value)


@frozen
class RunWrite:
    """Replace a stored run record, if its conditions hold.

    ``lease_ttl`` grants or renews the run's lease in the same transaction: the store sets
    ``lease_expires_at`` to *its own clock* plus ``lease_ttl`` seconds (leases are judged by the
    store's clock, never the writer's). ``None`` stores ``lease_expires_at`` as given in ``run``
    (a terminal run releases its lease with ``lease_expires_at=None``).
    """

    run: Run
    expect_status: RunStatus | None = None
    #: The stored run's ``lease_token`` must be this (compare and set on the lease).
    expect_token: int | None = None
    #: The stored run's lease must have expired by the store's clock (or never been granted).
    expect_lease_expired: bool = False
    lease_ttl: float | None = None


@frozen
class WriteUnit:
    """Events plus the records they imply, written atomically. See the module docstring."""

    session_id: str
    events: tuple[Event, ...] = field(default=(), converter=_events)
    #: Create this session (it must not exist) before anything else in the unit.
    new_session: Session | None = None
    #: Replace the stored session record.
    session: Session | None = None
    #: Condition: the stored session's status is one of these.
    session_status: frozenset[SessionStatus] | None = field(default=None, converter=_statuses)
    #: Condition: the session has no pending or running run (runs written by this unit aside).
    no_live_runs: bool = False
    #: Create these runs (each must not exist; their session is the unit's; an idempotency key
    #: must be new in the session). A plain :class:`Run` is taken as ``RunWrite(run)``; of a
    #: RunWrite only ``lease_ttl`` applies (a run created running holds a lease at once).
    new_runs: tuple[RunWrite, ...] = field(default=(), converter=_run_writes)
    #: Replace these runs, each under its own conditions.
    runs: tuple[RunWrite, ...] = field(default=(), converter=_run_writes)
    #: Condition: the session's last seq is this.
    expected_seq: int | None = None
    #: Condition: the writer holds this run lease (its token is the run's current one).
    fence: Fence | None = None
    #: False for events whose loss in a crash costs nothing durable (stream deltas, a tool round's
    #: intermediate events: the run's next durable write repeats or supersedes them). A store in a
    #: write-behind mode may acknowledge such a unit before it commits; any later durable unit
    #: commits everything written before it. A store may ignore the flag (everything durable).
    durable: bool = True

    @property
    def empty(self) -> bool:
        return not (self.events or self.new_session or self.session or self.new_runs or self.runs)


@frozen
class Committed:
    """What a unit stored: its events with their seqs, and the records as the store now has them.

    ``replayed`` is True when every event of the unit was already stored (a retry): nothing was
    written and ``events`` are the originals.
    """

    events: tuple[Event, ...] = field(default=(), converter=_events)
    session: Session | None = None
    runs: tuple[Run, ...] = field(default=(), converter=_runs)
    replayed: bool = False

    def run(self, run_id: str) -> Run:
        for run in self.runs:
            if run.id == run_id:
                return run
        raise KeyError(run_id)


Durability = Literal["none", "safe", "fast"]


@frozen
class StoreCapabilities:
    """What a store declares, so the kernel never guesses from its class or name.

    * ``shared`` — other processes may write the same data at the same time (Postgres). A store
      that is not shared (memory; an embedded file one process holds) knows, when it opens, that
      every lease granted before belongs to a process that is gone.
    * ``durable`` — acknowledged writes survive the process; ``durability`` names the mode in
      use, ``durability_modes`` every mode the store offers (each documents what a ``kill -9``
      may lose).
    * ``leases`` — run leases and fencing tokens are enforced (every asm store must; a store
      that cannot would let two workers write one run).
    * ``cross_process_notify`` — ``wait`` wakes on appends made by other processes.
    * ``sql`` — the store can answer SQL queries over the log (reports, cost).
    """

    shared: bool = False
    durable: bool = False
    durability: Durability = "none"
    durability_modes: tuple[str, ...] = ()
    leases: bool = True
    cross_process_notify: bool = False
    sql: bool = False


# -- the reference semantics: what a store does with a unit -------------------------------------


@frozen
class UnitState:
    """What a store read, inside its transaction (under its lock), to apply one unit.

    * ``session`` — the stored session record, or None when there is none;
    * ``runs`` — the stored record of every run the unit creates, replaces or fences (absent ids
      are runs that do not exist);
    * ``last_seq`` — the session's last seq;
    * ``stored`` — for each of the unit's events, the event already stored with that id, or None;
    * ``live_runs`` — ids of the session's pending or running runs (only needed, and only read,
      when the unit has ``no_live_runs``);
    * ``keys`` — for each idempotency key of the unit's new runs, the id of the session's run
      already stored with that key (keys not used yet are absent);
    * ``now`` — the store's clock, which judges leases.
    """

    session: Session | None
    runs: Mapping[str, Run]
    last_seq: int
    stored: Sequence[Event | None]
    now: datetime
    live_runs: Sequence[str] = ()
    keys: Mapping[str, str] = field(factory=dict)


@frozen
class UnitPlan:
    """What to write for a unit: the new events (with seqs) and the final records.

    ``events`` are all of the unit's events in order (stored ones for replayed ids); ``new_events``
    only those to insert. ``replayed`` means nothing at all is to be written.
    """

    events: tuple[Event, ...]
    new_events: tuple[Event, ...]
    session: Session | None
    create_session: bool
    runs: tuple[Run, ...]
    create_runs: frozenset[str]
    last_seq: int
    replayed: bool = False

    def committed(self) -> Committed:
        return Committed(self.events, self.session, self.runs, self.replayed)


def lease_expired(run: Run, now: datetime) -> bool:
    """A lease that was never granted, was released, or ran out by ``now`` (the store's clock)."""
    return run.lease_expires_at is None or run.lease_expires_at <= now


def _conflict(message: str, **details: Any) -> WriteConflictError:
    return WriteConflictError(message, hint="re-read the record and decide again", **details)


def plan_unit(unit: WriteUnit, state: UnitState) -> UnitPlan:
    """Check ``unit``'s conditions against ``state`` and say what to write, or raise.

    The order is part of the contract (every store gives the same error for the same unit):
    a full replay returns the stored events; the session exists (or is new); the fence; the
    session's status and live runs; new runs do not exist; each run write's conditions;
    ``expected_seq``. Raises :class:`SessionNotFoundError`, :class:`AlreadyExistsError`,
    :class:`LeaseLostError`, :class:`WriteConflictError`, :class:`RunNotFoundError` or
    :class:`SeqConflictError`; returns a :class:`UnitPlan` otherwise.
    """
    sid = unit.session_id
    for event, stored in zip(unit.events, state.stored, strict=True):
        if stored is not None and stored.session_id != sid:
            raise AlreadyExistsError(
                f"event id {event.id!r} is already used in another session",
                hint="event ids must be unique across the store",
            )
    # A replay first: a unit that created the session, sent again after its answer was lost,
    # finds the session it made and is recognised by its events, not refused.
    if unit.events and all(s is not None for s in state.stored):
        return UnitPlan(
            events=tuple(s for s in state.stored if s is not None),
            new_events=(),
            session=state.session,
            create_session=False,
            runs=tuple(state.runs[w.run.id] for w in (*unit.new_runs, *unit.runs) if w.run.id in state.runs),
            create_runs=frozenset(),
            last_seq=state.last_seq,
            replayed=True,
        )
    if unit.new_session is not None:
        if state.session is not None:
            raise AlreadyExistsError(f"session {sid!r} already exists")
    elif state.session is None:
        raise SessionNotFoundError(
            f"no session {sid!r}" + (": cannot append to it" if unit.events else ""),
            hint="create the session first; `asm sessions list` shows the ids",
        )
    if unit.fence is not None:
        fenced = state.runs.get(unit.fence.run_id)
        if fenced is None:
            raise RunNotFoundError(f"no run {unit.fence.run_id!r} (named by the write's lease fence)")
        if fenced.lease_token != unit.fence.token:
            raise LeaseLostError(
                f"run {fenced.id} is now held under lease token {fenced.lease_token} (owner "
                f"{fenced.owner or 'none'}); this write carried token {unit.fence.token}",
                hint="another worker took the run over after this one's lease expired; stop working on it",
                run_id=fenced.id,
                token=unit.fence.token,
                current_token=fenced.lease_token,
            )
    stored_session = state.session
    if (
        unit.session_status is not None
        and stored_session is not None
        and (stored_session.status not in unit.session_status)
    ):
        wanted = " or ".join(sorted(s.value for s in unit.session_status))
        raise _conflict(
            f"session {sid} is {stored_session.status.value}, not {wanted}",
            record="session",
            id=sid,
            expected=wanted,
            actual=stored_session.status.value,
        )
    if unit.no_live_runs:
        written = {w.run.id for w in unit.new_runs} | {w.run.id for w in unit.runs}
        live = [r for r in state.live_runs if r not in written]
        if live:
            raise _conflict(
                f"session {sid} has {len(live)} pending or running run(s) ({', '.join(live[:3])})",
                record="session",
                id=sid,
                live_runs=",".join(live[:20]),
            )
    runs: list[Run] = []
    for write in unit.new_runs:
        run = write.run
        if run.id in state.runs:
            raise AlreadyExistsError(f"run {run.id!r} already exists")
        if run.idempotency_key is not None and run.idempotency_key in state.keys:
            existing = state.keys[run.idempotency_key]
            raise AlreadyExistsError(
                f"session {sid} already has run {existing} with idempotency key {run.idempotency_key!r}",
                hint="the existing run is the one this key names",
                run_id=existing,
                idempotency_key=run.idempotency_key,
            )
        if write.lease_ttl is not None:
            run = evolve(run, lease_expires_at=state.now + timedelta(seconds=write.lease_ttl))
        runs.append(run)
    for i, write in enumerate(unit.runs):
        stored_run = state.runs.get(write.run.id)
        if stored_run is None:
            raise RunNotFoundError(f"no run {write.run.id!r}")
        for name in RUN_FIXED:  # stores may key and index by them, so they never change
            if getattr(write.run, name) != getattr(stored_run, name):
                raise ValidationError(
                    f"run {stored_run.id}: {name} cannot change (stored {getattr(stored_run, name)!r:.60}, "
                    f"given {getattr(write.run, name)!r:.60})",
                    path=f"runs[{i}].run.{name}",
                    hint="evolve the stored run record; a run's session, idempotency key and creation time are fixed",
                )
        if write.expect_status is not None and stored_run.status is not write.expect_status:
            raise _conflict(
                f"run {stored_run.id} is {stored_run.status.value}, not {write.expect_status.value}",
                record="run",
                id=stored_run.id,
                expected=write.expect_status.value,
                actual=stored_run.status.value,
            )
        if write.expect_token is not None and stored_run.lease_token != write.expect_token:
            raise _conflict(
                f"run {stored_run.id} holds lease token {stored_run.lease_token}, not {write.expect_token}",
                record="run",
                id=stored_run.id,
                expected=write.expect_token,
                actual=stored_run.lease_token,
            )
        if write.expect_lease_expired and not lease_expired(stored_run, state.now):
            raise _conflict(
                f"run {stored_run.id} holds a live lease of {stored_run.owner} until "
                f"{stored_run.lease_expires_at.isoformat() if stored_run.lease_expires_at else '?'}",
                record="run",
                id=stored_run.id,
                owner=stored_run.owner,
            )
        run = write.run
        if write.lease_ttl is not None:
            run = evolve(run, lease_expires_at=state.now + timedelta(seconds=write.lease_ttl))
        runs.append(run)
    if unit.expected_seq is not None and unit.expected_seq != state.last_seq:
        raise SeqConflictError(
            f"session {sid!r} is at seq {state.last_seq}, not the expected {unit.expected_seq}",
            hint="re-read the log and retry",
            expected=unit.expected_seq,
            actual=state.last_seq,
        )
    seq = state.last_seq
    events: list[Event] = []
    new_events: list[Event] = []
    for event, stored in zip(unit.events, state.stored, strict=True):
        if stored is not None:
            events.append(stored)
            continue
        seq += 1
        event = evolve(event, seq=seq)
        events.append(event)
        new_events.append(event)
    final_session = unit.new_session or unit.session or state.session
    return UnitPlan(
        events=tuple(events),
        new_events=tuple(new_events),
        session=final_session,
        create_session=unit.new_session is not None,
        runs=tuple(runs),
        create_runs=frozenset(w.run.id for w in unit.new_runs),
        last_seq=seq,
    )
