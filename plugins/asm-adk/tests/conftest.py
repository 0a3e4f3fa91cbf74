"""Fixtures: kernels on each store this environment can offer (``asm_kernel.testing.backends``),
and the ``session_service`` of the ported ADK contract tests: ADK's own InMemorySessionService
(the reference the ported tests are checked against) and AsmSessionService on each store.

``fresh_store`` makes a new, empty ``[store]`` table each time it is called (a new DuckDB file, a
new Postgres schema), since the conformance suite wants a fresh checkpointer per capability.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asm_kernel import Kernel
from asm_kernel.testing.backends import STORES, FreshStores, store_problem


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ASM_CONFIG", "ASM_DISABLE_PLUGIN_AUTOLOAD", "ASM_LOAD_PLUGINS", "ASM_DISABLED_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASM_HOME", str(tmp_path / "home"))


@pytest.fixture(params=STORES)
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FreshStores]:
    reason = store_problem(request.param)
    if reason is not None:
        pytest.skip(reason)
    stores = FreshStores(request.param, tmp_path)
    yield stores
    stores.drop()


@pytest.fixture
def store_config(fresh_store: FreshStores) -> dict[str, Any]:
    """One store; the same table reopens the same data."""
    return fresh_store()


@pytest.fixture
def make_kernel(store_config: dict[str, Any]) -> Callable[..., Kernel]:
    return lambda **kwargs: Kernel({"store": dict(store_config)}, **kwargs)


@pytest.fixture
async def kernel(make_kernel: Callable[..., Kernel]) -> AsyncIterator[Kernel]:
    async with make_kernel() as k:
        yield k


@pytest.fixture(params=["adk-reference", *STORES])
async def session_service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    from google.adk.sessions.in_memory_session_service import InMemorySessionService

    from asm_adk import AsmSessionService

    if request.param == "adk-reference":
        if request.node.get_closest_marker("asm_only"):
            pytest.skip("ADK's in-memory service does not detect stale sessions (its database service does)")
        yield InMemorySessionService()
        return
    reason = store_problem(request.param)
    if reason is not None:
        pytest.skip(reason)
    stores = FreshStores(request.param, tmp_path, prefix="adk")
    try:
        async with Kernel({"store": stores()}) as kernel:
            yield AsmSessionService(kernel)
    finally:
        stores.drop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "asm_only: a contract ADK's in-memory reference does not keep")
