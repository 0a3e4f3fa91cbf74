"""Helpers shared by store implementations (memory, DuckDB, Postgres, yours).

* :func:`check_batch` validates events before anything is written, so a bad batch stores
  nothing;
* :class:`Notifier` wakes ``wait``/subscribe callers across threads and event loops;
* :func:`event_row` / :func:`event_from_row` are the one mapping between an :class:`Event` and
  the columns every SQL store uses.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from .errors import PayloadTooLargeError, StoreCorruptError, ValidationError
from .model import Event
from .serialization import dumps, loads

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_BATCH",
    "check_batch",
    "check_read_args",
    "Notifier",
    "event_row",
    "event_from_row",
    "wait_for_events",
]

#: Largest serialized payload one event may carry. Transcripts hold text, not blobs.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
#: Largest number of events in one append call.
MAX_BATCH = 10_000


def check_batch(session_id: str, events: Sequence[Event], expected_seq: int | None = None) -> list[str]:
    """Validate a batch; returns each event's payload as JSON text (reused for the insert)."""
    if expected_seq is not None and (
        isinstance(expected_seq, bool) or not isinstance(expected_seq, int) or expected_seq < 0
    ):
        raise ValidationError(f"expected_seq must be an integer >= 0, got {expected_seq!r}", path="expected_seq")
    if not isinstance(events, Sequence) or isinstance(events, str | bytes):
        raise ValidationError("append takes a sequence of Event", path="events")
    if len(events) > MAX_BATCH:
        raise ValidationError(
            f"batch of {len(events)} events is larger than {MAX_BATCH}",
            path="events",
            hint="split it into several appends",
        )
    payloads: list[str] = []
    ids: set[str] = set()
    for i, event in enumerate(events):
        if not isinstance(event, Event):
            raise ValidationError(f"expected Event, got {type(event).__name__}", path=f"events[{i}]")
        if event.session_id != session_id:
            raise ValidationError(
                f"event belongs to session {event.session_id!r}, not {session_id!r}",
                path=f"events[{i}].session_id",
                hint="append each session's events in its own call",
            )
        if not event.type or not isinstance(event.type, str):
            raise ValidationError("event type must be a non-empty string", path=f"events[{i}].type")
        if event.id in ids:
            raise ValidationError(f"event id {event.id!r} appears twice in one batch", path=f"events[{i}].id")
        ids.add(event.id)
        try:
            text = dumps(event.payload)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"payload is not JSON-serializable: {exc}",
                path=f"events[{i}].payload",
                hint="use str, int, float, bool, None, lists and dicts",
            ) from None
        if len(text.encode()) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLargeError(
                f"payload is {len(text.encode())} bytes, over the {MAX_PAYLOAD_BYTES} byte limit",
                path=f"events[{i}].payload",
                hint="store large blobs elsewhere and put a reference in the event",
            )
        payloads.append(text)
    return payloads


def check_read_args(after: int, before: int | None, limit: int | None) -> None:
    if not isinstance(after, int) or after < 0:
        raise ValidationError(f"after must be an integer >= 0, got {after!r}", path="after")
    if before is not None and (not isinstance(before, int) or before < 1):
        raise ValidationError(f"before must be an integer >= 1, got {before!r}", path="before")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValidationError(f"limit must be an integer >= 0, got {limit!r}", path="limit")


class Notifier:
    """Wakes waiters of a session when its log grows; safe from any thread or loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = defaultdict(set)

    def register(self, session_id: str) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters[session_id].add((loop, fut))
        return fut

    def unregister(self, session_id: str, fut: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(session_id)
            if waiters is None:
                return
            waiters.discard((fut.get_loop(), fut))
            if not waiters:
                del self._waiters[session_id]

    def notify(self, session_id: str) -> None:
        with self._lock:
            waiters = self._waiters.pop(session_id, set())
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # loop already closed: nobody is waiting any more
                pass


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def wait_for_events(
    notifier: Notifier,
    session_id: str,
    after: int,
    timeout: float,
    read: Callable[[], Awaitable[list[Event]]],
) -> list[Event]:
    """Long-poll: ``read()`` now, else wait until notified or ``timeout`` and read again."""
    events = await read()
    if events or timeout <= 0:
        return events
    fut = notifier.register(session_id)
    try:
        # Re-read after registering: an append between the first read and the registration
        # would otherwise be missed until the next one.
        events = await read()
        if events:
            return events
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return []
        return await read()
    finally:
        notifier.unregister(session_id, fut)


def event_row(event: Event, payload_json: str, seq: int) -> tuple[Any, ...]:
    """Column order: id, session_id, seq, run_id, type, payload, ts, schema_version."""
    return (
        event.id,
        event.session_id,
        seq,
        event.run_id,
        event.type,
        payload_json,
        event.timestamp,
        event.schema_version,
    )


def event_from_row(row: Sequence[Any]) -> Event:
    ident, session_id, seq, run_id, type_, payload, ts, version = row
    try:
        data = loads(payload) if isinstance(payload, str | bytes) else payload
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts)
        return Event(
            id=ident,
            session_id=session_id,
            seq=int(seq),
            run_id=run_id,
            type=type_,
            payload=data,
            timestamp=ts,
            schema_version=int(version),
        )
    except (ValueError, TypeError, ValidationError) as exc:
        raise StoreCorruptError(
            f"stored event {ident!r} (session {session_id!r}, seq {seq}) cannot be read: {exc}",
            hint="the store file was changed outside asm; restore it from a backup",
        ) from None


class RecordCache:
    """Write-through cache of sessions and runs in front of an *exclusive* store.

    A store whose data only this process writes (``exclusive = True``: the memory store, an
    embedded DuckDB file) can answer repeated ``get_session``/``get_run`` from memory, which
    removes most reads from a run's path. Shared stores (several processes) are used directly.
    Everything else is passed through to the store unchanged.
    """

    def __init__(self, store: Any, size: int = 8192) -> None:
        from collections import OrderedDict

        self.inner = store
        self._size = size
        self._sessions: OrderedDict[str, Any] = OrderedDict()
        self._runs: OrderedDict[str, Any] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)

    def _keep(self, table: Any, key: str, value: Any) -> Any:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self._size:
            table.popitem(last=False)
        return value

    async def create_session(self, session: Any) -> Any:
        return self._keep(self._sessions, session.id, await self.inner.create_session(session))

    async def update_session(self, session: Any) -> Any:
        return self._keep(self._sessions, session.id, await self.inner.update_session(session))

    async def get_session(self, session_id: str) -> Any:
        cached = self._sessions.get(session_id)
        if cached is not None:
            return cached
        return self._keep(self._sessions, session_id, await self.inner.get_session(session_id))

    async def create_run(self, run: Any) -> Any:
        return self._keep(self._runs, run.id, await self.inner.create_run(run))

    async def update_run(self, run: Any) -> Any:
        return self._keep(self._runs, run.id, await self.inner.update_run(run))

    async def get_run(self, run_id: str) -> Any:
        cached = self._runs.get(run_id)
        if cached is not None:
            return cached
        return self._keep(self._runs, run_id, await self.inner.get_run(run_id))
