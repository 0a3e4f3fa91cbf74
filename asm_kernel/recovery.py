"""Crash recovery and repair: runs whose owner is gone, and records that disagree with the log.

**Recovery** (``kernel.runtime.start()``, then every ``runtime.lease_ttl`` seconds) looks for
runs left ``running`` whose lease expired by the store's clock — their worker stopped renewing
it, so it is dead — and closes each in one unit that also takes its lease over (a new fencing
token, on the condition that the old one is still current and expired): ``error_occurred`` and
``run_failed`` with reason ``crashed`` or, with ``runtime.recovery = "requeue"``, the same plus a
new pending run with the same input. A live run of another process is never touched (its lease
is renewed), nor one this process executes. If the log already ends the run (the outcome was
stored but not the record — data written by older versions), the record is repaired from the log
instead of a second terminal event being added.

**Repair** (``kernel.runtime.repair()``) checks every run: a terminal record with no terminal
event gets the event its record describes; a record that is not terminal although the log ends
the run takes the status the log gives. :func:`repair_unit` is the pure decision, so a store's
own migration can apply it to data it upgrades.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen

from .errors import RunCrashedError, WriteConflictError
from .events import SCHEMA_VERSION, EventType
from .model import Event, Run, RunStatus
from .options import OPTIONS_KEY
from .serialization import to_dict
from .writes import RunWrite, WriteUnit

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["RecoveryReport", "RepairReport", "recover_expired", "repair_unit", "repair_all", "TERMINAL_TYPES"]

log = logging.getLogger("asm.recovery")

RECOVERY_ATTEMPT_KEY = "asm.recovery_attempt"
RECOVERY_OF_KEY = "asm.recovery_of"
_PAGE = 500

_STATUS_OF = {
    EventType.RUN_COMPLETED: RunStatus.COMPLETED,
    EventType.RUN_FAILED: RunStatus.FAILED,
    EventType.RUN_CANCELLED: RunStatus.CANCELLED,
    EventType.RUN_TIMED_OUT: RunStatus.TIMED_OUT,
}
_EVENT_OF = {status: kind for kind, status in _STATUS_OF.items()}
TERMINAL_TYPES: tuple[str, ...] = tuple(str(t) for t in _STATUS_OF)


@frozen
class RecoveryReport:
    """What recovery did: crashed runs closed, runs requeued, pending runs resumed, records repaired."""

    crashed: tuple[str, ...] = ()
    requeued: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()
    repaired: tuple[str, ...] = ()


@frozen
class RepairReport:
    checked: int = 0
    repaired: tuple[str, ...] = ()
    #: Runs whose log holds more than one terminal event: an append-only log cannot be mended.
    irreparable: tuple[str, ...] = ()


def _event(run: Run, type_: str, payload: dict[str, Any]) -> Event:
    return Event(session_id=run.session_id, type=type_, payload=payload, run_id=run.id, schema_version=SCHEMA_VERSION)


def _terminal_payload(run: Run) -> dict[str, Any]:
    """The terminal event a stored record implies (``repaired`` marks it as written afterwards)."""
    payload: dict[str, Any] = {"repaired": True}
    if run.status is RunStatus.COMPLETED:
        payload.update(
            output=run.output.text if run.output else "",
            stop_reason=run.stop_reason,
            usage=to_dict(run.usage),
            cost=run.cost,
            provider=run.provider,
            pending_tool_calls=[],
        )
    elif run.status is RunStatus.CANCELLED:
        payload["reason"] = (run.error or {}).get("message") or "cancelled"
    else:
        payload["error"] = run.error or {"code": "runtime.error", "message": "unknown (repaired)"}
    return payload


def repair_unit(run: Run, terminal_events: Sequence[Event]) -> WriteUnit | None:
    """The unit that makes ``run``'s record and its log agree, or None when they already do.

    ``terminal_events`` are the run's terminal events in the log (``read(..., run_id=run.id,
    types=TERMINAL_TYPES)``). More than one cannot be mended (the log is append-only): None.
    """
    if len(terminal_events) > 1:
        return None
    if run.status.terminal:
        if terminal_events:
            return None
        event = _event(run, _EVENT_OF[run.status], _terminal_payload(run))
        return WriteUnit(run.session_id, [event], runs=[RunWrite(run, expect_status=run.status)])
    if not terminal_events:
        return None
    event = terminal_events[0]
    status = _STATUS_OF[EventType(event.type)]
    changes: dict[str, Any] = {"lease_expires_at": None}
    if isinstance(event.payload.get("error"), dict):
        changes["error"] = event.payload["error"]
    if run.status is RunStatus.PENDING and status is RunStatus.COMPLETED:
        run = run.transition(RunStatus.RUNNING)
    fixed = run.transition(status, **changes)
    return WriteUnit(run.session_id, runs=[RunWrite(fixed, expect_status=run.status, expect_token=run.lease_token)])


async def _all_runs(kernel: Kernel, **filters: Any) -> list[Run]:
    found: list[Run] = []
    while True:
        page = await kernel.store.list_runs(**filters, limit=_PAGE, offset=len(found))
        found.extend(page)
        if len(page) < _PAGE:
            return found


async def recover_expired(kernel: Kernel) -> RecoveryReport:
    """Close (or requeue) every running run whose lease expired and that this process does not hold."""
    crashed: list[str] = []
    requeued: list[str] = []
    repaired: list[str] = []
    held = {f.run_id for f in kernel.leases.held()}
    for run in await _all_runs(kernel, status=RunStatus.RUNNING, lease_expired=True):
        if run.id in held:
            continue  # this process is executing it: alive, whatever the clock says
        ends = await kernel.store.read(run.session_id, run_id=run.id, types=TERMINAL_TYPES)
        if ends:
            unit = repair_unit(run, ends)
            if unit is not None and await _commit(kernel, unit, run):
                repaired.append(run.id)
            continue
        unit, again = _crash_unit(kernel, run)
        if await _commit(kernel, unit, run):
            crashed.append(run.id)
            if again is not None:
                requeued.append(again.id)
            final = unit.runs[0].run
            from .pipeline.driver import result_of

            session = await kernel.sessions.get(run.session_id)
            kernel.sessions.notify(
                "asm_run_finished", session, final, session=session, run=final, result=result_of(final)
            )
    if crashed or repaired:
        log.warning(
            "recovered %d crashed run(s) (%d requeued), repaired %d", len(crashed), len(requeued), len(repaired)
        )
    return RecoveryReport(tuple(crashed), tuple(requeued), (), tuple(repaired))


def _crash_unit(kernel: Kernel, run: Run) -> tuple[WriteUnit, Run | None]:
    settings = kernel.config.runtime
    error = RunCrashedError(
        f"run {run.id} was left running by {run.owner or 'a process'}, which stopped renewing its lease",
        hint="it was closed by recovery; runtime.recovery = 'requeue' runs such runs again",
        reason="crashed",
        owner=run.owner,
    )
    error_dict = error.to_dict()
    final = run.transition(
        RunStatus.FAILED,
        error=error_dict,
        owner=kernel.worker_id,
        lease_token=run.lease_token + 1,
        lease_expires_at=None,
    )
    events = [
        kernel.sessions.make_event(
            run.session_id, EventType.ERROR_OCCURRED, {"error": error_dict, "during": "recovery"}, run.id
        ),
        kernel.sessions.make_event(
            run.session_id, EventType.RUN_FAILED, {"error": error_dict, "reason": "crashed"}, run.id
        ),
    ]
    takeover = RunWrite(final, expect_status=RunStatus.RUNNING, expect_token=run.lease_token, expect_lease_expired=True)
    again: Run | None = None
    attempt = int(run.metadata.get(RECOVERY_ATTEMPT_KEY, 0))
    if settings.recovery == "requeue" and attempt < settings.max_recovery_attempts:
        metadata = {k: v for k, v in run.metadata.items() if k in (OPTIONS_KEY,) or not k.startswith("asm.")}
        metadata.update({RECOVERY_ATTEMPT_KEY: attempt + 1, RECOVERY_OF_KEY: run.id})
        again = Run(session_id=run.session_id, input=run.input, metadata=metadata)
    unit = WriteUnit(run.session_id, events, runs=[takeover], new_runs=[again] if again is not None else ())
    return unit, again


async def _commit(kernel: Kernel, unit: WriteUnit, run: Run) -> bool:
    try:
        await kernel.sessions.commit(unit)
    except WriteConflictError as exc:  # another worker recovered it, or its owner renewed in time
        log.info("run %s: left alone by recovery (%s)", run.id, exc.message)
        return False
    return True


async def repair_all(kernel: Kernel) -> RepairReport:
    """Check every run's record against its log and mend what disagrees (see the module docstring)."""
    repaired: list[str] = []
    irreparable: list[str] = []
    runs = await _all_runs(kernel)
    for run in runs:
        if run.status is RunStatus.RUNNING:
            continue  # a running run is recovery's, once its lease expires
        ends = await kernel.store.read(run.session_id, run_id=run.id, types=TERMINAL_TYPES)
        if len(ends) > 1:
            irreparable.append(run.id)
            continue
        unit = repair_unit(run, ends)
        if unit is not None and await _commit(kernel, unit, run):
            repaired.append(run.id)
    return RepairReport(len(runs), tuple(repaired), tuple(irreparable))
