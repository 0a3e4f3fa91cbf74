"""Entry point of the ``asm-duckdb`` plugin: registers the ``duckdb`` store.

Thin on purpose: duckdb itself is imported only when the store is built.
"""

from __future__ import annotations

from typing import Any

import asm_kernel

from .settings import DuckDBSettings, build


@asm_kernel.hookimpl
def asm_register_stores(register: Any) -> None:
    register(
        "duckdb",
        build,
        settings=DuckDBSettings,
        description="durable embedded store: one DuckDB file, group commit (the default)",
    )


@asm_kernel.hookimpl
def asm_default_store(kernel: Any) -> str:
    """With asm-duckdb installed, a config without ``[store]`` keeps sessions in a DuckDB file."""
    return "duckdb"
