"""Records as rows and rows as records: the columns of ``sessions``, ``runs`` and ``events``.

JSON goes to the server as text and is stored in ``json`` columns (not ``jsonb``): ``json`` keeps
the text as written, so a payload reads back exactly (key order, ``1e300`` stays a float, no
``\\u0000`` refusal) while still being queryable with ``->``/``->>``. psycopg parses ``json``
columns on the way back.

A unit writes at most one session row (plain parameters); runs and events are written with
``unnest`` over one array per column, so one statement (one prepared plan, one round trip)
inserts any number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asm_kernel.errors import StoreCorruptError, ValidationError
from asm_kernel.model import Event, Run, RunStatus, Session, SessionStatus
from asm_kernel.serialization import dumps, from_dict, to_dict
from asm_kernel.storage import event_from_row
from asm_kernel.writes import WriteUnit

__all__ = [
    "SESSION_COLS",
    "RUN_COLS",
    "EVENT_COLS",
    "session_row",
    "session_from_row",
    "run_row",
    "run_from_row",
    "event_rows",
    "event_from_pg",
    "columns",
    "check_text",
]

#: (name, array type for unnest, cast applied to the unnested value)
_SESSION = (
    ("id", "text", ""),
    ("agent_id", "text", ""),
    ("status", "text", ""),
    ("metadata", "text", "::json"),
    ("tags", "text[]", ""),
    ("created_at", "timestamptz", ""),
    ("updated_at", "timestamptz", ""),
)
_RUN = (
    ("id", "text", ""),
    ("session_id", "text", ""),
    ("status", "text", ""),
    ("lease_token", "int8", ""),
    ("lease_expires_at", "timestamptz", ""),
    ("created_at", "timestamptz", ""),
    ("started_at", "timestamptz", ""),
    ("finished_at", "timestamptz", ""),
    ("cost", "float8", ""),
    ("owner", "text", ""),
    ("idempotency_key", "text", ""),
    ("provider", "text", ""),
    ("model", "text", ""),
    ("stop_reason", "text", ""),
    ("input", "text", "::json"),
    ("output", "text", "::json"),
    ("usage", "text", "::json"),
    ("error", "text", "::json"),
    ("metadata", "text", "::json"),
)
_EVENT = (
    ("session_id", "text", ""),
    ("seq", "int8", ""),
    ("ts", "timestamptz", ""),
    ("schema_version", "int4", ""),
    ("id", "text", ""),
    ("run_id", "text", ""),
    ("type", "text", ""),
    ("payload", "text", "::json"),
)

SESSION_COLS = ", ".join(c for c, _, _ in _SESSION)
RUN_COLS = ", ".join(c for c, _, _ in _RUN)
#: The order :func:`asm_kernel.storage.event_from_row` takes.
EVENT_COLS = "id, session_id, seq, run_id, type, payload, ts, schema_version"


def columns(table: str) -> tuple[tuple[str, str, str], ...]:
    return {"sessions": _SESSION, "runs": _RUN, "events": _EVENT}[table]


def check_text(value: Any, path: str) -> None:
    """Postgres text cannot hold NUL characters: refuse them as the caller's error, before any write."""
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError("contains a NUL character, which PostgreSQL text cannot store", path=path)


def check_unit_text(unit: WriteUnit) -> None:
    """Every string of ``unit`` that is stored as text (JSON escapes NUL, so payloads are fine)."""
    check_text(unit.session_id, "unit.session_id")
    for where, session in (("unit.new_session", unit.new_session), ("unit.session", unit.session)):
        if session is not None:
            check_text(session.agent_id, f"{where}.agent_id")
            for i, tag in enumerate(session.tags):
                check_text(tag, f"{where}.tags[{i}]")
    for where, writes in (("new_runs", unit.new_runs), ("runs", unit.runs)):
        for i, write in enumerate(writes):
            run = write.run
            for name in ("id", "owner", "idempotency_key", "provider", "model", "stop_reason"):
                check_text(getattr(run, name), f"unit.{where}[{i}].run.{name}")
    for i, event in enumerate(unit.events):
        for name in ("id", "type", "run_id"):
            check_text(getattr(event, name), f"events[{i}].{name}")


def session_row(s: Session) -> tuple[Any, ...]:
    return (
        s.id,
        s.agent_id,
        SessionStatus(s.status).value,
        dumps(s.metadata),
        list(s.tags),
        s.created_at,
        s.updated_at,
    )


def session_from_row(row: Sequence[Any]) -> Session:
    ident, agent_id, status, metadata, tags, created, updated = row[:7]
    try:
        return Session(
            id=ident,
            agent_id=agent_id,
            status=SessionStatus(status),
            metadata=metadata,
            tags=tuple(tags or ()),
            created_at=created,
            updated_at=updated,
        )
    except (ValueError, TypeError) as exc:
        raise StoreCorruptError(
            f"stored session {ident!r} cannot be read: {exc}",
            hint="the row was changed outside asm; restore it from a backup",
        ) from None


def _json(value: Any) -> str | None:
    return None if value is None else dumps(to_dict(value))


def run_row(run: Run) -> tuple[Any, ...]:
    return (
        run.id,
        run.session_id,
        RunStatus(run.status).value,
        run.lease_token,
        run.lease_expires_at,
        run.created_at,
        run.started_at,
        run.finished_at,
        run.cost,
        run.owner,
        run.idempotency_key,
        run.provider,
        run.model,
        run.stop_reason,
        _json(run.input),
        _json(run.output),
        dumps(to_dict(run.usage)),
        None if run.error is None else dumps(run.error),
        dumps(run.metadata),
    )


def run_from_row(row: Sequence[Any]) -> Run:
    data = dict(zip((c for c, _, _ in _RUN), row, strict=False))
    try:
        return from_dict(data, Run)
    except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
        raise StoreCorruptError(
            f"stored run {data.get('id')!r} cannot be read: {exc}",
            hint="the row was changed outside asm; restore it from a backup",
        ) from None


def event_rows(events: Sequence[Event], payloads: dict[str, str]) -> list[list[Any]]:
    """Column arrays (in ``_EVENT`` order) for inserting ``events`` with their seqs.

    ``payloads`` maps event ids to the JSON text :func:`asm_kernel.storage.check_unit` made.
    """
    cols: list[list[Any]] = [[] for _ in _EVENT]
    for e in events:
        for col, value in zip(
            cols,
            (e.session_id, e.seq, e.timestamp, e.schema_version, e.id, e.run_id, e.type, payloads[e.id]),
            strict=True,
        ):
            col.append(value)
    return cols


def event_from_pg(row: Sequence[Any]) -> Event:
    return event_from_row(row)
