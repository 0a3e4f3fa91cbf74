"""Helpers shared by store implementations (memory, DuckDB, Postgres, yours).

* :func:`check_batch` validates events before anything is written, so a bad batch stores
  nothing;
* :class:`Notifier` wakes ``wait``/subscribe callers across threads and event loops;
* :func:`event_row` / :func:`event_from_row` are the one mapping between an :class:`Event` and
  the columns every SQL store uses.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from .errors import PayloadTooLargeError, StoreCorruptError, ValidationError
from .model import Event, Fence, Run, Session
from .serialization import dumps, loads
from .writes import RunWrite, WriteUnit

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_BATCH",
    "MAX_DEPTH",
    "append_unit",
    "check_batch",
    "check_unit",
    "check_session",
    "check_run",
    "check_page",
    "check_claim",
    "strict_json",
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


#: Largest schema version an event may carry (stores keep it in a 32-bit integer column).
MAX_SCHEMA_VERSION = 2**31 - 1
#: Deepest nesting of a payload (JSON parsers and encoders of every store cope with this).
MAX_DEPTH = 200


def _text_ok(value: str) -> bool:
    """A string every store can keep: encodable as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


def strict_json(value: Any, path: str) -> str:
    """``value`` as strict JSON text (no NaN/Infinity, valid UTF-8, bounded depth), or a ValidationError."""
    if not _depth_ok(value):
        raise ValidationError(f"data is nested deeper than {MAX_DEPTH} levels", path=path, hint="flatten the structure")
    try:
        text = dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        what = "non-finite numbers (NaN, Infinity)" if "Out of range float" in str(exc) else str(exc)
        raise ValidationError(
            f"data is not strict JSON: {what}",
            path=path,
            hint="use str, int, finite float, bool, None, lists and dicts",
        ) from None
    if not _text_ok(text):
        raise ValidationError(
            "data holds a string that is not valid Unicode (a lone surrogate)",
            path=path,
            hint="encode binary data (base64) before storing it",
        )
    return text


def _check_name(value: Any, path: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValidationError(f"must be a non-empty string, got {value!r:.60}", path=path)
    if not _text_ok(value):
        raise ValidationError("is not valid Unicode (a lone surrogate)", path=path)


def append_unit(
    session_id: str,
    events: Sequence[Event],
    *,
    expected_seq: int | None = None,
    fence: Fence | None = None,
    durable: bool = True,
) -> WriteUnit:
    """The unit a store's ``append`` commits: ``events`` alone, under its conditions."""
    if not isinstance(events, Sequence) or isinstance(events, str | bytes):
        raise ValidationError("append takes a sequence of Event", path="events")
    return WriteUnit(session_id, events, expected_seq=expected_seq, fence=fence, durable=durable)


def check_batch(session_id: str, events: Sequence[Event], expected_seq: int | None = None) -> list[str]:
    """Validate a batch; returns each event's payload as JSON text (reused for the insert).

    Everything a store could fail on later is checked here, before anything is written, so a
    malformed event fails its own request with a :class:`ValidationError` and never a group of
    other writers' requests.
    """
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
        where = f"events[{i}]"
        if not isinstance(event, Event):
            raise ValidationError(f"expected Event, got {type(event).__name__}", path=where)
        if event.session_id != session_id:
            raise ValidationError(
                f"event belongs to session {event.session_id!r:.80}, not {session_id!r:.80}",
                path=f"{where}.session_id",
                hint="append each session's events in its own call",
            )
        _check_name(event.id, f"{where}.id")
        _check_name(event.type, f"{where}.type")
        _check_name(event.run_id, f"{where}.run_id", optional=True)
        version = event.schema_version
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_SCHEMA_VERSION:
            raise ValidationError(
                f"schema_version must be an integer from 1 to {MAX_SCHEMA_VERSION}, got {version!r:.40}",
                path=f"{where}.schema_version",
            )
        if not isinstance(event.payload, dict):
            raise ValidationError("payload must be a JSON object", path=f"{where}.payload")
        if event.id in ids:
            raise ValidationError(f"event id {event.id!r} appears twice in one batch", path=f"{where}.id")
        ids.add(event.id)
        text = strict_json(event.payload, f"{where}.payload")
        size = len(text.encode())
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLargeError(
                f"payload is {size} bytes, over the {MAX_PAYLOAD_BYTES} byte limit",
                path=f"{where}.payload",
                hint="store large blobs elsewhere and put a reference in the event",
            )
        payloads.append(text)
    return payloads


def check_session(session: Any, path: str = "session") -> None:
    """A session record every store can keep (strict JSON metadata, valid strings)."""
    if not isinstance(session, Session):
        raise ValidationError(f"expected Session, got {type(session).__name__}", path=path)
    _check_name(session.id, f"{path}.id")
    _check_name(session.agent_id, f"{path}.agent_id")
    for i, tag in enumerate(session.tags):
        _check_name(tag, f"{path}.tags[{i}]")
    strict_json(session.metadata, f"{path}.metadata")


def check_run(run: Any, path: str = "run") -> None:
    """A run record every store can keep."""
    if not isinstance(run, Run):
        raise ValidationError(f"expected Run, got {type(run).__name__}", path=path)
    _check_name(run.id, f"{path}.id")
    _check_name(run.session_id, f"{path}.session_id")
    _check_name(run.idempotency_key, f"{path}.idempotency_key", optional=True)
    _check_name(run.owner, f"{path}.owner", optional=True)
    strict_json(run.metadata, f"{path}.metadata")
    if run.error is not None:
        strict_json(run.error, f"{path}.error")
    if run.cost is not None and not math.isfinite(run.cost):
        raise ValidationError("cost must be a finite number", path=f"{path}.cost")


def check_unit(unit: Any) -> list[str]:
    """Validate a :class:`~asm_kernel.writes.WriteUnit`; returns its payloads' JSON (as check_batch)."""
    if not isinstance(unit, WriteUnit):
        raise ValidationError(f"expected WriteUnit, got {type(unit).__name__}", path="unit")
    sid = unit.session_id
    _check_name(sid, "unit.session_id")
    if unit.new_session is not None and unit.session is not None:
        raise ValidationError(
            "a unit creates a session or replaces it, not both",
            path="unit.session",
            hint="put the final record in new_session",
        )
    for path, session in (("unit.new_session", unit.new_session), ("unit.session", unit.session)):
        if session is not None:
            check_session(session, path)
            if session.id != sid:
                raise ValidationError(f"session {session.id!r:.80} is not the unit's session {sid!r:.80}", path=path)
    seen: set[str] = set()
    keys: set[str] = set()
    for where, writes in (("new_runs", unit.new_runs), ("runs", unit.runs)):
        for i, write in enumerate(writes):
            path = f"unit.{where}[{i}]"
            if not isinstance(write, RunWrite):
                raise ValidationError(f"expected RunWrite, got {type(write).__name__}", path=path)
            run = write.run
            check_run(run, f"{path}.run")
            if run.session_id != sid:
                raise ValidationError("run belongs to another session", path=f"{path}.run.session_id")
            if run.id in seen:
                raise ValidationError(f"run {run.id!r} is written twice in one unit", path=path)
            seen.add(run.id)
            if write.lease_ttl is not None and (
                isinstance(write.lease_ttl, bool)
                or not isinstance(write.lease_ttl, int | float)
                or not math.isfinite(write.lease_ttl)
                or write.lease_ttl < 0
            ):
                raise ValidationError("lease_ttl must be a number of seconds >= 0", path=f"{path}.lease_ttl")
            if where == "new_runs":
                if write.expect_status is not None or write.expect_token is not None or write.expect_lease_expired:
                    raise ValidationError("a run being created has no stored state to expect", path=path)
                if run.idempotency_key is not None:
                    if run.idempotency_key in keys:
                        raise ValidationError("two new runs share one idempotency key", path=f"{path}.run")
                    keys.add(run.idempotency_key)
    if unit.fence is not None and not isinstance(unit.fence, Fence):
        raise ValidationError(f"expected Fence, got {type(unit.fence).__name__}", path="unit.fence")
    return check_batch(sid, unit.events, unit.expected_seq)


def _int_arg(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_read_args(
    after: int,
    before: int | None,
    limit: int | None,
    types: Sequence[str] | None = None,
    run_id: str | None = None,
) -> None:
    """The arguments of ``Store.read``, checked the same way by every store."""
    if not _int_arg(after) or after < 0:
        raise ValidationError(f"after must be an integer >= 0, got {after!r:.40}", path="after")
    if before is not None and (not _int_arg(before) or before < 1):
        raise ValidationError(f"before must be an integer >= 1, got {before!r:.40}", path="before")
    if limit is not None and (not _int_arg(limit) or limit < 0):
        raise ValidationError(f"limit must be an integer >= 0, got {limit!r:.40}", path="limit")
    if types is not None:
        if isinstance(types, str) or not isinstance(types, Sequence | set | frozenset):
            raise ValidationError("types must be a list of event type names", path="types")
        for i, name in enumerate(types):
            _check_name(name, f"types[{i}]")
    _check_name(run_id, "run_id", optional=True)


def check_claim(owner: Any, limit: Any, lease_ttl: Any, max_running_per_session: Any) -> None:
    """The arguments of ``Store.claim_runs``."""
    _check_name(owner, "owner")
    if not _int_arg(limit) or limit < 1:
        raise ValidationError(f"limit must be an integer >= 1, got {limit!r:.40}", path="limit")
    if not _int_arg(max_running_per_session) or max_running_per_session < 1:
        raise ValidationError("max_running_per_session must be an integer >= 1", path="max_running_per_session")
    if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int | float) or not lease_ttl > 0:
        raise ValidationError(
            f"lease_ttl must be a positive number of seconds, got {lease_ttl!r:.40}", path="lease_ttl"
        )


def check_page(limit: Any, offset: Any) -> None:
    """``limit``/``offset`` of the list methods."""
    if not _int_arg(limit) or limit < 0:
        raise ValidationError(f"limit must be an integer >= 0, got {limit!r:.40}", path="limit")
    if not _int_arg(offset) or offset < 0:
        raise ValidationError(f"offset must be an integer >= 0, got {offset!r:.40}", path="offset")


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
