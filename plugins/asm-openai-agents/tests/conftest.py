"""Fixtures: a started kernel on each store this environment can offer.

``memory`` always runs. ``duckdb`` (a real file) runs when ``asm-duckdb`` is installed;
``postgres`` (``ASM_PG_DSN``, default ``postgresql://postgres@127.0.0.1:5432/test``, a fresh
schema per test) when ``asm-postgres`` is installed and the server answers. Otherwise those
cases skip and say why (``asm_kernel.testing.backends``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import set_tracing_disabled
from asm_kernel import Kernel
from asm_kernel.testing.backends import STORES, FreshStores, store_problem

set_tracing_disabled(True)  # no trace export without an API key


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ASM_CONFIG", "ASM_DISABLE_PLUGIN_AUTOLOAD", "ASM_LOAD_PLUGINS", "ASM_DISABLED_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASM_HOME", str(tmp_path / "home"))


@pytest.fixture(params=STORES)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The ``[store]`` table of one store; the same table reopens the same data."""
    reason = store_problem(request.param)
    if reason is not None:
        pytest.skip(reason)
    stores = FreshStores(request.param, tmp_path)
    yield stores()
    stores.drop()


@pytest.fixture
def make_kernel(store_config: dict[str, Any]) -> Callable[..., Kernel]:
    def make(**kwargs: Any) -> Kernel:
        return Kernel({"store": dict(store_config)}, **kwargs)

    return make


@pytest.fixture
async def kernel(make_kernel: Callable[..., Kernel]) -> AsyncIterator[Kernel]:
    async with make_kernel() as k:
        yield k
