"""asm's tables in a Postgres schema, and the versioned migrations that create and upgrade them.

``<schema>.asm_schema_version`` holds one row per applied migration. A store opening the schema
compares its highest version with :data:`LATEST`: equal is ready; lower is upgraded in place
(``auto_upgrade``, or ``asm db upgrade``), else refused with :class:`SchemaOutdatedError`; higher
means a newer asm-postgres migrated it, and this one refuses with :class:`SchemaTooNewError`
rather than write rows a newer reader does not expect. Migrations run in one transaction under
an advisory lock, so several workers starting at once upgrade the schema exactly once.

Sized for 100M events:

* ``events`` has the primary key ``(session_id, seq)``: a session's full read, a seq range and
  its last N events are range scans of that index (``ORDER BY seq DESC LIMIT n`` walks it
  backwards). ``id`` is unique store-wide (idempotent appends). No foreign key: every insert
  runs under its session's row lock after checking the session exists, and a foreign-key check
  per event row would tax the hottest path.
* ``sessions.last_seq`` is the seq counter: appends lock the session row and bump it, so seqs
  are assigned gapless in the inserting transaction. ``fillfactor = 70`` leaves room on each
  page so that bump is a HOT update (no index is touched: no indexed column changes).
* ``runs``: by session (``session_id, created_at, id``), by status (``status, created_at, id``:
  the run queue and recovery's scan of running runs), a partial unique index on
  ``(session_id, idempotency_key)``. Lease expiry is read through the status index (the
  running set is small); indexing ``lease_expires_at`` would make every lease renewal a non-HOT
  update of every index.
* Key columns use ``COLLATE "C"``: ids compare by bytes, as Python compares them, and cheaper
  than a linguistic collation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import field, frozen

from .conninfo import Target
from .errors import SchemaOutdatedError, SchemaTooNewError

__all__ = ["Migration", "MIGRATIONS", "LATEST", "SchemaStatus", "quote_ident", "read_version", "upgrade", "ensure"]


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (settings already restrict it to ``[a-z_][a-z0-9_]*``)."""
    return '"' + name.replace('"', '""') + '"'


def _statements(value: Sequence[str]) -> tuple[str, ...]:
    return tuple(value)


@frozen
class Migration:
    """One schema version: statements with ``{s}`` standing for the quoted schema name."""

    version: int
    description: str
    statements: tuple[str, ...] = field(converter=_statements)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions, runs and the event log with their indexes",
        [
            """CREATE TABLE {s}.sessions (
                id text COLLATE "C" PRIMARY KEY,
                agent_id text COLLATE "C" NOT NULL,
                status text NOT NULL,
                metadata json NOT NULL,
                tags text[] COLLATE "C" NOT NULL,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
            ) WITH (fillfactor = 70)""",
            "CREATE INDEX sessions_created ON {s}.sessions (created_at DESC, id DESC)",
            "CREATE INDEX sessions_status ON {s}.sessions (status, created_at DESC, id DESC)",
            "CREATE INDEX sessions_agent ON {s}.sessions (agent_id, created_at DESC, id DESC)",
            "CREATE INDEX sessions_tags ON {s}.sessions USING gin (tags)",
            """CREATE TABLE {s}.runs (
                id text COLLATE "C" PRIMARY KEY,
                session_id text COLLATE "C" NOT NULL REFERENCES {s}.sessions (id),
                status text NOT NULL,
                lease_token bigint NOT NULL DEFAULT 0,
                lease_expires_at timestamptz,
                created_at timestamptz NOT NULL,
                started_at timestamptz,
                finished_at timestamptz,
                cost double precision,
                owner text COLLATE "C",
                idempotency_key text COLLATE "C",
                provider text,
                model text,
                stop_reason text,
                input json,
                output json,
                usage json NOT NULL,
                error json,
                metadata json NOT NULL
            ) WITH (fillfactor = 80)""",
            "CREATE INDEX runs_session ON {s}.runs (session_id, created_at, id)",
            "CREATE INDEX runs_status ON {s}.runs (status, created_at, id)",
            "CREATE UNIQUE INDEX runs_idempotency ON {s}.runs (session_id, idempotency_key) "
            "WHERE idempotency_key IS NOT NULL",
            """CREATE TABLE {s}.events (
                session_id text COLLATE "C" NOT NULL,
                seq bigint NOT NULL CHECK (seq > 0),
                ts timestamptz NOT NULL,
                schema_version integer NOT NULL,
                id text COLLATE "C" NOT NULL,
                run_id text COLLATE "C",
                type text COLLATE "C" NOT NULL,
                payload json NOT NULL,
                PRIMARY KEY (session_id, seq)
            )""",
            "CREATE UNIQUE INDEX events_id ON {s}.events (id)",
        ],
    ),
)

#: The schema version this asm-postgres reads and writes.
LATEST = MIGRATIONS[-1].version


@frozen
class SchemaStatus:
    """What ``asm db status`` shows: the stored version beside the one this code needs."""

    schema: str
    exists: bool
    version: int
    latest: int
    pending: tuple[int, ...]
    history: tuple[tuple[int, str, str, str], ...] = ()  # (version, description, applied_at, by)

    @property
    def state(self) -> str:
        if not self.exists or self.version == 0:
            return "missing"
        if self.version > self.latest:
            return "too new"
        return "outdated" if self.pending else "current"


async def read_version(conn: Any, schema: str) -> int | None:
    """The schema's version: None when the schema does not exist, 0 when it holds no asm tables."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s), to_regclass(%s) IS NOT NULL",
        [schema, f"{quote_ident(schema)}.asm_schema_version"],
    )
    row = await cur.fetchone()
    exists, versioned = (bool(row[0]), bool(row[1])) if row else (False, False)
    if not exists:
        return None
    if not versioned:
        return 0
    cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {quote_ident(schema)}.asm_schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def status(conn: Any, schema: str, migrations: Sequence[Migration] = MIGRATIONS) -> SchemaStatus:
    version = await read_version(conn, schema)
    latest = migrations[-1].version
    history: list[tuple[int, str, str, str]] = []
    if version:
        cur = await conn.execute(
            f"SELECT version, description, applied_at, applied_by FROM {quote_ident(schema)}.asm_schema_version "
            "ORDER BY version"
        )
        history = [(int(v), str(d), a.isoformat(), str(b)) for v, d, a, b in await cur.fetchall()]
    current = version or 0
    return SchemaStatus(
        schema=schema,
        exists=version is not None,
        version=current,
        latest=latest,
        pending=tuple(m.version for m in migrations if m.version > current),
        history=tuple(history),
    )


def _too_new(version: int, latest: int, target: Target) -> SchemaTooNewError:
    return SchemaTooNewError(
        f"schema {target.schema!r} on {target.server}/{target.dbname} is at version {version}, newer than the "
        f"{latest} this asm-postgres knows",
        hint="upgrade asm-postgres in this environment (pip install -U asm-postgres); a newer schema is never "
        "downgraded",
        version=version,
        latest=latest,
    )


async def upgrade(
    conn: Any, target: Target, *, by: str, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Apply every missing migration in one transaction; returns (version before, version after).

    ``conn`` must be idle (not in a transaction). Creates the schema when it does not exist.
    """
    schema = target.schema
    s = quote_ident(schema)
    latest = migrations[-1].version
    async with conn.transaction():
        # One migrator per schema at a time; the others wait here and then find nothing to do.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"asm-postgres migrate {schema}"])
        before = await read_version(conn, schema)
        if before is None:
            await conn.execute(f"CREATE SCHEMA {s}")
        if not before:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.asm_schema_version (version integer PRIMARY KEY, "
                "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL)"
            )
        current = before or 0
        if current > latest:
            raise _too_new(current, latest, target)
        for migration in migrations:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                await conn.execute(statement.replace("{s}", s))
            await conn.execute(
                f"INSERT INTO {s}.asm_schema_version (version, description, applied_by) VALUES (%s, %s, %s)",
                [migration.version, migration.description, by],
            )
            current = migration.version
    return before or 0, current


async def ensure(
    conn: Any, target: Target, *, auto_upgrade: bool, by: str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Make sure the schema is at the latest version (upgrading it if allowed); returns it."""
    latest = migrations[-1].version
    version = await read_version(conn, target.schema)
    if version == latest:
        return latest
    if version is not None and version > latest:
        raise _too_new(version, latest, target)
    if not auto_upgrade:
        have = "does not exist" if version is None else f"is at version {version}"
        raise SchemaOutdatedError(
            f"schema {target.schema!r} on {target.server}/{target.dbname} {have}; this asm-postgres needs "
            f"version {latest}",
            hint="run `asm db upgrade` (or set store.auto_upgrade = true)",
            version=version or 0,
            latest=latest,
        )
    _, after = await upgrade(conn, target, by=by, migrations=migrations)
    return after
