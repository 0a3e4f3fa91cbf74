"""Fixtures: a started kernel on each store this environment can offer.

``memory`` always runs. ``duckdb`` (a real file) runs when ``asm-duckdb`` is installed;
``postgres`` (``ASM_PG_DSN``, default ``postgresql://postgres@127.0.0.1:5432/test``, a fresh
schema per test) when ``asm-postgres`` is installed and the server answers. Otherwise those
cases skip and say why (``asm_kernel.testing.store_fixtures``).
"""

from __future__ import annotations

from agents import set_tracing_disabled

# The store fixtures, imported (not loaded with pytest_plugins, which only a rootdir conftest may use).
from asm_kernel.testing.store_fixtures import (  # noqa: F401
    asm_isolated_env,
    fresh_store,
    kernel,
    make_kernel,
    store_config,
)

set_tracing_disabled(True)  # no trace export without an API key
