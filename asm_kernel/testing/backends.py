"""The stores a test or benchmark environment offers, fresh ``[store]`` tables on them, and a
child process to kill -9.

For suites that run the same cases on every store (the framework adapters' tests and
benchmarks do): ``memory`` always; ``duckdb`` (a real file) when asm-duckdb is installed;
``postgres`` (``ASM_PG_DSN``, default ``postgresql://postgres@127.0.0.1:5432/test``, a fresh
schema per table, dropped after) when asm-postgres is installed and the server answers.
Otherwise :func:`store_problem` says why, for the suite to skip with.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "STORES",
    "postgres_dsn",
    "store_problem",
    "durable_store",
    "FreshStores",
    "drop_schema",
    "kill_after_acks",
]

STORES: tuple[str, ...] = ("memory", "duckdb", "postgres")
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    """``ASM_PG_DSN``, or the local test server."""
    return os.environ.get("ASM_PG_DSN", DEFAULT_PG_DSN)


def store_problem(name: str) -> str | None:
    """None when store ``name`` can be tested here, else the reason it cannot."""
    if name == "memory":
        return None
    if name == "duckdb":
        if importlib.util.find_spec("asm_duckdb") is None:
            return "asm-duckdb is not installed in this environment"
        return None
    if name == "postgres":
        if importlib.util.find_spec("asm_postgres") is None:
            return "asm-postgres is not installed in this environment"
        try:
            import psycopg

            with psycopg.connect(postgres_dsn(), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            return f"PostgreSQL is unreachable at ASM_PG_DSN: {type(exc).__name__}"
        return None
    return f"unknown store {name!r}"


def durable_store() -> tuple[str | None, str]:
    """(store, reason): the first durable store that can be tested here, or (None, why not)."""
    reasons = []
    for name in ("duckdb", "postgres"):
        reason = store_problem(name)
        if reason is None:
            return name, ""
        reasons.append(f"{name}: {reason}")
    return None, "no durable store to kill -9 against: " + "; ".join(reasons)


class FreshStores:
    """Makes new, empty ``[store]`` tables of store ``name``: a new DuckDB file in ``directory``,
    a new Postgres schema named ``<prefix>_<random>``. The same table reopens the same data;
    :meth:`drop` removes the schemas made.
    """

    def __init__(self, name: str, directory: Path, *, prefix: str = "t") -> None:
        if name not in STORES:
            raise ValueError(f"unknown store {name!r}; one of {', '.join(STORES)}")
        self.name = name
        self.directory = directory
        self.prefix = prefix
        self.schemas: list[str] = []

    def __call__(self) -> dict[str, Any]:
        if self.name == "memory":
            return {"use": "memory"}
        if self.name == "duckdb":
            return {"use": "duckdb", "path": str(self.directory / f"{self.prefix}-{uuid.uuid4().hex[:8]}.duckdb")}
        self.schemas.append(f"{self.prefix}_{uuid.uuid4().hex[:12]}")
        return {"use": "postgres", "dsn": postgres_dsn(), "schema": self.schemas[-1]}

    def drop(self) -> None:
        while self.schemas:
            drop_schema(self.schemas.pop())


def drop_schema(schema: str) -> None:
    """Drop a Postgres schema and everything in it (a test's, when it is done)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def kill_after_acks(argv: Sequence[str], acks: int, *, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv``, read its ``ACK <n>`` lines, kill -9 it once ``acks`` were printed.

    The child prints (and flushes) ``ACK <n>`` after its ``n``-th write (from 0) was
    acknowledged, so the parent knows exactly what was acknowledged when the signal landed.
    Returns the last ``n`` read (-1 for none): fewer than ``acks`` means the child stopped first.
    """
    child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True, env=dict(env) if env is not None else None)
    acked = -1
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked = int(line.split()[1])
            if acked + 1 >= acks:
                break
        child.send_signal(signal.SIGKILL)  # mid-write: the child is storing its next one
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    return acked
