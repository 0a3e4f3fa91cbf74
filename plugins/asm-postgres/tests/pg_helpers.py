"""Shared helpers of the asm-postgres tests: the server's DSN, a store per schema, admin SQL."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from asm_postgres import PostgresSettings, build
from asm_postgres.store import PostgresStore

#: The server the tests use; every test works in a schema of its own and drops it.
DSN = os.environ.get("ASM_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


class Context:
    """The bits of a component context a store factory reads."""

    name = "store"
    path = "store"
    home = Path("/tmp")
    config_dir = Path("/tmp")


def new_schema() -> str:
    return f"asm_test_{uuid.uuid4().hex[:12]}"


def store_for(schema: str, dsn: str = DSN, **settings: Any) -> PostgresStore:
    """A new, unopened store on ``schema`` (settings validated like the kernel's build does)."""
    return build(PostgresSettings(dsn=dsn, schema=schema, **settings), Context())


def admin(dsn: str = DSN) -> Any:
    """A synchronous autocommit connection for setting up and checking (the caller closes it)."""
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def sql(statement: str, params: Any = None, dsn: str = DSN) -> list[tuple[Any, ...]]:
    with admin(dsn) as conn:
        cur = conn.execute(statement, params)
        return list(cur.fetchall()) if cur.description else []


def drop_schema(schema: str, dsn: str = DSN) -> None:
    with admin(dsn) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def sql_holding(schema: str, run_id: str, dsn: str = DSN) -> Iterator[Callable[[], None]]:
    """Hold the row lock of run ``run_id`` in a transaction of another connection; yields release()."""
    with admin(dsn) as conn:
        conn.execute("BEGIN")
        conn.execute(f'SELECT 1 FROM "{schema}".runs WHERE id = %s FOR UPDATE', [run_id])
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                conn.execute("ROLLBACK")
                done = True

        try:
            yield release
        finally:
            release()
