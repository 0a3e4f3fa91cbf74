"""Fixtures: the real local server (see pg_helpers.DSN) and one fresh schema per test.

When the server cannot be reached the tests skip with how to start it - except in CI (the
``CI`` environment variable is set), where that is a failure: a CI run that skipped every
Postgres test would prove nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pg_helpers import DSN, START, admin, drop_schema, new_schema


def _problem() -> str | None:
    try:
        with admin() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        from asm_postgres.conninfo import scrub

        return scrub(str(exc)).strip().replace("\n", " ")
    return None


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    problem = _problem()
    if problem is not None:
        message = f"PostgreSQL is unreachable at ASM_PG_DSN ({DSN}): {problem}. Start it: {START}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    schema = new_schema()
    yield schema
    drop_schema(schema)
