"""Pytest fixtures that run a suite on every store this environment offers (a pytest plugin).

Import the fixtures into a ``conftest.py`` (``pytest_plugins`` works too, in a rootdir conftest)::

    from asm_kernel.testing.store_fixtures import asm_isolated_env, fresh_store, kernel, make_kernel, store_config

* ``asm_isolated_env`` (autouse): no ``ASM_CONFIG`` or plugin-selection variables from the
  caller's shell, and ``ASM_HOME`` in the test's ``tmp_path``;
* ``fresh_store``: parametrized over :data:`~asm_kernel.testing.backends.STORES` (skipped with the
  reason when one cannot be tested here); a :class:`~asm_kernel.testing.backends.FreshStores`
  that makes new, empty ``[store]`` tables, dropped after the test;
* ``store_config``: one such table; ``make_kernel(**kwargs)``: a kernel on it (the same table
  reopens the same data); ``kernel``: an open one.

Imported only by pytest: asm_kernel itself never imports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asm_kernel import Kernel
from asm_kernel.testing.backends import STORES, FreshStores, store_problem

__all__ = ["asm_isolated_env", "fresh_store", "store_config", "make_kernel", "kernel"]

_CALLER_VARIABLES = ("ASM_CONFIG", "ASM_DISABLE_PLUGIN_AUTOLOAD", "ASM_LOAD_PLUGINS", "ASM_DISABLED_PLUGINS")


@pytest.fixture(autouse=True)
def asm_isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _CALLER_VARIABLES:
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
    def make(**kwargs: Any) -> Kernel:
        return Kernel({"store": dict(store_config)}, **kwargs)

    return make


@pytest.fixture
async def kernel(make_kernel: Callable[..., Kernel]) -> AsyncIterator[Kernel]:
    async with make_kernel() as k:
        yield k
