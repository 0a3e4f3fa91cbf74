"""Which asm stores this environment can test on, and why not when it cannot."""

from __future__ import annotations

import importlib.util
import os

STORES = ["memory", "duckdb", "postgres"]
DSN = os.environ.get("ASM_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def problem(name: str) -> str | None:
    """None when store ``name`` can be tested here, else the reason it cannot."""
    if name == "memory":
        return None
    if name == "duckdb":
        if importlib.util.find_spec("asm_duckdb") is None:
            return "asm-duckdb is not installed in this environment"
        from asm_duckdb.store import DuckDBStore

        if not hasattr(DuckDBStore, "commit"):
            return "the installed asm-duckdb does not implement store contract v2 yet (no DuckDBStore.commit)"
        return None
    if name == "postgres":
        if importlib.util.find_spec("asm_postgres") is None:
            return "asm-postgres is not installed in this environment"
        try:
            import psycopg

            with psycopg.connect(DSN, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            return f"PostgreSQL is unreachable at ASM_PG_DSN: {type(exc).__name__}"
        return None
    return f"unknown store {name!r}"


def durable_problem() -> tuple[str | None, str]:
    """(store, reason): the first durable store that can be tested here, or (None, why not)."""
    reasons = []
    for name in ("duckdb", "postgres"):
        reason = problem(name)
        if reason is None:
            return name, ""
        reasons.append(f"{name}: {reason}")
    return None, "no durable store to kill -9 against: " + "; ".join(reasons)


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
