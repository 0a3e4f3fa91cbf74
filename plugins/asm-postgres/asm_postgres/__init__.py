"""asm-postgres: asm's shared store on PostgreSQL (psycopg 3 + psycopg_pool).

Importing this package does not import psycopg; :mod:`asm_postgres.store` does, and the store
factory imports it only when a store is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import PostgresSettings, build

if TYPE_CHECKING:
    from .store import PostgresStats, PostgresStore

__all__ = ["PostgresSettings", "PostgresStore", "PostgresStats", "build", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("PostgresStore", "PostgresStats"):
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module 'asm_postgres' has no attribute {name!r}")
