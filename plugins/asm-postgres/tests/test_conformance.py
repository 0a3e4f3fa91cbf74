"""The Postgres store passes the kernel's store conformance suite unchanged, in both durability modes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from asm_kernel.testing import StoreConformance
from pg_helpers import store_for

from asm_postgres.store import PostgresStore


class TestPostgresStore(StoreConformance):
    durable = True

    @pytest.fixture
    def make_store(self, pg_schema: str) -> Callable[[], PostgresStore]:
        return lambda: store_for(pg_schema)


class TestPostgresStoreFast(StoreConformance):
    """Stream deltas committed without waiting for the WAL flush honour the same contract."""

    durable = True

    @pytest.fixture
    def make_store(self, pg_schema: str) -> Callable[[], PostgresStore]:
        return lambda: store_for(pg_schema, durability="fast")
