"""asm-duckdb: asm's durable embedded store, one DuckDB file per asm home.

Importing this package does not import duckdb; :mod:`asm_duckdb.store` does, and the store
factory imports it only when a store is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import DuckDBSettings, build

if TYPE_CHECKING:
    from .store import DuckDBStats, DuckDBStore, MemoryUse

__all__ = ["DuckDBSettings", "DuckDBStore", "DuckDBStats", "MemoryUse", "build", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("DuckDBStore", "DuckDBStats", "MemoryUse"):
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module 'asm_duckdb' has no attribute {name!r}")
