"""Settings of the ``duckdb`` store and its factory (no duckdb import here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
from asm_kernel.errors import ConfigError

if TYPE_CHECKING:
    from .store import DuckDBStore

__all__ = ["DuckDBSettings", "build", "resolve_path", "DEFAULT_FILE"]

#: File name used under the asm home when ``path`` is not set.
DEFAULT_FILE = "sessions.duckdb"

_MEMORY_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(b|bytes|kb|mb|gb|tb|kib|mib|gib|tib|%)?\s*$", re.IGNORECASE)


@attrs.frozen
class DuckDBSettings:
    """``[store]`` keys when ``use = "duckdb"``.

    * ``path``: the database file; relative paths resolve against the config file's directory;
      unset means ``<asm home>/sessions.duckdb``.
    * ``durability``: ``"fast"`` (default) makes durability points, not per-event commits: a
      unit that writes a session or run record is awaited to its commit, while events alone
      under a run's lease (stream deltas, tool calls) and stream deltas are acknowledged once
      their seqs are assigned and committed with the next durability point, at most 50 ms
      later (write-behind); ``"safe"`` awaits the commit of every unit.
    * ``lock_timeout``: seconds to keep retrying while another process holds the file; unset
      means 0 (fail at once), or 10 when the store is built for a short-lived command (the CLI).
    * ``read_only``: open the file for reading only (writes are refused).
    * ``memory_limit`` / ``threads``: passed to DuckDB.
    * ``cache_bytes``: memory for the records the store keeps (session states, run records).
    * ``tail_bytes``: memory for recent events of recently used sessions (reads of them need no
      query; 10,000 live sessions with short logs fit in the default).
    * ``hot_events``: events kept in the unsorted hot table before they are merged into the
      sorted levels (:mod:`asm_duckdb.layout`); reads scan the hot table whole.
    * ``lean_planning``: plan statements without the DuckDB optimizers asm's own statements do
      not need (:data:`asm_duckdb.store.LEAN_DISABLED`); true by default. A DuckDB setting of
      the database, so other SQL on the store's DuckDB database plans without them too.
    """

    path: str | None = None
    durability: Literal["safe", "fast"] = "fast"
    lock_timeout: float | None = None
    read_only: bool = False
    memory_limit: str | None = None
    threads: int | None = None
    cache_bytes: int = 64 * 2**20
    tail_bytes: int = 128 * 2**20
    hot_events: int = 100_000
    lean_planning: bool = True


def _check(settings: DuckDBSettings, base: str) -> None:
    if settings.durability not in ("safe", "fast"):
        raise ConfigError(
            f"durability must be 'safe' or 'fast', got {settings.durability!r}",
            path=f"{base}.durability",
            hint="'fast' awaits a run's durability points and writes its other events behind; "
            "'safe' waits for every commit",
        )
    for key in ("cache_bytes", "tail_bytes"):
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"{key} must be a number of bytes >= 0, got {value!r}",
                path=f"{base}.{key}",
                hint="e.g. 67108864 for 64 MiB; 0 keeps nothing in memory",
            )
    hot = settings.hot_events
    if isinstance(hot, bool) or not isinstance(hot, int) or hot < 1:
        raise ConfigError(
            f"hot_events must be an integer >= 1, got {hot!r}",
            path=f"{base}.hot_events",
            hint="e.g. 100000 (the default): more makes merges rarer and cold reads slower",
        )
    timeout = settings.lock_timeout
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0 or timeout == float("inf")
    ):
        raise ConfigError(
            f"lock_timeout must be a finite number of seconds >= 0, got {timeout!r}",
            path=f"{base}.lock_timeout",
            hint="0 fails at once when another process holds the file; unset waits 10 s in asm commands",
        )
    for flag in ("read_only", "lean_planning"):
        value = getattr(settings, flag)
        if not isinstance(value, bool):
            raise ConfigError(f"{flag} must be true or false, got {value!r}", path=f"{base}.{flag}")
    if settings.threads is not None and (
        isinstance(settings.threads, bool) or not isinstance(settings.threads, int) or settings.threads < 1
    ):
        raise ConfigError(
            f"threads must be an integer >= 1, got {settings.threads!r}",
            path=f"{base}.threads",
            hint="leave it unset to let DuckDB use every core",
        )
    if settings.memory_limit is not None and (
        not isinstance(settings.memory_limit, str) or not _MEMORY_LIMIT.match(settings.memory_limit)
    ):
        raise ConfigError(
            f"memory_limit must be a size like '512MB' or '2GB', got {settings.memory_limit!r}",
            path=f"{base}.memory_limit",
        )
    if settings.path is not None and (not isinstance(settings.path, str) or not settings.path.strip()):
        raise ConfigError(
            f"path must be a non-empty file path, got {settings.path!r}",
            path=f"{base}.path",
            hint="leave it unset to use sessions.duckdb in the asm home",
        )
    if settings.path is not None and "\x00" in settings.path:
        raise ConfigError(
            "path holds a NUL character, which no file name can",
            path=f"{base}.path",
            hint='give the path of a file, e.g. path = "sessions.duckdb"',
        )
    if settings.path is not None and settings.path.strip() == ":memory:":
        raise ConfigError(
            "path ':memory:' keeps nothing; the duckdb store needs a file",
            path=f"{base}.path",
            hint='use `use = "memory"` for a store that keeps nothing',
        )


def resolve_path(settings: DuckDBSettings, context: Any) -> Path:
    if settings.path is None:
        return Path(context.home).expanduser() / DEFAULT_FILE
    path = Path(settings.path).expanduser()
    if not path.is_absolute():
        path = Path(context.config_dir) / path
    return path


def _lock_timeout(settings: DuckDBSettings, context: Any) -> float:
    if settings.lock_timeout is not None:
        return float(settings.lock_timeout)
    # A short command opens the file another process may hold for a moment: wait, visibly.
    return 10.0 if getattr(context, "short_lived", False) else 0.0


def build(settings: DuckDBSettings, context: Any) -> DuckDBStore:
    """The store factory: ``register("duckdb", build, settings=DuckDBSettings)``."""
    base = getattr(context, "path", None) or "store"
    if not isinstance(settings, DuckDBSettings):
        raise ConfigError(f"expected DuckDBSettings, got {type(settings).__name__}", path=base)
    _check(settings, base)
    from .store import DuckDBStore  # duckdb is imported only now

    return DuckDBStore(
        resolve_path(settings, context),
        durability=settings.durability,
        lock_timeout=_lock_timeout(settings, context),
        read_only=settings.read_only,
        memory_limit=settings.memory_limit,
        threads=settings.threads,
        cache_bytes=settings.cache_bytes,
        tail_bytes=settings.tail_bytes,
        hot_events=settings.hot_events,
        lean_planning=settings.lean_planning,
    )
