"""The state of one executing run, handed to every pipeline stage.

A stage reads what earlier stages left (``state.messages``, ``state.plan``, ``state.response``),
changes what it owns, and records what it did as events through :meth:`RunState.emit` (stored
now, under the run's lease) or :meth:`RunState.defer` (stored with the next write: the next
emitted event or the run's terminal unit, whichever comes first — fewer transactions, same
order in the log). Plugins keep their own per-run data in :attr:`RunState.data` under their name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import evolve

from ..model import Event, Message, MessageDone, Run, Session, ToolSpec, ToolUseBlock, Usage
from ..options import RunOptions

if TYPE_CHECKING:
    from ..context.transcript import TranscriptBuilder
    from ..kernel import Kernel
    from ..routing import RoutePlan
    from ..sessions import SessionManager
    from .writer import RunWriter

__all__ = ["RunState", "LEASE_LOST"]

#: The cancel message of a run whose lease was taken over.
LEASE_LOST = "lease_lost"


class RunState:
    """Everything one run's stages share. See the module docstring."""

    def __init__(
        self,
        manager: SessionManager,
        session: Session,
        run: Run,
        options: RunOptions,
        writer: RunWriter,
        *,
        stored: bool,
    ) -> None:
        self.manager = manager
        self.kernel: Kernel = manager.kernel
        self.session = session
        self.run = run
        #: Resolved options: the run's own, with ``[run]`` defaults filled in.
        self.options = options
        self.writer = writer
        #: False while the run exists only in memory (``kernel.run`` creates it in its start unit).
        self.stored = stored
        #: The ``session_created`` event while the session too exists only in memory
        #: (``kernel.run_once`` creates it in the run's start unit).
        self.creates_session: Event | None = None
        self.max_turns: int = options.max_turns or 1
        self.turn = 0
        #: The conversation the next provider call sends (set by the ``context`` stage).
        self.messages: list[Message] = []
        #: Tool specs offered to the model: the kernel's tools, then the caller's.
        self.tool_specs: tuple[ToolSpec, ...] = ()
        self.plan: RoutePlan | None = None
        #: The last complete provider response (set by the ``call`` stage).
        self.response: MessageDone | None = None
        self.usage = Usage()
        #: US dollars; None once any billed response had no known price or no known usage.
        self.cost: float | None = 0.0
        self.cost_known = True
        self.output_started = False
        self.last_message: Message | None = None
        self.stop_reason: str | None = None
        #: The provider the caller asked for by name (the run is then served by it alone).
        self.requested_provider: str | None = run.provider
        self.provider_name: str | None = run.provider
        self.model: str | None = run.model
        #: The task executing the run (cancelled when its lease is lost).
        self.task: asyncio.Task[Any] | None = None
        self.lease_lost = False
        #: Tool calls the caller must answer (the run ends and returns them).
        self.pending: tuple[ToolUseBlock, ...] = ()
        #: Set by a stage to end the turn loop after the current turn.
        self.done = False
        #: True when the run continues after waiting for approval: its input is in the log
        #: already (see :mod:`asm_kernel.resume`).
        self.resumed = False
        #: Per-plugin scratch space: ``state.data["myplugin"] = ...``.
        self.data: dict[str, Any] = {}
        #: The session's transcript as ``prepare`` read it (the start's events fed to it while
        #: its unit is in flight; see :mod:`asm_kernel.pipeline.overlap`).
        self.builder: TranscriptBuilder | None = None
        #: The start unit being stored behind the provider call, until it is settled.
        self.starting: asyncio.Future[None] | None = None
        #: Wait for the start unit before anything else (a run whose overlapped start raced).
        self.serial_start = False

    def __repr__(self) -> str:
        return f"RunState(run={self.run.id!r}, turn={self.turn}, status={self.run.status.value})"

    def on_lease_lost(self) -> None:
        """Called by the lease keeper when another worker took the run over: stop at once."""
        self.lease_lost = True
        if self.task is not None and not self.task.done():
            self.task.cancel(LEASE_LOST)

    async def started(self) -> None:
        """Wait until the run's start is durable (at once unless it is stored behind the call).

        Raises what the start failed with. Every write of the run waits for it anyway; a stage
        or plugin that reads the run's stored records calls this first.
        """
        if self.starting is not None:
            await asyncio.shield(self.starting)

    async def transcript_builder(self) -> TranscriptBuilder:
        """The session's transcript as this run sees it, its own start included."""
        from .overlap import provisional_builder

        builder = provisional_builder(self)
        if builder is not None:
            return builder
        return await self.manager.transcript_builder(self.session.id)

    # -- events -----------------------------------------------------------------------------

    def event(self, type_: str, payload: dict[str, Any]) -> Event:
        """A new event of this run (not stored yet)."""
        return self.manager.make_event(self.session.id, type_, payload, self.run.id)

    async def emit(self, type_: str, payload: dict[str, Any], *, durable: bool = True) -> Event:
        """Store an event now (with anything deferred before it) and return it with its seq.

        ``durable=False``: the store may acknowledge it before it commits (see
        :class:`~asm_kernel.writes.WriteUnit`); the run's next durable write commits it.
        """
        stored = await self.writer.emit([self.event(type_, payload)], durable=durable)
        return stored[-1]

    async def emit_many(self, events: Sequence[Event], *, durable: bool = True) -> list[Event]:
        return await self.writer.emit(events, durable=durable)

    def defer(self, type_: str, payload: dict[str, Any]) -> None:
        """Store an event with the run's next write, in order."""
        self.writer.defer(self.event(type_, payload))

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a lifecycle hook of every plugin (failures are reported, never raised)."""
        self.manager.notify(hook, self.session, self.run, **kwargs)

    # -- accounting -------------------------------------------------------------------------

    def add_usage(self, usage: Usage | None, cost: float | None) -> None:
        """Count a billed response; unknown usage or price makes the run's cost unknown."""
        if usage is not None:
            self.usage = self.usage + usage
        if usage is None or cost is None:
            self.cost_known = False
        if self.cost_known and cost is not None:
            self.cost = (self.cost or 0.0) + cost
        self.run = evolve(self.run, usage=self.usage, cost=self.run_cost)

    @property
    def run_cost(self) -> float | None:
        return self.cost if self.cost_known else None
