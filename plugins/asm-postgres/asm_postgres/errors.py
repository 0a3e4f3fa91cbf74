"""The Postgres store's errors, and the one mapping from psycopg's exceptions to them.

Every failure the server or the network causes reaches the caller as a
:class:`~asm_kernel.errors.StorageError` subclass that names the server, database and schema (a
:class:`~asm_postgres.conninfo.Target`, never the password), says what asm was doing, and how to
fix it. ``retryable`` is True where trying again can help (a restarting server, a dropped
connection, a statement timeout under contention), so the kernel's retry layer can act on it.

Connection failures carry no SQLSTATE (libpq reports them as text before a session exists), so
they are told apart by libpq's and the server's message wording; everything after connecting is
matched on psycopg's SQLSTATE classes.
"""

from __future__ import annotations

import re
from typing import Any

from asm_kernel.errors import StorageError, StoreCorruptError, StoreReadOnlyError

from .conninfo import Target, scrub

__all__ = [
    "PostgresError",
    "PostgresUnavailableError",
    "PostgresAuthError",
    "DatabaseMissingError",
    "PermissionDeniedError",
    "ConnectionLostError",
    "StatementTimeoutError",
    "SchemaTooNewError",
    "SchemaOutdatedError",
    "map_error",
    "connect_error",
    "START_HINT",
]

#: How to start the server on a Debian-style machine (the one this repository is tested on).
START_HINT = "start it (e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`)"


class PostgresError(StorageError):
    """A failure of the Postgres store that no more specific class describes."""

    code = "storage.postgres"


class PostgresUnavailableError(PostgresError):
    """The server cannot be reached, is starting or stopping, or has no connection free."""

    code = "storage.postgres_unavailable"
    retryable = True


class PostgresAuthError(PostgresError):
    """The server refused the login: wrong password, unknown role, or a role that may not log in."""

    code = "storage.postgres_auth"


class DatabaseMissingError(PostgresError):
    code = "storage.postgres_no_database"


class PermissionDeniedError(PostgresError):
    """The role lacks a privilege asm needs (create the schema, write its tables)."""

    code = "storage.postgres_permission_denied"


class ConnectionLostError(PostgresError):
    """The connection broke while asm used it. ``details["committed"]`` says what is known:
    ``"no"`` (it broke before the commit was sent: nothing was stored) or ``"unknown"`` (it broke
    while the commit was in flight: re-sending the same unit is safe, units are idempotent by their
    events' ids)."""

    code = "storage.postgres_connection_lost"
    retryable = True


class StatementTimeoutError(PostgresError):
    """A statement ran longer than ``statement_timeout`` and was cancelled; nothing was stored."""

    code = "storage.postgres_statement_timeout"
    retryable = True


class SchemaTooNewError(PostgresError):
    """The schema was migrated by a newer asm-postgres than this one."""

    code = "storage.postgres_schema_too_new"


class SchemaOutdatedError(PostgresError):
    """The schema is older than this asm-postgres and ``auto_upgrade`` is off."""

    code = "storage.postgres_schema_outdated"


_UNREACHABLE = re.compile(
    r"connection refused|could not connect|timeout expired|timed out|failed to resolve host|"
    r"could not translate host name|name or service not known|no route to host|network is unreachable|"
    r"no such file or directory|server closed the connection|the database system is (starting up|shutting down|"
    r"in recovery mode|not yet accepting)|connection timeout",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"password authentication failed|authentication failed|no password supplied|fe_sendauth|"
    r"role \"[^\"]*\" does not exist|is not permitted to log in|no pg_hba\.conf entry|pg_hba\.conf rejects",
    re.IGNORECASE,
)
_NO_DATABASE = re.compile(r"database \"[^\"]*\" does not exist", re.IGNORECASE)
_TOO_MANY = re.compile(r"too many (clients|connections)|remaining connection slots are reserved", re.IGNORECASE)


def _text(exc: BaseException) -> str:
    """The exception's message without its password and without libpq's prefix and line breaks."""
    text = scrub(str(exc)).strip()
    text = re.sub(r"^connection failed:\s*", "", text)
    return re.sub(r"\s+", " ", text)


def connect_error(exc: BaseException, target: Target) -> StorageError:
    """A failure to connect (or to get a pooled connection) as a typed error naming ``target``."""
    text = _text(exc)
    where = f"{target.server}/{target.dbname}"
    if type(exc).__name__ == "PoolTimeout":
        return PostgresUnavailableError(
            f"no connection to {where} became free in time: {text}",
            hint="raise store.pool_max_size or store.pool_timeout, or check the server is up (pg_isready)",
            host=target.host,
            database=target.dbname,
        )
    if _AUTH.search(text):
        return PostgresAuthError(
            f"the server at {target.server} refused the login of role {target.user!r} to database "
            f"{target.dbname!r}: {text}",
            hint="check the user and password (store.dsn, store.password, PGPASSWORD or ~/.pgpass) and the "
            "server's pg_hba.conf; the role needs LOGIN",
            host=target.host,
            database=target.dbname,
        )
    if _NO_DATABASE.search(text):
        return DatabaseMissingError(
            f"database {target.dbname!r} does not exist on {target.server}",
            hint=f"create it (createdb -h {target.host} -p {target.port} -U {target.user} {target.dbname}) "
            "or name an existing one in store.dsn",
            host=target.host,
            database=target.dbname,
        )
    if _TOO_MANY.search(text):
        return PostgresUnavailableError(
            f"{where} has no connection slot free: {text}",
            hint="lower store.pool_max_size across your processes or raise the server's max_connections",
            host=target.host,
            database=target.dbname,
        )
    if _UNREACHABLE.search(text) or type(exc).__name__ == "ConnectionTimeout":
        return PostgresUnavailableError(
            f"cannot reach PostgreSQL at {target.server} (database {target.dbname!r}): {text}",
            hint=f"is the server running and is store.dsn's host/port right? If it is local, {START_HINT}",
            host=target.host,
            database=target.dbname,
        )
    return PostgresError(
        f"cannot connect to {where}: {text}",
        hint="check store.dsn and the server log",
        host=target.host,
        database=target.dbname,
    )


def map_error(
    exc: BaseException,
    target: Target,
    *,
    during: str,
    committing: bool = False,
    statement_timeout: float | None = None,
) -> StorageError:
    """A psycopg exception raised while ``during`` (``"writing to session X"``) as a typed error.

    ``committing`` says the COMMIT was in flight, so the outcome of a lost connection is unknown.
    """
    import psycopg
    from psycopg import errors as pe

    if isinstance(exc, StorageError):
        return exc
    text = _text(exc)
    where = f"{target.server}/{target.dbname} (schema {target.schema})"
    fields: dict[str, Any] = {"host": target.host, "database": target.dbname, "schema": target.schema}
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        fields["sqlstate"] = sqlstate
    if type(exc).__name__ == "PoolTimeout":
        return connect_error(exc, target)
    if isinstance(exc, pe.QueryCanceled | pe.LockNotAvailable):
        limit = f" ({statement_timeout:g} s)" if statement_timeout else ""
        return StatementTimeoutError(
            f"{during} on {where} took longer than the statement timeout{limit} and was cancelled; "
            f"nothing of it was stored: {text}",
            hint="look for a long lock holder (pg_stat_activity), or raise store.statement_timeout",
            **fields,
        )
    if isinstance(exc, pe.InsufficientPrivilege):
        return PermissionDeniedError(
            f"role {target.user!r} lacks a privilege for {during} on {where}: {text}",
            hint=f"GRANT USAGE, CREATE ON SCHEMA {target.schema} TO {target.user} (and CREATE ON DATABASE "
            f"{target.dbname} to let asm create the schema), or connect as the schema's owner",
            **fields,
        )
    if isinstance(exc, pe.ReadOnlySqlTransaction):
        return StoreReadOnlyError(
            f"{where} accepts no writes (a standby or a read-only transaction): {text}",
            hint="point store.dsn at the primary (target_session_attrs=read-write)",
            **fields,
        )
    if isinstance(exc, pe.UndefinedTable | pe.InvalidSchemaName):
        return StoreCorruptError(
            f"asm's tables are missing from {where} while {during}: {text}",
            hint="the schema was dropped or renamed outside asm; run `asm db upgrade` to create it again",
            **fields,
        )
    if isinstance(exc, pe.DiskFull | pe.OutOfMemory | pe.TooManyConnections | pe.CannotConnectNow):
        return PostgresUnavailableError(
            f"{where} cannot serve {during} now: {text}", hint="check the server's disk, memory and logs", **fields
        )
    broken = isinstance(exc, pe.AdminShutdown | pe.CrashShutdown | pe.ConnectionFailure) or (
        isinstance(exc, psycopg.OperationalError) and not sqlstate
    )
    if broken:
        if committing:
            return ConnectionLostError(
                f"the connection to {where} broke while committing {during}; whether it was stored is "
                f"unknown: {text}",
                hint="sending the same write again is safe: units are idempotent by their events' ids",
                committed="unknown",
                **fields,
            )
        return ConnectionLostError(
            f"the connection to {where} broke during {during}; nothing of it was stored: {text}",
            hint="try again (the pool replaces the broken connection); if it keeps happening, check the "
            "server log and the network",
            committed="no",
            **fields,
        )
    return PostgresError(f"{during} on {where} failed: {text}", hint="see the server log for details", **fields)
