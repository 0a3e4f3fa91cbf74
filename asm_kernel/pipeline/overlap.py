"""The run's start stored behind the provider call (``[runtime] overlap_start``, on by default).

A run's start unit (run ``running``, ``run_started``, ``message_sent``, ``routing_decided``) is
one store transaction; on DuckDB it costs a few milliseconds, about what a local model call
costs. With ``overlap_start`` the ``start`` stage submits the unit and returns at once: the
context is cut and the request sent while the store commits. The rules that keep this safe:

* **Nothing is stored or shown before the start is durable.** Every later write of the run
  waits for it (:attr:`RunWriter.barrier`): the first stream delta, a compaction, the outcome.
  The caller's stream gets ``run_started`` first, as always, once it is committed.
* **The context is the one a serial start would see.** The start unit is conditional on the
  log's last seq being the one the run's transcript was read at (``expected_seq``), and the
  transcript is fed the start's own events at the seqs they will get. If anything else reached
  the session's log meanwhile (another run, an append), the start stores nothing, the request
  already sent is abandoned before any of its output is kept, and the run starts again from
  ``prepare``, this time waiting for its start (logged at info as ``start raced``).
* **A start that fails fails the run as a serial start would**: a run that is no longer pending
  is not this worker's (``StateError``, no terminal unit); a store that refuses the write fails
  the run. The provider call already sent is abandoned: its tokens, if the provider billed any
  before the connection closed, are not in asm's usage or cost.

What a crash (``kill -9``) in the window leaves: the start had not committed, so the run is as it
was submitted (``pending``; recovery runs it again, which calls the provider again) or, for
``run_once``, nothing at all; the provider call made in the window is not recorded anywhere.
``overlap_start = false`` makes every run wait for its start before anything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import evolve

from ..errors import AlreadyExistsError, SeqConflictError, StateError, WriteConflictError
from ..model import Run
from ..writes import Committed, WriteUnit

if TYPE_CHECKING:
    from ..context.transcript import TranscriptBuilder
    from .state import RunState

__all__ = ["StartRaced", "can_overlap", "launch", "raced", "settle", "provisional_builder", "not_pending", "carried"]

#: What the start stage does once its unit is committed (the run is then ``running`` here).
Finished = Callable[["RunState", Committed], None]

log = logging.getLogger("asm.pipeline")


class StartRaced(StateError):
    """The session's log changed while the run's start was being stored: start again, serially."""

    code = "state.start_raced"


def can_overlap(state: RunState) -> bool:
    """Whether this start may be stored behind the provider call."""
    return (
        state.kernel.config.runtime.overlap_start
        and not state.serial_start
        and (state.builder is not None or state.creates_session is not None)
        and not state.resumed
        # Another run of the session in this process would make the start race (and waste the
        # call it overlaps): it waits instead.
        and state.manager.executing[state.session.id] <= 1
    )


def launch(state: RunState, unit: WriteUnit, running: Run, finished: Finished) -> None:
    """Submit the start unit without waiting for it; later writes wait (see the module doc).

    ``running`` is the record the unit stores: the stages see it meanwhile (its ``started_at``
    bounds a budget's ``max_duration``); a start that fails puts back the record as it was.
    """
    builder = state.builder
    if builder is None:  # a session this run creates: its transcript starts empty
        builder = state.builder = state.manager.seed_transcript(unit.session_id)
    if unit.new_session is None:
        unit = evolve(unit, expected_seq=builder.last_seq)
    # The seqs the start's events get when nothing else is written to the session meanwhile
    # (the unit is conditional on that): the context stage cuts its window from them.
    first = builder.last_seq + 1
    provisional = [evolve(e, seq=first + i) for i, e in enumerate(unit.events)]
    state.manager.feed_transcript(unit.session_id, builder, provisional)
    before, state.run = state.run, running
    task = asyncio.ensure_future(_store(state, unit, before, [e.seq for e in provisional], finished))
    state.starting = task

    async def barrier() -> None:
        # Shielded: a caller cancelled while waiting must not cancel the start itself.
        await asyncio.shield(task)

    state.writer.barrier = barrier


async def _store(state: RunState, unit: WriteUnit, before: Run, seqs: list[int], finished: Finished) -> None:
    sid = unit.session_id
    try:
        committed: Committed = await state.writer.commit_start(unit)
    except BaseException as exc:
        state.manager.forget_transcript(sid)
        state.run = carried(before, state.run)
        translated = _as_serial(exc, sid, before.id)
        if translated is None:
            raise
        raise translated from None
    if [e.seq for e in committed.events] != seqs:  # a store that numbers differently: re-read
        state.manager.forget_transcript(sid)
    state.writer.barrier = None
    finished(state, committed)


def carried(record: Run, current: Run) -> Run:
    """``record`` with what the stages added to the run meanwhile (usage, cost, the target that
    answered): an overlapped start settles after the call began."""
    return evolve(record, usage=current.usage, cost=current.cost, model=current.model, provider=current.provider)


def _as_serial(exc: BaseException, sid: str, run_id: str) -> StateError | None:
    """The error a serial start raises for ``exc`` (a race: start again), or None to keep it."""
    if isinstance(exc, SeqConflictError | AlreadyExistsError) or (
        isinstance(exc, WriteConflictError) and exc.details.get("record") == "session"
    ):
        return StartRaced(
            f"session {sid} changed while run {run_id} was starting ({exc.code}); the run starts again",
            run_id=run_id,
        )
    if isinstance(exc, WriteConflictError):
        return not_pending(run_id, exc)
    return None


def not_pending(run_id: str, exc: WriteConflictError) -> StateError:
    """The error of a start whose run another writer moved on (not this worker's to close)."""
    return StateError(
        f"run {run_id} is no longer pending ({exc.details.get('actual', '?')}); only a pending run can be executed",
        hint="another worker or a cancel got to it first",
    )


async def _ended(state: RunState) -> BaseException | None:
    """Wait for an overlapped start to end; what it failed with (None: stored, or none)."""
    task = state.starting
    if task is None:
        return None
    if not task.done():
        await asyncio.wait([task])
    return None if task.cancelled() else task.exception()


async def raced(state: RunState) -> bool:
    """Whether the run's overlapped start raced another write (waiting for it to end first)."""
    return isinstance(await _ended(state), StartRaced)


async def settle(state: RunState) -> None:
    """Wait for an in-flight start to end, whatever its outcome (before the terminal unit)."""
    if state.starting is None:
        return
    error = await _ended(state)
    if error is not None:
        # What the stages deferred describes an attempt whose start is not in the log (the
        # context of a request that was abandoned): it is not stored.
        dropped = state.writer.take_deferred()
        log.warning(
            "run %s: its start was not stored (%s); the provider request already sent was abandoned%s",
            state.run.id,
            getattr(error, "code", type(error).__name__),
            f", {len(dropped)} deferred event(s) dropped" if dropped else "",
        )
    state.writer.barrier = None  # the terminal unit is written whatever became of the start


def provisional_builder(state: RunState) -> TranscriptBuilder | None:
    """The transcript with the in-flight start's events, or None once the start is settled.

    Raises the start's error if it failed (a raced start makes the run start again).
    """
    task = state.starting
    if task is None:
        return None
    if not task.done():
        return state.builder
    task.result()
    return None
