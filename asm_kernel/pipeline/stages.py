"""The run pipeline: named async stages, in order, that plugins add to and wrap.

A run goes through the **run stages** once::

    prepare -> start -> preflight -> turns -> settle

and ``turns`` goes through the **turn stages** once per model call, up to ``max_turns``::

    context -> call -> tools

* ``prepare`` reads the transcript and plans the route (capability negotiation, router, hooks);
* ``start`` makes the run's start durable in one unit (run ``running`` with its lease,
  ``run_started``, ``message_sent``, ``routing_decided``; the session's activation);
* ``preflight`` asks every policy whether the run may go ahead;
* ``context`` sets the messages the next call sends: the window of the transcript (turn groups
  that fit ``[context]``, after a compaction when due);
* ``call`` is the resilient provider call (retries, failover, breakers); the response is
  stored with the next write;
* ``tools`` runs the kernel's tools the model called, or hands calls to the caller and ends;
* ``settle`` sets the outcome the terminal unit records.

The run's terminal unit (its final record with its terminal event) is written after the stages,
whatever happened in them: a stage that raises fails the run. A plugin implements
``asm_configure_pipeline(pipeline)`` and calls :meth:`Pipeline.add` (a new stage, placed
``before``/``after`` another) or :meth:`Pipeline.wrap` (code around a stage, which calls
``proceed()`` to run it — or does not, to skip it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from attrs import evolve

from ..errors import AlreadyExistsError, PluginError, StateError, ValidationError, WriteConflictError
from ..events import EventType
from ..model import Run, RunStatus, Session, SessionStatus
from ..routing import history_needs, plan_route
from ..serialization import to_dict
from ..shielding import through_cancel
from ..writes import Committed, RunWrite, WriteUnit
from .call import call_provider, model_for
from .overlap import Finished, can_overlap, carried, launch, not_pending
from .tools import tools_stage

if TYPE_CHECKING:
    from .state import RunState

__all__ = ["Pipeline", "Stage", "Wrapper", "RUN_STAGES", "TURN_STAGES"]

Stage = Callable[["RunState"], Awaitable[None]]
Proceed = Callable[[], Awaitable[None]]
Wrapper = Callable[["RunState", Proceed], Awaitable[None]]
Phase = Literal["run", "turn"]

RUN_STAGES = ("prepare", "start", "preflight", "turns", "settle")
TURN_STAGES = ("context", "call", "tools")


class Pipeline:
    """The stages of a run and their wrappers. The kernel builds one at start."""

    def __init__(self) -> None:
        self._stages: dict[Phase, list[tuple[str, Stage]]] = {
            "run": [
                ("prepare", prepare),
                ("start", start),
                ("preflight", preflight),
                ("turns", self._turns),
                ("settle", settle),
            ],
            "turn": [("context", context), ("call", call), ("tools", tools_stage)],
        }
        self._wrappers: dict[str, list[Wrapper]] = {}
        self._owners: dict[str, str] = {name: "asm" for name in (*RUN_STAGES, *TURN_STAGES)}

    def __repr__(self) -> str:
        return f"Pipeline(run={self.names('run')}, turn={self.names('turn')})"

    def names(self, phase: Phase = "run") -> list[str]:
        return [name for name, _ in self._stages[phase]]

    def _phase_of(self, name: str) -> Phase | None:
        for phase, stages in self._stages.items():
            if any(n == name for n, _ in stages):
                return phase
        return None

    def add(
        self,
        name: str,
        stage: Stage,
        *,
        before: str | None = None,
        after: str | None = None,
        owner: str = "plugin",
    ) -> None:
        """Insert ``stage`` as ``name``, right ``before`` or ``after`` an existing stage.

        The phase (run or turn) is that of the anchor: ``after="call"`` adds a turn stage.
        """
        if not isinstance(name, str) or not name:
            raise ValidationError("a stage needs a non-empty name", path="name")
        if not callable(stage):
            raise ValidationError(f"stage {name!r} is not callable", path="stage")
        if self._phase_of(name) is not None:
            raise PluginError(
                f"a stage named {name!r} already exists (added by {self._owners.get(name)})",
                hint="choose another name, or wrap the existing stage",
            )
        if (before is None) == (after is None):
            raise ValidationError(f"add stage {name!r} with exactly one of before= or after=", path="before")
        anchor = before if before is not None else after
        assert anchor is not None
        phase = self._phase_of(anchor)
        if phase is None:
            raise ValidationError(
                f"no stage named {anchor!r} to put {name!r} next to",
                path="before" if before is not None else "after",
                hint=f"stages: {', '.join(self.names('run') + self.names('turn'))}",
            )
        stages = self._stages[phase]
        index = next(i for i, (n, _) in enumerate(stages) if n == anchor)
        stages.insert(index if before is not None else index + 1, (name, stage))
        self._owners[name] = owner

    def wrap(self, name: str, wrapper: Wrapper) -> None:
        """Run ``wrapper(state, proceed)`` around stage ``name``; the first wrapper added is outermost."""
        if self._phase_of(name) is None:
            raise ValidationError(
                f"no stage named {name!r} to wrap",
                path="name",
                hint=f"stages: {', '.join(self.names('run') + self.names('turn'))}",
            )
        if not callable(wrapper):
            raise ValidationError("a stage wrapper must be callable", path="wrapper")
        self._wrappers.setdefault(name, []).append(wrapper)

    async def run(self, state: RunState, phase: Phase = "run") -> None:
        """Run every stage of ``phase`` in order (the turn phase once)."""
        for name, stage in list(self._stages[phase]):
            await self._call(name, stage, state)

    async def _call(self, name: str, stage: Stage, state: RunState) -> None:
        wrappers = self._wrappers.get(name)
        if not wrappers:
            await stage(state)
            return

        async def innermost() -> None:
            await stage(state)

        call: Proceed = innermost
        for wrapper in reversed(wrappers):
            call = _bind(wrapper, state, call)
        await call()

    async def _turns(self, state: RunState) -> None:
        for turn in range(state.max_turns):
            state.turn = turn
            await self.run(state, "turn")
            if state.done:
                return
        state.stop_reason = "max_turns"  # the model never answered the last tool results


def _bind(wrapper: Wrapper, state: RunState, proceed: Proceed) -> Proceed:
    async def call() -> None:
        await wrapper(state, proceed)

    return call


# -- the builtin stages -------------------------------------------------------------------------


async def prepare(state: RunState) -> None:
    """Read the transcript, negotiate capabilities and order the candidate providers."""
    manager = state.manager
    assert state.run.input is not None
    needs = history_needs([state.run.input])
    last_provider = None
    if state.creates_session is None:  # a session made by this run has no history yet
        state.builder = await manager.transcript_builder(state.session.id)
        needs |= manager.transcript_needs(state.session.id)
        last_provider = await manager.last_provider(state.session.id)
    state.plan = await plan_route(state.kernel, state.session, state.run, state.options, needs, last_provider)
    kernel_tools = tuple(t.spec for t in state.kernel.tools.values())
    state.tool_specs = kernel_tools + state.options.tools
    first = state.plan.candidates[0]
    # The record names the planned target from the start, so a run cancelled or timed out before
    # any answer still shows which provider and model it was going to use.
    state.run = evolve(state.run, provider=first, model=model_for(state, first))


async def start(state: RunState) -> None:
    """The start unit: the run is ``running`` under this worker's lease, durably, with its events."""
    manager = state.manager
    ttl = state.kernel.config.runtime.lease_ttl
    for _attempt in range(3):
        session = state.session
        run = state.run
        if session.status.terminal or session.status is SessionStatus.PAUSED:
            raise StateError(
                f"session {session.id} is {session.status.value}; runs need an active session",
                hint="resume the session first" if session.status is SessionStatus.PAUSED else "start a new session",
            )
        running = run.transition(
            RunStatus.RUNNING,
            owner=state.kernel.worker_id,
            lease_token=run.lease_token + 1,
            lease_expires_at=None,
        )
        events = [state.creates_session] if state.creates_session is not None else []
        activated = None
        if session.status is SessionStatus.PENDING:
            activated = session.transition(SessionStatus.ACTIVE)
            events.append(state.event(EventType.SESSION_ACTIVATED, {"from": session.status.value}))
        assert state.plan is not None and run.input is not None
        events += [
            state.event(
                EventType.RUN_STARTED,
                {
                    "provider": running.provider,
                    "model": running.model,
                    "input": to_dict(run.input),
                    "requested_provider": state.requested_provider,
                    "owner": running.owner,
                    **({"resumed": True} if state.resumed else {}),
                },
            ),
            state.event(EventType.MESSAGE_SENT, {"message": to_dict(run.input)}),
            state.event(EventType.ROUTING_DECIDED, state.plan.to_dict()),
        ]
        if state.resumed:  # a continued run's input is in the log already (asm_kernel.resume)
            events = [e for e in events if e.type != EventType.MESSAGE_SENT]
        if state.stored:
            write = RunWrite(running, expect_status=RunStatus.PENDING, expect_token=run.lease_token, lease_ttl=ttl)
            unit = WriteUnit(session.id, events, session=activated, session_status=[session.status], runs=[write])
        elif state.creates_session is not None:  # session and run are both made by this unit
            unit = WriteUnit(session.id, events, new_session=activated, new_runs=[RunWrite(running, lease_ttl=ttl)])
        else:  # created here, running already: one transaction for the whole start
            unit = WriteUnit(
                session.id,
                events,
                session=activated,
                session_status=[session.status],
                new_runs=[RunWrite(running, lease_ttl=ttl)],
            )
        if can_overlap(state):  # stored behind the provider call (asm_kernel.pipeline.overlap)
            launch(state, unit, running, _finished(run, session, activated))
            # One turn of the loop: the unit reaches the store now, not at the call's first wait.
            await asyncio.sleep(0)
            return
        cancelled: asyncio.CancelledError | None = None
        try:
            committed, cancelled = await through_cancel(state.writer.unit(unit, with_deferred=False))
        except AlreadyExistsError:
            if state.creates_session is None:
                raise
            # Another writer made a session with this id meanwhile: run in that one.
            state.creates_session = None
            state.session = await manager.get(session.id)
            continue
        except WriteConflictError as exc:
            if exc.details.get("record") != "session":
                raise not_pending(run.id, exc) from None
            state.session = await manager.get(session.id)  # the session changed: look again
            continue
        _finished(run, session, activated)(state, committed)
        if cancelled is not None:
            raise cancelled  # now the run is known to be started: its terminal unit ends it
        return
    raise StateError(f"session {state.session.id} kept changing while run {state.run.id} tried to start")


def _finished(run: Run, session: Session, activated: Session | None) -> Finished:
    """What follows a committed start unit: the run is ``running`` here, under its lease."""

    def finished(state: RunState, committed: Committed) -> None:
        manager = state.manager
        state.run = carried(committed.run(run.id), state.run)
        state.stored = True
        state.writer.fence = state.run.lease
        state.kernel.leases.hold(state.run, state.on_lease_lost)
        if state.creates_session is not None:
            state.creates_session = None
            manager.notify(
                "asm_session_transition",
                session,
                None,
                session=session,
                old_status=None,
                new_status=SessionStatus.PENDING,
            )
        if committed.session is not None and activated is not None:
            state.session = committed.session
            manager.notify(
                "asm_session_transition",
                state.session,
                None,
                session=state.session,
                old_status=SessionStatus.PENDING,
                new_status=SessionStatus.ACTIVE,
            )
        state.notify("asm_run_started", session=state.session, run=state.run)

    return finished


async def preflight(state: RunState) -> None:
    """Every policy's ``check_run``; one that raises a PolicyError stops the run."""
    policies = state.kernel.policies
    if not policies:
        return
    history = (await state.transcript_builder()).messages()
    for policy in policies:
        await policy.check_run(session=state.session, run=state.run, history=history)


async def context(state: RunState) -> None:
    """The messages the next call sends: the window of the transcript (see :mod:`asm_kernel.context`)."""
    from ..context.stage import context_stage

    await context_stage(state)


async def call(state: RunState) -> None:
    """The resilient provider call, then every policy's ``check_usage``."""
    state.response = await call_provider(state)
    for policy in state.kernel.policies:
        await policy.check_usage(session=state.session, run=state.run)


async def settle(state: RunState) -> None:
    """The outcome the terminal unit records (``run_completed``'s payload)."""
    message = state.last_message
    state.data["asm.outcome"] = {
        "output": message.text if message else "",
        "stop_reason": state.stop_reason,
        "usage": to_dict(state.usage),
        "cost": state.run_cost,
        "provider": state.provider_name,
        "pending_tool_calls": [c.id for c in state.pending],
    }
