"""``AsmSession``: the OpenAI Agents SDK ``Session`` protocol on an asm session's event log.

Each SDK session is an asm session with the same id. ``add_items`` appends one
``openai_agents.item_added`` event per item, all in **one atomic unit** (a turn's items are
stored together or not at all), with the run's usage delta beside them when the Runner hands the
session its context. ``pop_item`` and ``clear_session`` append events too: history is never
destroyed, only the view changes (see :mod:`asm_openai_agents._view` for the rules).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agents.memory.session_settings import SessionSettings, coerce_session_settings, resolve_session_limit
from asm_kernel import Event
from asm_kernel.errors import AlreadyExistsError, SessionNotFoundError, StateError, ValidationError

from ._view import (
    ITEM_ADDED,
    ITEM_POPPED,
    SESSION_CLEARED,
    USAGE_FIELDS,
    USAGE_RECORDED,
    VIEW_TYPES,
    SessionView,
    views_for,
)

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from asm_kernel import Kernel

__all__ = ["AsmSession", "usage_counters"]

#: The agent id recorded on asm sessions this adapter creates.
AGENT_ID = "openai-agents"
# Where a wrapper remembers the usage already recorded for its run, so each add_items records
# only what the run spent since (the SDK itself keeps private state on the wrapper this way).
_RECORDED = "_asm_openai_agents_usage"


async def _settle(awaitable: Awaitable[list[Event]]) -> list[Event]:
    """Await a write to its outcome even if the caller is cancelled meanwhile, then re-raise the
    cancellation: a caller that gave up must not retry a write the store already acknowledged."""
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: its outcome is stored (or not) either way
        raise cancelled
    return task.result()


def usage_counters(usage: Any) -> dict[str, int]:
    """The counters of an ``agents.Usage`` (or anything shaped like it) asm records."""

    def num(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    return {
        "requests": num(getattr(usage, "requests", 0)),
        "input_tokens": num(getattr(usage, "input_tokens", 0)),
        "output_tokens": num(getattr(usage, "output_tokens", 0)),
        "total_tokens": num(getattr(usage, "total_tokens", 0)),
        "cached_tokens": num(getattr(input_details, "cached_tokens", 0)),
        "reasoning_tokens": num(getattr(output_details, "reasoning_tokens", 0)),
    }


class AsmSession:
    """Conversation history for one OpenAI Agents SDK session, kept in asm.

    ``kernel`` is a started :class:`asm_kernel.Kernel`; the session works on whatever store it
    was configured with. The asm session ``session_id`` is created on the first write (with
    ``agent_id`` and ``metadata``) or used as it is when it exists. Many ``AsmSession`` objects
    (and tasks, and threads running ``Runner.run_sync``) may use one session at once: every
    item is kept, in the order the store acknowledged the appends.

    The four history methods accept the Runner's context ``wrapper``, which lets the session
    record each run's token usage (:meth:`usage` sums it).
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        kernel: Kernel,
        *,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
        agent_id: str = AGENT_ID,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(session_id, str) or not session_id.strip():
            raise ValidationError(
                "session_id must be a non-empty string", path="session_id", hint="pass the conversation's id"
            )
        if not hasattr(kernel, "sessions") or not hasattr(kernel, "store"):
            raise ValidationError(
                f"kernel must be an asm_kernel.Kernel, got {type(kernel).__name__}",
                path="kernel",
                hint="async with asm_kernel.Kernel.open() as kernel: AsmSession(id, kernel)",
            )
        self.session_id = session_id
        self.kernel = kernel
        if isinstance(session_settings, Mapping):
            session_settings = dict(session_settings)
        self.session_settings = (
            coerce_session_settings(session_settings) if session_settings is not None else SessionSettings()
        )
        self.agent_id = agent_id
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"AsmSession({self.session_id!r}, store={type(self.kernel.store).__name__})"

    # -- the view ---------------------------------------------------------------------------

    def _view(self) -> SessionView:
        if not getattr(self.kernel, "_started", True):
            raise StateError(
                "the asm kernel behind this session is not started (or was closed)",
                hint="use the session inside `async with Kernel(...) as kernel:` or after `await kernel.start()`",
                session_id=self.session_id,
            )
        return views_for(self.kernel).get(self.session_id)

    async def _current(self, view: SessionView) -> SessionView:
        """Bring ``view`` up to the log: a full build once, then only the events after its cursor."""
        sessions = self.kernel.sessions
        if view.cursor == 0 and not view.exists:
            try:
                clears = await sessions.events(self.session_id, types=[SESSION_CLEARED])
            except SessionNotFoundError:
                return view  # nothing stored yet: an empty history
            view.exists = True
            # Items before the last clear are hidden for good, so they are never read again;
            # usage before it still counts (clearing history does not un-spend tokens).
            start = clears[-1].seq - 1 if clears else 0
            usage = await sessions.events(self.session_id, types=[USAGE_RECORDED], before=start + 1)
            rest = await sessions.events(self.session_id, after=start, types=VIEW_TYPES)
            view.apply(sorted([*usage, *rest], key=lambda e: e.seq))
        else:
            view.apply(await sessions.events(self.session_id, after=view.cursor, types=VIEW_TYPES))
        return view

    async def _ensure_session(self, view: SessionView) -> None:
        if view.exists:
            return
        try:
            await self.kernel.sessions.get(self.session_id)
        except SessionNotFoundError:
            try:
                await self.kernel.sessions.create(
                    session_id=self.session_id,
                    agent_id=self.agent_id,
                    metadata={"framework": "openai-agents", **self.metadata},
                )
            except AlreadyExistsError:
                pass  # another writer created it first: the same session
        await self._current(view)

    async def _append(self, view: SessionView, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Event]:
        await self._ensure_session(view)
        stored = await _settle(self.kernel.sessions.append(self.session_id, list(events)))
        # Nothing unseen between the view and these events: apply them without a read. Otherwise
        # the next read catches up (other writers' events come first, in log order).
        with view.lock:
            contiguous = bool(stored) and stored[0].seq == view.cursor + 1
        if contiguous:
            view.apply(stored)
        views_for(self.kernel).trim()
        return stored

    # -- the Session protocol ---------------------------------------------------------------

    async def get_items(self, limit: int | None = None, *, wrapper: Any = None) -> list[TResponseInputItem]:
        """The visible history, oldest first; with ``limit`` (or the settings' limit) the newest N."""
        effective = resolve_session_limit(limit, self.session_settings)
        view = await self._current(self._view())
        items: list[TResponseInputItem] = view.tail(effective)
        return items

    async def add_items(self, items: list[TResponseInputItem], *, wrapper: Any = None) -> None:
        """Store ``items`` (in order, one atomic unit) and the usage the run spent since last time."""
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
            raise ValidationError(
                f"items must be a list of input items, got {type(items).__name__}",
                path="items",
                hint="wrap a single item in a list",
            )
        events: list[tuple[str, Mapping[str, Any]]] = [(ITEM_ADDED, {"item": item}) for item in items]
        recorded = self._usage_delta(wrapper)
        if recorded is not None:
            events.append((USAGE_RECORDED, recorded[0]))
        if not events:
            return
        await self._append(self._view(), events)
        if recorded is not None:
            self._remember_usage(wrapper, recorded[1])

    async def pop_item(self, *, wrapper: Any = None) -> TResponseInputItem | None:
        """Hide the newest visible item and return it (None when the history is empty)."""
        view = await self._current(self._view())
        with view.lock:
            empty = not view.items
        if empty:
            return None
        (popped,) = await self._append(view, [(ITEM_POPPED, {})])
        # Which item this pop removed is decided by its place in the log; catch up to it.
        while view.cursor < popped.seq:
            await self._current(view)
        item: TResponseInputItem | None = view.collect_pop(popped.seq)
        return item

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Hide every item stored so far; the events stay in the log."""
        view = self._view()
        await self._current(view)
        if not view.exists:
            return  # never written: nothing to clear, and no session to create for it
        await self._append(view, [(SESSION_CLEARED, {})])

    # -- usage ------------------------------------------------------------------------------

    async def record_usage(self, result_or_usage: Any) -> None:
        """Record usage: a ``RunResult`` (what its run spent that this session has not recorded
        yet) or an ``agents.Usage`` (recorded as given)."""
        wrapper = getattr(result_or_usage, "context_wrapper", None)
        if wrapper is not None:
            recorded = self._usage_delta(wrapper)
            if recorded is None:
                return
            await self._append(self._view(), [(USAGE_RECORDED, recorded[0])])
            self._remember_usage(wrapper, recorded[1])
            return
        if not hasattr(result_or_usage, "total_tokens"):
            raise ValidationError(
                f"expected a RunResult or an agents.Usage, got {type(result_or_usage).__name__}",
                path="result_or_usage",
            )
        counters = usage_counters(result_or_usage)
        if any(counters.values()):
            await self._append(self._view(), [(USAGE_RECORDED, counters)])

    async def usage(self) -> dict[str, int]:
        """Usage recorded in this session so far, summed (clearing the history keeps it)."""
        view = await self._current(self._view())
        with view.lock:
            return dict(view.usage)

    @staticmethod
    def _usage_delta(wrapper: Any) -> tuple[dict[str, int], dict[str, int]] | None:
        usage = getattr(wrapper, "usage", None) if wrapper is not None else None
        if usage is None:
            return None
        now = usage_counters(usage)
        before = getattr(wrapper, _RECORDED, None) or dict.fromkeys(USAGE_FIELDS, 0)
        delta = {name: now[name] - before.get(name, 0) for name in USAGE_FIELDS}
        if not any(delta.values()):
            return None
        return delta, now

    @staticmethod
    def _remember_usage(wrapper: Any, counters: dict[str, int]) -> None:
        try:
            setattr(wrapper, _RECORDED, counters)
        except (AttributeError, TypeError):
            pass  # a frozen wrapper: the next delta repeats this one's base, nothing is lost
