"""The tables of an asm DuckDB file, their versions and the migrations between them.

``asm_meta`` records ``application = 'asm'`` and ``schema_version``. Opening a file:

* with no tables: the current schema is created;
* of an older version: it is migrated, each step in the same transaction as the version bump,
  so a crash mid-migration leaves the old version intact;
* of a newer version, or that is not an asm store: :class:`StoreCorruptError` naming the file.

Versions:

1. sessions, runs, events (``PRIMARY KEY (session_id, seq)``, unique ``id``), asm_meta.
2. runs gain ``owner``, ``lease_token``, ``lease_expires_at`` (store contract v2: run leases).
   Data written by version 1 could hold runs whose record and log disagree (a terminal record
   without its terminal event, or the reverse); the migration mends each with
   :func:`asm_kernel.recovery.repair_unit`, as ``kernel.runtime.repair()`` would.
3. The event table becomes the layout of :mod:`asm_duckdb.layout`: the log ``events_log`` (a
   row per event, numbered ``n``, its id unique) plus the sorted levels ``events_l1`` ..
   ``events_l3``; ``events`` is a view of every event. The migration moves every stored event
   into ``events_l3``, sorted by (skey, seq), and leaves each its merged row in the log.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import StorageError, StoreCorruptError
from asm_kernel.recovery import TERMINAL_TYPES, repair_unit
from asm_kernel.storage import check_batch
from asm_kernel.writes import WriteUnit

from .codec import EVENT_SELECT, RUN_SELECT, RUNS, event_from_db, event_row, run_from_row, run_params
from .layout import EVENT_TABLES, LEVEL_COLUMNS, LEVELS, LOG, LOG_DDL, MARK_KEY, VIEW, session_key
from .marks import FILE_ID_KEY

if TYPE_CHECKING:
    import duckdb

__all__ = ["SCHEMA_VERSION", "prepare", "expire_leases", "log_state"]

log = logging.getLogger("asm.duckdb")

#: Version of the tables below, kept in ``asm_meta``; a newer file is refused.
SCHEMA_VERSION = 3

_SCHEMA = [
    "CREATE TABLE asm_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE sessions (
        id VARCHAR PRIMARY KEY,
        agent_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        metadata VARCHAR NOT NULL,
        tags VARCHAR[] NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE runs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        input VARCHAR,
        output VARCHAR,
        usage VARCHAR NOT NULL,
        cost DOUBLE,
        provider VARCHAR,
        model VARCHAR,
        stop_reason VARCHAR,
        error VARCHAR,
        idempotency_key VARCHAR,
        metadata VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        owner VARCHAR,
        lease_token BIGINT NOT NULL DEFAULT 0,
        lease_expires_at TIMESTAMPTZ)""",
    "CREATE INDEX runs_session_idempotency ON runs (session_id, idempotency_key)",
    LOG_DDL,
    *(f"CREATE TABLE {t} ({LEVEL_COLUMNS})" for t in LEVELS),
    VIEW,
]
_TABLES = {"asm_meta", "sessions", "runs"}
#: Event tables by schema version (``events`` is a view from version 3 on).
_EVENT_TABLES = {1: {"events"}, 2: {"events"}, 3: set(EVENT_TABLES)}


def _migrate_1_to_2(conn: duckdb.DuckDBPyConnection) -> str:
    # DuckDB cannot add columns to a table an index depends on: drop it, alter, index again.
    conn.execute("DROP INDEX IF EXISTS runs_session_idempotency")
    conn.execute("ALTER TABLE runs ADD COLUMN owner VARCHAR")
    conn.execute("ALTER TABLE runs ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE runs ADD COLUMN lease_expires_at TIMESTAMPTZ")
    conn.execute("CREATE INDEX runs_session_idempotency ON runs (session_id, idempotency_key)")
    repaired = repair_runs(conn)
    return f"{repaired} run record(s) repaired to agree with their log" if repaired else "no repair needed"


def _migrate_2_to_3(conn: duckdb.DuckDBPyConnection) -> str:
    conn.execute(LOG_DDL)
    for level in LEVELS[:-1]:
        conn.execute(f"CREATE TABLE {level} ({LEVEL_COLUMNS})")
    # The keys are computed here, not in SQL: DuckDB's hash() is not promised to stay the same.
    ids = [r[0] for r in conn.execute("SELECT DISTINCT session_id FROM events").fetchall()]
    conn.execute("CREATE TEMP TABLE asm_skeys (session_id VARCHAR, skey BIGINT)")
    if ids:
        conn.execute(
            "INSERT INTO asm_skeys SELECT unnest($1::VARCHAR[]), unnest($2::BIGINT[])",
            [ids, [session_key(i) for i in ids]],
        )
    last = LEVELS[-1]
    conn.execute(
        f"CREATE TABLE {last} AS SELECT e.id, e.session_id, e.seq, e.run_id, e.type, e.payload, e.ts, "
        "e.schema_version, k.skey FROM events e JOIN asm_skeys k USING (session_id) ORDER BY k.skey, e.seq"
    )
    conn.execute(
        f"INSERT INTO {LOG} SELECT id, session_id, seq, NULL, NULL, NULL, NULL, NULL, skey, "
        f"row_number() OVER () FROM {last}"
    )
    moved = int(conn.execute(f"SELECT count(*) FROM {last}").fetchone()[0])  # type: ignore[index]
    conn.execute("INSERT OR REPLACE INTO asm_meta VALUES (?, ?)", [MARK_KEY, str(moved)])
    conn.execute("DROP TABLE asm_skeys")
    conn.execute("DROP INDEX IF EXISTS events_id")
    conn.execute("DROP TABLE events")
    conn.execute(VIEW)
    return f"{moved} event(s) of {len(ids)} session(s) moved into the sorted layout"


#: ``version -> step`` upgrading a file from that version to the next; returns what it did.
MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], str]] = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def repair_runs(conn: duckdb.DuckDBPyConnection) -> int:
    """Make every run's record agree with its log (see :func:`asm_kernel.recovery.repair_unit`).

    Runs inside the migration's transaction: one scan finds every terminal event, and each
    repair is applied directly (its conditions hold by construction: nothing else writes).
    """
    marks = ", ".join("?" * len(TERMINAL_TYPES))
    ends: dict[str, list[Any]] = defaultdict(list)
    rows = conn.execute(
        f"SELECT {EVENT_SELECT} FROM events WHERE run_id IS NOT NULL AND type IN ({marks}) ORDER BY session_id, seq",
        list(TERMINAL_TYPES),
    ).fetchall()
    for row in rows:
        ends[row[3]].append(event_from_db(row))
    repaired = 0
    for row in conn.execute(f"SELECT {RUN_SELECT} FROM runs ORDER BY created_at, id").fetchall():
        run = run_from_row(row)
        unit = repair_unit(run, ends.get(run.id, ()))
        if unit is not None:
            _apply(conn, unit)
            repaired += 1
    return repaired


def _apply(conn: duckdb.DuckDBPyConnection, unit: WriteUnit) -> None:
    for write in unit.runs:
        RUNS.update(conn, [run_params(write.run)])
    if unit.events:
        payloads = check_batch(unit.session_id, unit.events)
        got = conn.execute("SELECT coalesce(max(seq), 0) FROM events WHERE session_id = ?", [unit.session_id])
        last = int(got.fetchone()[0])  # type: ignore[index]
        pairs = enumerate(zip(unit.events, payloads, strict=True), 1)
        for i, (e, p) in pairs:  # the version 2 table: one per repaired run, rarely more
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(event_row(e, p, last + i)))


def _tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
        ).fetchall()
    }


def prepare(conn: duckdb.DuckDBPyConnection, where: str, *, read_only: bool) -> int:
    """Create or migrate the tables of the file at ``where``; returns the version it had.

    Raises :class:`StoreCorruptError` for a file that is not an asm store or is newer than this
    plugin, :class:`StorageError` when a read-only open finds an empty or outdated file.
    """
    import duckdb

    try:
        tables = _tables(conn)
        if not tables:
            if read_only:
                raise StorageError(
                    f"store file {where} is an empty DuckDB database, not an asm store",
                    hint="open it once without read_only to create the tables",
                    file=where,
                )
            conn.execute("BEGIN")
            for ddl in _SCHEMA:
                conn.execute(ddl)
            conn.execute(
                "INSERT INTO asm_meta VALUES ('application', 'asm'), ('schema_version', ?), ('created_at', ?), (?, ?)",
                [str(SCHEMA_VERSION), datetime.now(UTC).isoformat(), FILE_ID_KEY, uuid.uuid4().hex],
            )
            conn.execute("COMMIT")
            # The file's identity must not live only in the WAL: the marks file names it, and a
            # lost WAL would otherwise make the marks look like another database's.
            conn.execute("CHECKPOINT")
            return 0
        if "asm_meta" not in tables:
            shown = ", ".join(sorted(tables)[:5])
            raise StoreCorruptError(
                f"{where} is a DuckDB database but not an asm store (it has tables {shown} and no asm_meta)",
                hint="point store.path at a new file",
                file=where,
            )
        meta = dict(conn.execute("SELECT key, value FROM asm_meta").fetchall())
    except duckdb.Error as exc:
        raise StoreCorruptError(f"cannot read the asm tables of {where}: {exc}", file=where) from None
    if meta.get("application") != "asm":
        raise StoreCorruptError(f"{where} is not an asm store (asm_meta has no application = 'asm')", file=where)
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise StoreCorruptError(
            f"{where} has an unreadable schema_version {meta.get('schema_version')!r}", file=where
        ) from None
    if version > SCHEMA_VERSION:
        raise StoreCorruptError(
            f"{where} has store schema version {version}, newer than this asm-duckdb understands ({SCHEMA_VERSION})",
            hint="upgrade asm-duckdb (pip install -U asm-duckdb)",
            file=where,
            schema_version=version,
        )
    if version < 1 or not tables >= _TABLES | _EVENT_TABLES.get(version, set()):
        raise StoreCorruptError(
            f"{where} is an incomplete asm store (schema version {version}, tables {sorted(tables)})",
            hint="restore it from a backup",
            file=where,
        )
    if version < SCHEMA_VERSION and read_only:
        raise StorageError(
            f"store file {where} has schema version {version}; this asm-duckdb needs {SCHEMA_VERSION}",
            hint="open it once without read_only to upgrade it",
            file=where,
            schema_version=version,
        )
    for step in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN")
        try:
            did = MIGRATIONS[step](conn)
            conn.execute("UPDATE asm_meta SET value = ? WHERE key = 'schema_version'", [str(step + 1)])
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, duckdb.Error):
                raise StorageError(
                    f"upgrading {where} from store schema version {step} to {step + 1} failed: {exc}",
                    hint="the file is unchanged; check free disk space and permissions, then open it again",
                    file=where,
                ) from None
            raise
        log.warning("upgraded %s from store schema version %d to %d: %s", where, step, step + 1, did)
    if not read_only and not conn.execute("SELECT 1 FROM duckdb_views() WHERE view_name = 'events'").fetchone():
        conn.execute(VIEW)  # the view SQL users (and the id lookups) read; someone dropped it
        log.warning("%s: the events view was missing and is made again", where)
    return version


def expire_leases(conn: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """End every live lease: the file is exclusive to this process, so their holders are gone.

    Returns how many leases were ended. Recovery then finds those runs with
    ``list_runs(lease_expired=True)`` at once instead of after their lease would have run out.
    """
    got = conn.execute(
        "UPDATE runs SET lease_expires_at = ? WHERE lease_expires_at > ? RETURNING id", [now, now]
    ).fetchall()
    return len(got)


def log_state(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(merge mark, next log number) of an open file of the current version."""
    got = conn.execute("SELECT value FROM asm_meta WHERE key = ?", [MARK_KEY]).fetchone()
    mark = int(got[0]) if got else 0
    top = conn.execute(f"SELECT max(n) FROM {LOG} WHERE n > ?", [mark]).fetchone()
    last = mark if top is None or top[0] is None else int(top[0])
    return mark, last + 1
