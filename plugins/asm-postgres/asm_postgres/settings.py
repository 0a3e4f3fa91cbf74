"""Settings of the ``postgres`` store and its factory (psycopg is imported only by the factory)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Literal

import attrs
from asm_kernel.errors import ConfigError
from asm_kernel.secrets import Secret

if TYPE_CHECKING:
    from .store import PostgresStore

__all__ = ["PostgresSettings", "build", "SCHEMA_NAME"]

#: Schema names asm accepts: plain lower-case identifiers that need no quoting anywhere, short
#: enough for the notification channel name (``asm_<schema>``, at most 63 bytes).
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,58}$")
_APP_NAME = re.compile(r"^[\x20-\x7e]{1,48}$")


def _dsn_repr(value: str | None) -> str:
    if value is None:
        return "None"
    from .conninfo import scrub

    return repr(scrub(value))


def _secret(value: Secret | str | None) -> Secret | None:
    """A password given as a plain string (the Python API) becomes a :class:`Secret` too."""
    return Secret(value) if isinstance(value, str) else value


@attrs.frozen
class PostgresSettings:
    """``[store]`` keys when ``use = "postgres"`` (docs/plugins/postgres.md has the details).

    * ``dsn``: a libpq URL (``postgresql://asm@db.internal:5432/asm``) or key=value string;
      unset, libpq's ``PG*`` environment variables (``PGHOST``, ``PGUSER``, ``PGDATABASE``...)
      and ``~/.pgpass`` apply. Prefer ``dsn = "${ASM_PG_DSN}"`` (interpolated values are
      masked by ``asm config show``) or a password kept out of the DSN.
    * ``password``: the password, kept out of the DSN (masked everywhere as a secret).
    * ``schema``: the Postgres schema asm's tables live in; created when missing.
    * ``pool_min_size`` / ``pool_max_size``: connections this process keeps / may open (plus
      one for live subscriptions once something waits); ``pool_timeout``: seconds to wait for
      a free one.
    * ``connect_timeout``: seconds to wait for the server when connecting.
    * ``statement_timeout``: seconds any statement may run (0: no limit); a unit cancelled by it
      stores nothing.
    * ``auto_upgrade``: migrate an older schema when the store opens; false refuses to open it
      until ``asm db upgrade`` ran.
    * ``durability``: ``"safe"`` waits for every commit's WAL flush; ``"fast"`` commits units
      made only of stream deltas without waiting for it (a server crash may lose the last
      fraction of a second of deltas, never a run's start or outcome).
    * ``application_name``: how asm's connections appear in ``pg_stat_activity``.
    """

    dsn: str | None = attrs.field(default=None, repr=_dsn_repr)
    password: Secret | None = attrs.field(default=None, converter=_secret)
    schema: str = "asm"
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout: float = 30.0
    connect_timeout: float = 10.0
    statement_timeout: float = 30.0
    auto_upgrade: bool = True
    durability: Literal["safe", "fast"] = "safe"
    application_name: str = "asm"


def _seconds(value: Any, path: str, *, zero: bool, hint: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        need = ">= 0" if zero else "> 0"
        raise ConfigError(f"must be a finite number of seconds {need}, got {value!r}", path=path, hint=hint)
    return float(value)


def _size(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise ConfigError(f"must be an integer from 0 to 1000, got {value!r}", path=path)
    return value


def check(settings: PostgresSettings, base: str = "store") -> None:
    """Refuse settings no store can use, with the path of the key at fault."""
    if not isinstance(settings.schema, str) or not SCHEMA_NAME.match(settings.schema):
        raise ConfigError(
            f"must be a lower-case identifier of at most 59 characters, got {settings.schema!r:.80}",
            path=f"{base}.schema",
            hint='letters a-z, digits and "_", not starting with a digit, e.g. "asm" or "asm_staging"',
        )
    if settings.schema.startswith("pg_"):
        raise ConfigError("names starting with pg_ are reserved by PostgreSQL", path=f"{base}.schema")
    low = _size(settings.pool_min_size, f"{base}.pool_min_size")
    high = _size(settings.pool_max_size, f"{base}.pool_max_size")
    if high < 1 or low > high:
        raise ConfigError(
            f"pool_max_size ({high}) must be >= 1 and >= pool_min_size ({low})",
            path=f"{base}.pool_max_size",
            hint="every process opens at most pool_max_size + 1 connections; keep the sum under max_connections",
        )
    _seconds(settings.pool_timeout, f"{base}.pool_timeout", zero=False, hint="how long to wait for a free connection")
    _seconds(settings.connect_timeout, f"{base}.connect_timeout", zero=False, hint="e.g. 10")
    _seconds(settings.statement_timeout, f"{base}.statement_timeout", zero=True, hint="0 turns the limit off")
    if not isinstance(settings.auto_upgrade, bool):
        raise ConfigError(f"must be true or false, got {settings.auto_upgrade!r}", path=f"{base}.auto_upgrade")
    if settings.durability not in ("safe", "fast"):
        raise ConfigError(
            f"must be 'safe' or 'fast', got {settings.durability!r}",
            path=f"{base}.durability",
            hint="'safe' waits for every commit to be flushed; 'fast' writes stream deltas without waiting",
        )
    if not isinstance(settings.application_name, str) or not _APP_NAME.match(settings.application_name):
        raise ConfigError("must be 1-48 printable ASCII characters", path=f"{base}.application_name")
    if settings.dsn is not None and (not isinstance(settings.dsn, str) or not settings.dsn.strip()):
        raise ConfigError(
            "must be a non-empty connection string",
            path=f"{base}.dsn",
            hint="leave it unset to use the PG* environment variables",
        )


def build(settings: PostgresSettings, context: Any) -> PostgresStore:
    """The store factory: ``register("postgres", build, settings=PostgresSettings)``."""
    base = getattr(context, "path", None) or "store"
    if not isinstance(settings, PostgresSettings):
        raise ConfigError(f"expected PostgresSettings, got {type(settings).__name__}", path=base)
    check(settings, base)
    from .conninfo import resolve  # psycopg is imported from here on
    from .store import PostgresStore

    conninfo = resolve(
        settings.dsn,
        schema=settings.schema,
        password=settings.password.reveal() if settings.password else None,
        application_name=settings.application_name,
        path=base,
    )
    return PostgresStore(
        conninfo,
        pool_min_size=settings.pool_min_size,
        pool_max_size=settings.pool_max_size,
        pool_timeout=settings.pool_timeout,
        connect_timeout=settings.connect_timeout,
        statement_timeout=settings.statement_timeout,
        auto_upgrade=settings.auto_upgrade,
        durability=settings.durability,
        application_name=settings.application_name,
    )
