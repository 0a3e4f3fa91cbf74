"""Continuing a run that waited for approval, from its log and record.

A decided run is ``pending`` again with ``metadata["asm.resumes"]`` set. Whoever executes it runs
it through the same pipeline, with three wrappers the kernel installs on every pipeline (they are
part of the run lifecycle, not of a policy: a worker without the approval policy must still be
able to continue a run another process paused):

* ``prepare`` — restores what the run had: its usage and cost (from the record), the provider
  that answered it, the counts of model and tool calls (from its log), the approvals granted
  and denied; and finds the tool round it paused in, if it paused in one. A run that is *not*
  a continuation is refused while another run of its session waits for approval, since its
  messages would split the waiting run's tool calls from their results;
* ``turns`` — the run's ``max_turns`` counts the model calls it already made;
* ``call`` — the first turn of a run that paused in a tool round does not call the model again:
  the stored response is taken, and the ``tools`` stage runs the round (granted calls run,
  denied ones answer the model with an error result).

The ``start`` stage stores ``run_started`` (``resumed: true``) but not the input again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from attrs import evolve

from .approvals import REQUESTED_KEY, RESUME_KEY, approvals_of
from .errors import StateError
from .events import EventType
from .model import MessageDone, RunStatus
from .policy import APPROVED_KEY, count

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .pipeline.state import RunState

__all__ = ["install", "REPLAY_KEY", "DENIED_KEY", "REPLAYING_KEY"]

#: ``state.data``: the stored response whose tool round the run continues.
REPLAY_KEY = "asm.resume.replay"
#: ``state.data``: tool_use_id -> (who denied it, why), for calls a person (or a timeout) denied.
DENIED_KEY = "asm.resume.denied"
#: ``state.data``: set while the tools stage runs the round a resumed run paused in.
REPLAYING_KEY = "asm.resume.replaying"
_MADE_CALLS = "asm.resume.model_calls"

Proceed = Callable[[], Awaitable[None]]


def install(pipeline: Pipeline) -> None:
    """Add the continuation wrappers (outermost: installed before any plugin's)."""
    pipeline.wrap("prepare", _prepare)
    pipeline.wrap("turns", _turns)
    pipeline.wrap("call", _call)


async def _prepare(state: RunState, proceed: Proceed) -> None:
    run = state.run
    if state.stored and run.metadata.get(RESUME_KEY) and run.status is RunStatus.PENDING:
        await _restore(state)
    else:
        state.data[REQUESTED_KEY] = {"provider": run.provider, "model": run.model}
        if state.creates_session is None:
            waiting = await state.kernel.store.list_runs(
                session_id=state.session.id, status=RunStatus.AWAITING_APPROVAL, limit=1
            )
            if waiting:
                raise StateError(
                    f"session {state.session.id} has run {waiting[0].id} awaiting approval; "
                    "a new run would split its tool calls from their results",
                    hint=f"decide it first (asm approve {waiting[0].id}), or cancel it",
                    run_id=waiting[0].id,
                )
    await proceed()


async def _restore(state: RunState) -> None:
    run = state.run
    requested = run.metadata.get(REQUESTED_KEY) or {}
    state.resumed = True
    state.data[REQUESTED_KEY] = requested
    # Route as the caller asked, staying with the provider that answered the run so far.
    state.requested_provider = requested.get("provider")
    state.provider_name = run.provider
    state.model = run.model
    state.run = evolve(run, provider=requested.get("provider"), model=requested.get("model"))
    state.usage = run.usage
    state.cost = run.cost or 0.0
    state.cost_known = run.cost is not None
    state.last_message = run.output
    events = await state.kernel.store.read(
        run.session_id, run_id=run.id, types=[EventType.MESSAGE_RECEIVED, EventType.TOOL_CALL_COMPLETED]
    )
    received = [e for e in events if e.type == EventType.MESSAGE_RECEIVED]
    answered = {e.payload.get("tool_use_id") for e in events if e.type == EventType.TOOL_CALL_COMPLETED}
    count(state, model_calls=len(received), tool_calls=len(answered))
    state.data[_MADE_CALLS] = len(received)
    requests = approvals_of(run)
    state.data[APPROVED_KEY] = {r.key for r in requests if r.status == "granted"}
    state.data[DENIED_KEY] = {
        r.tool_use_id: (r.decided_by or "?", r.decision_reason)
        for r in requests
        if r.status == "denied" and r.tool_use_id is not None
    }
    if received:
        from .serialization import message_from_dict

        last = received[-1].payload
        message = message_from_dict(last["message"])
        if message.tool_uses and any(c.id not in answered for c in message.tool_uses):
            state.data[REPLAY_KEY] = MessageDone(message, last.get("stop_reason") or "tool_use", last.get("model"))


async def _turns(state: RunState, proceed: Proceed) -> None:
    if state.resumed:
        made = int(state.data.get(_MADE_CALLS, 0))
        replay = 1 if REPLAY_KEY in state.data else 0
        state.max_turns = max(1, state.max_turns - made + replay)
    await proceed()


async def _call(state: RunState, proceed: Proceed) -> None:
    replay: Any = state.data.pop(REPLAY_KEY, None)
    if replay is None:
        await proceed()
        return
    state.response = replay
    state.last_message = replay.message
    state.stop_reason = replay.stop_reason
    state.data[REPLAYING_KEY] = True
