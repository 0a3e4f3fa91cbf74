"""Entry point of the ``asm-postgres`` plugin: the ``postgres`` store and the ``asm db`` commands.

Thin on purpose: psycopg and psycopg_pool are imported only when a store is built.
"""

from __future__ import annotations

from typing import Any

import asm_kernel

from .settings import PostgresSettings, build


@asm_kernel.hookimpl
def asm_register_stores(register: Any) -> None:
    register(
        "postgres",
        build,
        settings=PostgresSettings,
        description="shared store on PostgreSQL: many processes and machines, LISTEN/NOTIFY, a shared run queue",
    )


@asm_kernel.hookimpl
def asm_register_commands(cli: Any) -> None:
    from .cli import register_commands

    register_commands(cli)
