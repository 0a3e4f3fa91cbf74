"""A budget's ledger: reservations and settlements as events in an asm session of their own.

The ledger of one budget scope (``asm.budget:<policy>:<scope>:<key>:<period>``, created on
first use) holds ``budget_reserved`` and ``budget_settled`` events. What the scope has committed
is derived from them: everything settled, plus every reservation not settled yet. A reservation
is appended **on the condition that the ledger's last seq is the one its decision was made
against** (``expected_seq``): two runs — in one process or in many, on any store — cannot both
take the last dollars; the loser reads what the winner wrote and decides again. Nothing lives
only in memory: the fold kept here is a cache of the log, extended by reading only the events
after the seq it has seen.

A reservation of a process that dies before settling stays counted at its worst case: the
provider may have billed the call, and asm cannot know; it can only make the budget stricter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import evolve

from ...errors import AlreadyExistsError, SeqConflictError, SessionNotFoundError, StorageError
from ...events import EventType
from ...model import Event
from ...policy import Spend

if TYPE_CHECKING:
    from ...kernel import Kernel

__all__ = ["Ledger", "LEDGER_AGENT", "MAX_ATTEMPTS"]

T = TypeVar("T")

#: ``agent_id`` of every ledger session (``asm sessions list --agent asm.budget`` lists them).
LEDGER_AGENT = "asm.budget"
#: Reservation attempts against a ledger others keep moving, before giving up (retryable).
MAX_ATTEMPTS = 64
_PAGE = 1000


class Ledger:
    """One scope's ledger (see the module docstring)."""

    def __init__(self, kernel: Kernel, session_id: str, about: dict[str, Any]) -> None:
        self._kernel = kernel
        self.session_id = session_id
        self._about = about
        self.last_seq = 0
        self.settled = Spend()
        self.open: dict[str, Spend] = {}
        self._exists = False
        # Reservations of this process are taken one at a time per ledger: they would only
        # conflict with each other; other processes are kept out by expected_seq.
        self.lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Ledger({self.session_id!r}, seq={self.last_seq}, open={len(self.open)})"

    @property
    def committed(self) -> Spend:
        """Settled spend plus every open reservation (at its worst case)."""
        total = self.settled
        for spend in self.open.values():
            total = total + spend
        return total

    async def _ensure(self) -> None:
        if self._exists:
            return
        try:
            await self._kernel.store.last_seq(self.session_id)
        except SessionNotFoundError:
            try:
                await self._kernel.sessions.create(
                    session_id=self.session_id, agent_id=LEDGER_AGENT, metadata=self._about, tags=[LEDGER_AGENT]
                )
            except AlreadyExistsError:
                pass  # another run or process made it first
        self._exists = True

    async def refresh(self) -> None:
        """Fold in the events appended since the last look (by anyone, anywhere)."""
        await self._ensure()
        while True:
            events = await self._kernel.store.read(self.session_id, after=self.last_seq, limit=_PAGE)
            for event in events:
                self._apply(event)
            if len(events) < _PAGE:
                return

    def _apply(self, event: Event) -> None:
        if event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        payload = event.payload
        rid = payload.get("reservation_id")
        spend = Spend.from_dict(payload.get("spend") or {})
        if event.type == EventType.BUDGET_RESERVED and isinstance(rid, str):
            self.open[rid] = spend
        elif event.type == EventType.BUDGET_SETTLED:
            self.open.pop(rid, None)  # type: ignore[arg-type]
            self.settled = self.settled + spend

    async def reserve(
        self, rid: str, payload: dict[str, Any], spend: Spend, check: Callable[[Spend], T | None]
    ) -> T | None:
        """Reserve ``spend`` unless ``check(committed)`` objects; returns the objection or None.

        The append is conditional on the ledger's last seq; on a conflict the ledger is read
        again and the check made again, so a decision is always made against the latest spend.
        """
        async with self.lock:
            for _attempt in range(MAX_ATTEMPTS):
                await self.refresh()
                if rid in self.open:
                    return None  # a retried reservation that was stored after all
                objection = check(self.committed)
                if objection is not None:
                    return objection
                event = self._event(rid, EventType.BUDGET_RESERVED, {**payload, "spend": spend.to_dict()})
                try:
                    stored = await self._kernel.sessions.append(self.session_id, [event], expected_seq=self.last_seq)
                except SeqConflictError:
                    continue  # someone else reserved or settled meanwhile: decide again
                for item in stored:
                    self._apply(item)
                return None
        raise StorageError(
            f"budget ledger {self.session_id} kept changing: {MAX_ATTEMPTS} reservations in a row lost the race",
            hint="too many runs share this budget at once; retry",
            retryable=True,
        )

    async def settle(self, rid: str, run_id: str | None, actual: Spend) -> None:
        """Turn reservation ``rid`` into ``actual``. Not conditional: settling never lets spend grow
        past what was reserved (but for a provider that ignored max_tokens)."""
        event = self._event(rid, EventType.BUDGET_SETTLED, {"run_id": run_id, "spend": actual.to_dict()})
        await self._kernel.sessions.append(self.session_id, [event])

    def _event(self, rid: str, kind: str, payload: dict[str, Any]) -> Event:
        # No run_id on the event: the run belongs to another session (its id is in the payload).
        event = self._kernel.sessions.make_event(self.session_id, kind, {"reservation_id": rid, **payload})
        # The id is the reservation's: a write retried after its answer was lost is recognised.
        suffix = "r" if kind == EventType.BUDGET_RESERVED else "s"
        return evolve(event, id=f"evt_{rid}_{suffix}")
