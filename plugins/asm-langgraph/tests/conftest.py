"""Fixtures: kernels on each store this environment can offer (see store_configs.py).

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
