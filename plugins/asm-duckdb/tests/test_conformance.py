"""The DuckDB store passes the kernel's store conformance suite unchanged, in both durability modes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from asm_kernel.testing import StoreConformance

from asm_duckdb.store import DuckDBStore


class TestDuckDBStore(StoreConformance):
    durable = True

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], DuckDBStore]:
        return lambda: DuckDBStore(tmp_path / "conformance.duckdb")


class TestDuckDBStoreFast(StoreConformance):
    """Write-behind mode honours the same contract (reads see every acknowledged append)."""

    durable = True

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Callable[[], DuckDBStore]:
        return lambda: DuckDBStore(tmp_path / "conformance-fast.duckdb", durability="fast")
