"""The run's writer: every event of a run goes to the store under the run's lease.

* :meth:`RunWriter.emit` appends events now, fenced by the run's lease token, so a worker whose
  lease was taken over cannot add a single event (:class:`~asm_kernel.errors.LeaseLostError`);
* :meth:`RunWriter.defer` holds events for the next write, which keeps their order and saves
  a transaction (a run's answer is stored together with its terminal event);
* :meth:`RunWriter.unit` commits a durable point — the start, a tool round, the outcome — as one
  atomic unit with whatever was deferred.

While the run's start unit is being stored behind the provider call (``runtime.overlap_start``,
see :mod:`asm_kernel.pipeline.overlap`), every write waits for it first (:attr:`RunWriter.barrier`):
nothing of the run reaches the store or the caller before its start is durable.

Every stored event is handed to the run's listener (the caller's stream) in seq order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from attrs import evolve

from ..model import Event, Fence
from ..writes import Committed, WriteUnit

if TYPE_CHECKING:
    from ..sessions import SessionManager

__all__ = ["RunWriter"]

Listener = Callable[[Event], None]


class RunWriter:
    def __init__(self, manager: SessionManager, session_id: str, listener: Listener | None = None) -> None:
        self._manager = manager
        self.session_id = session_id
        self.fence: Fence | None = None
        self._deferred: list[Event] = []
        self._listener = listener
        #: Awaited before every write while the start unit is in flight (raises if it failed).
        self.barrier: Callable[[], Awaitable[None]] | None = None

    @property
    def deferred(self) -> tuple[Event, ...]:
        return tuple(self._deferred)

    def defer(self, event: Event) -> None:
        self._deferred.append(event)

    def take_deferred(self) -> list[Event]:
        events, self._deferred = self._deferred, []
        return events

    async def flush(self) -> None:
        """Store what was deferred, now (a no-op when nothing was)."""
        if self._deferred:
            await self.emit([])

    async def emit(self, events: Sequence[Event], *, durable: bool = True) -> list[Event]:
        """Store ``events`` (after what was deferred) under the run's lease.

        ``durable=False`` marks them as a store may acknowledge before committing (stream deltas,
        a tool round's intermediate events): the run's next durable write commits them too.
        """
        if self.barrier is not None:
            await self.barrier()
        batch = [*self._deferred, *events]
        committed = await self._manager.commit(WriteUnit(self.session_id, batch, fence=self.fence, durable=durable))
        self._deferred = []
        self._hand_over(committed.events)
        return list(committed.events[len(batch) - len(events) :])

    async def unit(self, unit: WriteUnit, *, with_deferred: bool = True) -> Committed:
        """Commit ``unit`` (deferred events first) and hand its events to the listener."""
        if self.barrier is not None:
            await self.barrier()
        if with_deferred and self._deferred:
            unit = evolve(unit, events=(*self._deferred, *unit.events))
        committed = await self._manager.commit(unit)
        if with_deferred:
            self._deferred = []
        self._hand_over(committed.events)
        return committed

    async def commit_start(self, unit: WriteUnit) -> Committed:
        """Commit the start unit itself (never behind a barrier: it is the barrier)."""
        committed = await self._manager.commit(unit)
        self._hand_over(committed.events)
        return committed

    def _hand_over(self, events: Sequence[Event]) -> None:
        if self._listener is not None:
            for event in events:
                self._listener(event)
