"""Driving one run through the pipeline to exactly one terminal unit.

Whatever happens in the stages — an answer, an error, the run's timeout, a cancel, Ctrl-C —
the run ends with one atomic terminal unit: its final record and its terminal event
(``run_completed``; ``error_occurred`` + ``run_failed``; ``error_occurred`` + ``run_timed_out``;
``run_cancelled``), together with whatever the stages deferred. The unit is conditional on the
run's status and lease token, so a second writer (a racing cancel, a worker that took the run
over) can never add a second terminal event. The write is shielded from further cancels and
retried on transient store errors; if the store stays down, the unit is kept and retried in the
background (:class:`Closer`) so a live process never leaves its own run ``running``.

A run whose lease was taken over by another worker is not closed here: it is that worker's now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import evolve

from ..approvals import APPROVALS_KEY, REQUESTED_KEY, RESUME_KEY, ApprovalRequired, approvals_of, pause_unit
from ..errors import (
    AsmError,
    AsmRuntimeError,
    LeaseLostError,
    RunTimeoutError,
    StateError,
    StorageError,
    ValidationError,
    WriteConflictError,
)
from ..events import EventType
from ..model import Event, Run, RunResult, RunStatus, Session, ToolUseBlock
from ..options import RunOptions
from ..secrets import redact
from ..shielding import finish
from ..writes import RunWrite, WriteUnit
from .overlap import raced, settle
from .state import LEASE_LOST, RunState
from .writer import RunWriter

if TYPE_CHECKING:
    from ..sessions import SessionManager

__all__ = ["TERMINAL_EVENT", "HANDED_BACK_KEY", "result_of", "drive", "Closer"]

log = logging.getLogger("asm.pipeline")

#: Run metadata key of a run queued again by a stopping worker: the id of the run it replaces.
HANDED_BACK_KEY = "asm.handed_back_from"
#: Run metadata a handed-back run does not inherit: it is a new run, not a continuation.
_CONTINUATION_KEYS = frozenset({APPROVALS_KEY, RESUME_KEY, REQUESTED_KEY})

TERMINAL_EVENT = {
    RunStatus.COMPLETED: EventType.RUN_COMPLETED,
    RunStatus.FAILED: EventType.RUN_FAILED,
    RunStatus.CANCELLED: EventType.RUN_CANCELLED,
    RunStatus.TIMED_OUT: EventType.RUN_TIMED_OUT,
}


def result_of(run: Run, pending: tuple[ToolUseBlock, ...] = ()) -> RunResult:
    """The RunResult a stored run record describes."""
    if not pending and run.output is not None and run.stop_reason == "tool_use":
        pending = run.output.tool_uses
    approvals: tuple[Any, ...] = ()
    if run.status is RunStatus.AWAITING_APPROVAL:
        approvals = tuple(r for r in approvals_of(run) if r.status == "requested")
    return RunResult(
        session_id=run.session_id,
        run_id=run.id,
        status=run.status,
        output=run.output.text if run.output else "",
        message=run.output,
        usage=run.usage,
        cost=run.cost,
        provider=run.provider,
        model=run.model,
        stop_reason=run.stop_reason,
        error=run.error,
        pending_tool_calls=pending,
        approvals=approvals,
    )


async def drive(
    manager: SessionManager,
    session: Session,
    run: Run,
    options: RunOptions,
    *,
    stored: bool,
    listener: Callable[[Event], None] | None = None,
    creates_session: Event | None = None,
) -> tuple[RunResult, AsmError | None]:
    """Run ``run`` through the pipeline; returns its result and the error it failed with.

    Raises (after the terminal unit is durable) the CancelledError, KeyboardInterrupt or
    SystemExit that interrupted it; raises without a terminal unit when the run is not this
    worker's to close (``StateError`` before it started, ``LeaseLostError``).
    """
    manager.executing[session.id] += 1
    try:
        return await _drive(manager, session, run, options, stored=stored, listener=listener,
                            creates_session=creates_session)  # fmt: skip
    finally:
        manager.executing[session.id] -= 1
        if manager.executing[session.id] <= 0:
            del manager.executing[session.id]


async def _drive(
    manager: SessionManager,
    session: Session,
    run: Run,
    options: RunOptions,
    *,
    stored: bool,
    listener: Callable[[Event], None] | None,
    creates_session: Event | None,
) -> tuple[RunResult, AsmError | None]:
    state = _new_state(manager, session, run, options, stored, creates_session, listener)
    state.task = asyncio.current_task()
    status = RunStatus.COMPLETED
    error: AsmError | None = None
    extra: dict[str, Any] = {}
    interrupt: BaseException | None = None
    try:
        try:
            async with asyncio.timeout(options.timeout) as scope:
                try:
                    await manager.kernel.pipeline.run(state)
                except Exception:
                    # A start that raced makes the attempt void, whatever else went wrong in it
                    # (nothing of it was stored or shown): start again, serially.
                    if not await raced(state):
                        raise
                    log.info("run %s: its start raced another write to the session; starting again", run.id)
                    state = _again(state, run, session, creates_session, listener)
                    await manager.kernel.pipeline.run(state)
        except TimeoutError:
            if not scope.expired():
                raise
            status = RunStatus.TIMED_OUT
            error = RunTimeoutError(
                f"run {run.id} exceeded its timeout of {options.timeout:g} s", timeout=options.timeout
            )
            extra = {"timeout": options.timeout}
    except asyncio.CancelledError as exc:
        if state.lease_lost or (exc.args and exc.args[0] == LEASE_LOST):
            raise _lost(state) from None
        status = RunStatus.CANCELLED
        extra = {"reason": exc.args[0] if exc.args and isinstance(exc.args[0], str) else "cancelled"}
        interrupt = exc
    except (KeyboardInterrupt, SystemExit) as exc:
        status = RunStatus.CANCELLED
        extra = {"reason": "interrupted"}
        interrupt = exc
    except ApprovalRequired as exc:
        # Not an end: the run waits for a person, stored, its lease released (asm_kernel.approvals).
        status = RunStatus.AWAITING_APPROVAL
        extra = {"approvals": exc.requests}
    except LeaseLostError:
        manager.kernel.leases.release(state.run.id)
        raise
    except StateError as exc:
        if state.writer.fence is None:  # it never started here: not ours to close
            raise
        status, error = RunStatus.FAILED, exc
    except Exception as exc:
        status = RunStatus.FAILED
        error = (
            exc
            if isinstance(exc, AsmError)
            else AsmRuntimeError(
                f"run failed with an unexpected {type(exc).__name__}: {exc}", hint="see the run's error_occurred event"
            )
        )
    if error is not None:
        error.scrub()
    result = await _shielded(state, status, error, extra)
    if interrupt is not None:
        raise interrupt
    return result, error


def _new_state(
    manager: SessionManager,
    session: Session,
    run: Run,
    options: RunOptions,
    stored: bool,
    creates_session: Event | None,
    listener: Callable[[Event], None] | None,
) -> RunState:
    state = RunState(manager, session, run, options, RunWriter(manager, session.id, listener), stored=stored)
    state.creates_session = creates_session
    return state


def _again(
    state: RunState, run: Run, session: Session, creates_session: Event | None, listener: Callable[[Event], None] | None
) -> RunState:
    """A fresh state for a run whose overlapped start raced; its start is awaited this time."""
    again = _new_state(state.manager, session, run, state.options, state.stored, creates_session, listener)
    again.task = state.task
    again.serial_start = True
    return again


def _lost(state: RunState) -> LeaseLostError:
    state.kernel.leases.release(state.run.id)
    return LeaseLostError(
        f"run {state.run.id} was taken over by another worker (its lease expired); this worker stopped it",
        hint="the run's events and outcome are the new owner's",
        run_id=state.run.id,
    )


async def _shielded(state: RunState, status: RunStatus, error: AsmError | None, extra: dict[str, Any]) -> RunResult:
    """Write the terminal unit to the end, even if cancelled again meanwhile."""
    task = asyncio.ensure_future(_terminal(state, status, error, extra))
    await finish(task)  # a second cancel during clean-up: the terminal write finishes anyway
    return task.result()


def terminal_unit(
    state: RunState, status: RunStatus, error: AsmError | None, extra: dict[str, Any]
) -> tuple[Run, WriteUnit]:
    """The final record of the run and the unit that stores it with its terminal event."""
    run = state.run
    if status is RunStatus.AWAITING_APPROVAL:
        return pause_unit(state, extra["approvals"])
    error_dict = redact(error.to_dict()) if error is not None else None
    final = run.transition(
        status,
        output=state.last_message,
        usage=state.usage,
        cost=state.run_cost,
        model=state.model or run.model,
        provider=state.provider_name or run.provider,
        stop_reason=state.stop_reason,
        error=error_dict,
        lease_expires_at=None,
    )
    payload: dict[str, Any] = dict(extra)
    if status is RunStatus.COMPLETED:
        payload.update(state.data.get("asm.outcome") or {})
    elif error_dict is not None:
        payload["error"] = error_dict
    events = []
    if error_dict is not None:
        events.append(state.event(EventType.ERROR_OCCURRED, {"error": error_dict, "during": "run"}))
    events.append(state.event(TERMINAL_EVENT[status], payload))
    if state.stored:
        write = RunWrite(final, expect_status=run.status, expect_token=run.lease_token)
        again: list[Run] = []
        if status is RunStatus.CANCELLED and run.id in state.manager.hand_back:
            # A stopping worker hands the run back: another worker runs the same input again.
            again.append(
                Run(
                    session_id=run.session_id,
                    input=run.input,
                    provider=state.requested_provider,
                    model=run.model if state.requested_provider else None,
                    metadata={
                        **{k: v for k, v in run.metadata.items() if k not in _CONTINUATION_KEYS},
                        HANDED_BACK_KEY: run.id,
                    },
                )
            )
        return final, WriteUnit(run.session_id, events, runs=[write], new_runs=again)
    if state.creates_session is not None:  # it ended before the start unit made its session
        return final, WriteUnit(
            run.session_id, [state.creates_session, *events], new_session=state.session, new_runs=[final]
        )
    return final, WriteUnit(run.session_id, events, new_runs=[final])


async def _terminal(state: RunState, status: RunStatus, error: AsmError | None, extra: dict[str, Any]) -> RunResult:
    manager = state.manager
    await settle(state)  # a start stored behind the call decides what the terminal unit updates
    final, unit = terminal_unit(state, status, error, extra)
    try:
        try:
            committed = await state.writer.unit(unit)
        except ValidationError as exc:
            # Something a stage deferred cannot be stored: the outcome must be, without it.
            dropped = state.writer.take_deferred()
            log.error("run %s: %d deferred event(s) could not be stored: %s", state.run.id, len(dropped), exc)
            committed = await state.writer.unit(unit, with_deferred=False)
    except (LeaseLostError, WriteConflictError):
        raise _lost(state) from None
    except StorageError as exc:
        # The store is down: keep the unit and close the run as soon as it is back.
        manager.closer.keep(state.run.id, unit, state.writer.take_deferred())
        raise StorageError(
            f"run {state.run.id} ended {status.value} but its outcome could not be stored yet: {exc.message}",
            hint="asm keeps retrying in the background while this process runs; "
            "if it stops first, recovery closes the run when its lease expires",
            retryable=True,
            run_id=state.run.id,
        ) from None
    manager.kernel.leases.release(state.run.id)
    manager.hand_back.discard(state.run.id)
    if state.creates_session is not None and committed.session is not None:
        state.creates_session = None
        state.session = committed.session
        manager.notify(
            "asm_session_transition",
            state.session,
            None,
            session=state.session,
            old_status=None,
            new_status=state.session.status,
        )
    stored = committed.run(final.id)
    state.run = stored
    result = result_of(stored, state.pending)
    if status is RunStatus.AWAITING_APPROVAL:
        state.notify("asm_run_awaiting_approval", session=state.session, run=stored, approvals=result.approvals)
        return result
    if error is not None and status is not RunStatus.CANCELLED:
        state.notify("asm_on_error", error=error, session=state.session, run=stored, during="run")
    state.notify("asm_run_finished", session=state.session, run=stored, result=result)
    return result


class Closer:
    """Terminal units the store refused for a while, retried in the background until stored.

    Nothing a live process decided about its own runs is lost while its store is briefly down:
    ``keep`` holds the unit (deferred events first), a task retries with backoff, and
    :meth:`flush` retries everything now (the kernel calls it when it closes).
    """

    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager
        self._units: dict[str, WriteUnit] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._units)

    def keep(self, run_id: str, unit: WriteUnit, deferred: list[Event]) -> None:
        self._units[run_id] = evolve(unit, events=(*deferred, *unit.events))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._retry(), name="asm-closer")

    async def _retry(self) -> None:
        delay = 0.5
        while self._units:
            await asyncio.sleep(delay)
            await self.flush()
            delay = min(delay * 2, 10.0)

    async def flush(self) -> int:
        """Try every kept unit once; returns how many are still waiting."""
        for run_id, unit in list(self._units.items()):
            try:
                await self._manager.commit(unit)
            except (LeaseLostError, WriteConflictError, ValidationError) as exc:
                log.warning("run %s: its kept outcome is obsolete (%s); dropping it", run_id, exc.code)
            except StorageError as exc:
                log.info("run %s: the store still refuses its outcome (%s)", run_id, exc)
                continue
            self._units.pop(run_id, None)
            self._manager.kernel.leases.release(run_id)
        return len(self._units)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._units:
            await self.flush()
