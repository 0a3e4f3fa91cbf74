"""Fixtures: kernels on each store this environment can offer (see store_configs.py), and the
``session_service`` of the ported ADK contract tests: ADK's own InMemorySessionService (the
reference the ported tests are checked against) and AsmSessionService on each store.

``fresh_store`` makes a new, empty ``[store]`` table each time it is called (a new DuckDB file, a
new Postgres schema), since the conformance suite wants a fresh checkpointer per capability.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asm_kernel import Kernel

sys.path.insert(0, str(Path(__file__).parent))

from store_configs import DSN, STORES, drop_schema, problem


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ASM_CONFIG", "ASM_DISABLE_PLUGIN_AUTOLOAD", "ASM_LOAD_PLUGINS", "ASM_DISABLED_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASM_HOME", str(tmp_path / "home"))


@pytest.fixture(params=STORES)
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], dict[str, Any]]]:
    name: str = request.param
    reason = problem(name)
    if reason is not None:
        pytest.skip(reason)
    schemas: list[str] = []

    def make() -> dict[str, Any]:
        if name == "memory":
            return {"use": "memory"}
        if name == "duckdb":
            return {"use": "duckdb", "path": str(tmp_path / f"{uuid.uuid4().hex[:8]}.duckdb")}
        schemas.append(f"t_{uuid.uuid4().hex[:12]}")
        return {"use": "postgres", "dsn": DSN, "schema": schemas[-1]}

    yield make
    for schema in schemas:
        drop_schema(schema)


@pytest.fixture
def store_config(fresh_store: Callable[[], dict[str, Any]]) -> dict[str, Any]:
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
    reason = problem(request.param)
    if reason is not None:
        pytest.skip(reason)
    config: dict[str, Any] = {"use": "memory"}
    if request.param == "duckdb":
        config = {"use": "duckdb", "path": str(tmp_path / "adk.duckdb")}
    elif request.param == "postgres":
        config = {"use": "postgres", "dsn": DSN, "schema": f"t_{uuid.uuid4().hex[:12]}"}
    try:
        async with Kernel({"store": config}) as kernel:
            yield AsmSessionService(kernel)
    finally:
        if request.param == "postgres":
            drop_schema(config["schema"])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "asm_only: a contract ADK's in-memory reference does not keep")
