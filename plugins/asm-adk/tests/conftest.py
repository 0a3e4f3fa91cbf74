"""Fixtures: kernels on each store this environment can offer (``asm_kernel.testing.store_fixtures``:
``fresh_store``, ``store_config``, ``make_kernel``, ``kernel``), and the ``session_service`` of
the ported ADK contract tests: ADK's own InMemorySessionService (the reference the ported tests
are checked against) and AsmSessionService on each store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asm_kernel import Kernel
from asm_kernel.testing.backends import STORES, FreshStores, store_problem

# The store fixtures, imported (not loaded with pytest_plugins, which only a rootdir conftest may use).
from asm_kernel.testing.store_fixtures import (  # noqa: F401
    asm_isolated_env,
    fresh_store,
    kernel,
    make_kernel,
    store_config,
)


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
