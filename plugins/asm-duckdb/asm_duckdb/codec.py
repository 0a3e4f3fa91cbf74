"""Rows and records: the one mapping between asm's records and the DuckDB columns.

Event rows are tuples in the column order of :data:`EVENT_COLUMNS`; they are what the writer
inserts, what the in-memory tail keeps and what reads turn back into :class:`Event` records, so
an event read from memory and the same event read from the file are equal. Session and run
records are written whole (JSON text for nested values; ``TIMESTAMPTZ`` for times, read back as
microseconds since the epoch, which is exact and cheaper than DuckDB's datetime conversion).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import StoreCorruptError
from asm_kernel.model import Event, Run, RunStatus, Session, SessionStatus
from asm_kernel.serialization import dumps, from_dict, loads, to_dict
from asm_kernel.storage import event_from_row
from asm_kernel.writes import RUN_FIXED

from .layout import LOG, session_key

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "Row",
    "EVENT_COLUMNS",
    "EVENT_SELECT",
    "SESSION_SELECT",
    "RUN_SELECT",
    "SESSIONS",
    "RUNS",
    "event_row",
    "event_from_db",
    "event_from_tail",
    "row_size",
    "session_params",
    "session_from_row",
    "run_params",
    "run_from_row",
    "record_size",
    "insert_events",
    "utc",
]

#: An event row: id, session_id, seq, run_id, type, payload (JSON text), ts (aware datetime),
#: schema_version.
Row = tuple[Any, ...]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = timedelta(0)

EVENT_COLUMNS = "id, session_id, seq, run_id, type, payload, ts, schema_version"
EVENT_SELECT = "id, session_id, seq, run_id, type, payload, epoch_us(ts), schema_version"
SESSION_SELECT = "id, agent_id, status, metadata, tags, epoch_us(created_at), epoch_us(updated_at)"
RUN_SELECT = (
    "id, session_id, status, input, output, usage, cost, provider, model, stop_reason, error, "
    "idempotency_key, metadata, epoch_us(created_at), epoch_us(started_at), epoch_us(finished_at), "
    "owner, lease_token, epoch_us(lease_expires_at)"
)

#: Fixed cost charged per cached row or record besides its text, so byte budgets count the
#: Python objects too (a tuple, its strings and the dict entry holding it).
OVERHEAD = 320


def utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime for DuckDB (naive datetimes are taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.utcoffset() == _ZERO else value.astimezone(UTC)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


# -- events ---------------------------------------------------------------------------------


def event_row(event: Event, payload_json: str, seq: int) -> Row:
    """The row inserted for ``event`` at ``seq`` (``type`` as a plain str, as DuckDB returns it)."""
    return (
        event.id,
        event.session_id,
        seq,
        event.run_id,
        str.__str__(event.type),
        payload_json,
        utc(event.timestamp),
        event.schema_version,
    )


def row_size(row: Row) -> int:
    """Bytes a cached row costs, roughly (its payload and ids plus the object overhead)."""
    return OVERHEAD + len(row[5]) + len(row[0]) + len(row[1])


def event_from_tail(row: Row) -> Event:
    return event_from_row(row)


def event_from_db(row: Sequence[Any]) -> Event:
    """An event from a query selecting :data:`EVENT_SELECT` (ts as epoch microseconds)."""
    ident, session_id, seq, run_id, type_, payload, us, version = row
    return event_from_row((ident, session_id, seq, run_id, type_, payload, _dt(us), version))


def db_row(row: Sequence[Any]) -> Row:
    """A row from a query selecting :data:`EVENT_SELECT`, as the tail keeps it."""
    ident, session_id, seq, run_id, type_, payload, us, version = row
    return (ident, session_id, seq, run_id, type_, payload, _dt(us), version)


_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENTS_UNNEST = (
    f"INSERT INTO {LOG} SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), unnest($3::BIGINT[]), "
    "unnest($4::VARCHAR[]), unnest($5::VARCHAR[]), unnest($6::VARCHAR[]), "
    "unnest($7::TIMESTAMPTZ[]), unnest($8::INTEGER[]), unnest($9::BIGINT[]), unnest($10::BIGINT[])"
)
#: Up to this many rows go in as one plain VALUES insert: measured on duckdb 2.0, VALUES costs
#: less to bind for one or two rows, typed unnest lists much less from five rows on (a 25-row
#: unnest insert costs about 60 % of the same VALUES insert, 100 rows about 40 %).
_FEW_ROWS = 2


def insert_events(conn: duckdb.DuckDBPyConnection, rows: Sequence[Row], first_n: int) -> None:
    """Insert event rows into the log in one statement, numbered ``first_n``, ``first_n + 1``, ..."""
    if len(rows) <= _FEW_ROWS:
        sql = f"INSERT INTO {LOG} VALUES " + ", ".join([_EVENT_VALUES] * len(rows))
        conn.execute(sql, [v for i, row in enumerate(rows) for v in (*row, session_key(row[1]), first_n + i)])
    else:
        columns = [list(col) for col in zip(*rows, strict=True)]
        keys = [session_key(s) for s in columns[1]]
        conn.execute(_INSERT_EVENTS_UNNEST, [*columns, keys, list(range(first_n, first_n + len(rows)))])


# -- sessions and runs ----------------------------------------------------------------------


def session_params(s: Session) -> list[Any]:
    return [
        s.id,
        s.agent_id,
        SessionStatus(s.status).value,
        dumps(s.metadata),
        [str(t) for t in s.tags],
        utc(s.created_at),
        utc(s.updated_at),
    ]


def session_from_row(row: Sequence[Any]) -> Session:
    ident, agent_id, status, metadata, tags, created, updated = row
    try:
        return Session(
            id=ident,
            agent_id=agent_id,
            status=SessionStatus(status),
            metadata=loads(metadata),
            tags=tuple(tags or ()),
            created_at=_dt(created),  # type: ignore[arg-type]
            updated_at=_dt(updated),  # type: ignore[arg-type]
        )
    except (ValueError, TypeError) as exc:
        raise StoreCorruptError(f"stored session {ident!r} cannot be read: {exc}") from None


def _record(value: Any) -> str | None:
    return None if value is None else dumps(to_dict(value))


def run_params(run: Run) -> list[Any]:
    return [
        run.id,
        run.session_id,
        RunStatus(run.status).value,
        _record(run.input),
        _record(run.output),
        dumps(to_dict(run.usage)),
        run.cost,
        run.provider,
        run.model,
        run.stop_reason,
        None if run.error is None else dumps(run.error),
        run.idempotency_key,
        dumps(run.metadata),
        utc(run.created_at),
        utc(run.started_at),
        utc(run.finished_at),
        run.owner,
        run.lease_token,
        utc(run.lease_expires_at),
    ]


def run_from_row(row: Sequence[Any]) -> Run:
    (ident, session_id, status, input_, output, usage, cost, provider, model, stop_reason, error,
     key, metadata, created, started, finished, owner, token, expires) = row  # fmt: skip
    try:
        data = {
            "id": ident,
            "session_id": session_id,
            "status": status,
            "input": None if input_ is None else loads(input_),
            "output": None if output is None else loads(output),
            "usage": loads(usage),
            "cost": cost,
            "provider": provider,
            "model": model,
            "stop_reason": stop_reason,
            "error": None if error is None else loads(error),
            "idempotency_key": key,
            "metadata": loads(metadata),
            "created_at": _dt(created),
            "started_at": _dt(started),
            "finished_at": _dt(finished),
            "owner": owner,
            "lease_token": int(token or 0),
            "lease_expires_at": _dt(expires),
        }
        return from_dict(data, Run)
    except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
        raise StoreCorruptError(f"stored run {ident!r} cannot be read: {exc}") from None


def record_size(params: Sequence[Any]) -> int:
    """Bytes a cached record costs, roughly, from its row parameters."""
    return OVERHEAD + sum(len(p) for p in params if isinstance(p, str))


class Table:
    """Batched writes of whole records to a table keyed by ``id`` (its first column).

    A few rows are plain ``VALUES`` / one ``UPDATE ... WHERE id = ?`` each; more are one
    statement over typed ``unnest`` lists, whose cost barely grows with the number of rows.
    """

    FEW_INSERTS = 4
    FEW_UPDATES = 2

    def __init__(self, name: str, spec: str, fixed: Sequence[str] = ()) -> None:
        self.name = name
        columns = [c.split() for c in spec.split(", ")]
        self._values = "(" + ", ".join(f"?::{t}" for _, t in columns) + ")"
        unnest = ", ".join(f"unnest(${i}::{t}[]) AS {c}" for i, (c, t) in enumerate(columns, 1))
        self._insert_unnest = f"INSERT INTO {name} SELECT {unnest}"
        # Updates leave the fixed columns alone: DuckDB runs an UPDATE that sets an indexed
        # column as a delete and an insert (a run's update cost 6-9 ms here instead of 3-4).
        self._changing = [i for i, (c, _) in enumerate(columns) if i and c not in fixed]
        self._columns = columns
        self._updates: dict[tuple[int, ...], tuple[str, str]] = {}

    def _update_sql(self, changing: tuple[int, ...]) -> tuple[str, str]:
        """(one row's UPDATE, the unnest UPDATE) setting only the columns ``changing``."""
        got = self._updates.get(changing)
        if got is None:
            rest = [self._columns[i] for i in changing]
            sets = ", ".join(f"{c} = ?::{t}" for c, t in rest)
            one = f"UPDATE {self.name} SET {sets} WHERE id = ?"
            kept = [self._columns[0], *rest]
            unnest = ", ".join(f"unnest(${i}::{t}[]) AS {c}" for i, (c, t) in enumerate(kept, 1))
            sets = ", ".join(f"{c} = u.{c}" for c, _ in rest)
            many = f"UPDATE {self.name} SET {sets} FROM (SELECT {unnest}) AS u WHERE {self.name}.id = u.id"
            got = self._updates[changing] = (one, many)
        return got

    def insert(self, conn: duckdb.DuckDBPyConnection, rows: Sequence[Sequence[Any]]) -> None:
        if len(rows) <= self.FEW_INSERTS:
            sql = f"INSERT INTO {self.name} VALUES " + ", ".join([self._values] * len(rows))
            conn.execute(sql, [v for row in rows for v in row])
        else:
            conn.execute(self._insert_unnest, [list(col) for col in zip(*rows, strict=True)])

    def update(
        self,
        conn: duckdb.DuckDBPyConnection,
        rows: Sequence[Sequence[Any]],
        stored: Sequence[Sequence[Any] | None] | None = None,
    ) -> None:
        """Replace the stored rows with these (the writer knows they exist).

        ``stored``: each row as the file holds it now, where known (None: unknown). Only the
        columns that differ are set - a statement's cost grows with the columns it sets (a run's
        outcome sets 5 of 15: 0.8 ms instead of 1.3 here) - and a row that differs in none is
        left alone.
        """
        before = stored if stored is not None else [None] * len(rows)
        wanted: list[tuple[Sequence[Any], tuple[int, ...]]] = []
        for row, old in zip(rows, before, strict=True):
            differ = tuple(self._changing if old is None else (i for i in self._changing if row[i] != old[i]))
            if differ:
                wanted.append((row, differ))
        if not wanted:
            return
        if len(wanted) <= self.FEW_UPDATES:
            for row, cols in wanted:
                conn.execute(self._update_sql(cols)[0], [*(row[i] for i in cols), row[0]])
            return
        union = tuple(sorted({i for _, c in wanted for i in c}))  # unchanged columns are set to themselves
        kept = [[row[0] for row, _ in wanted], *([row[i] for row, _ in wanted] for i in union)]
        conn.execute(self._update_sql(union)[1], kept)


SESSIONS = Table(
    "sessions",
    "id VARCHAR, agent_id VARCHAR, status VARCHAR, metadata VARCHAR, tags VARCHAR[], created_at TIMESTAMPTZ, "
    "updated_at TIMESTAMPTZ",
)
RUNS = Table(
    "runs",
    "id VARCHAR, session_id VARCHAR, status VARCHAR, input VARCHAR, output VARCHAR, usage VARCHAR, cost DOUBLE, "
    "provider VARCHAR, model VARCHAR, stop_reason VARCHAR, error VARCHAR, idempotency_key VARCHAR, "
    "metadata VARCHAR, created_at TIMESTAMPTZ, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, "
    "owner VARCHAR, lease_token BIGINT, lease_expires_at TIMESTAMPTZ",
    fixed=RUN_FIXED,
)
