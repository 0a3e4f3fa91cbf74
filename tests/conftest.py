from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from asm_kernel import Kernel


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No test sees the developer's config, home or plugin switches."""
    for name in ("ASM_CONFIG", "ASM_DISABLE_PLUGIN_AUTOLOAD", "ASM_LOAD_PLUGINS", "ASM_DISABLED_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_kernel() -> Callable[..., Kernel]:
    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> Kernel:
        cfg = {"store": {"use": "memory"}, **(config or {})}
        return Kernel(cfg, **kwargs)

    return make


@pytest.fixture
async def kernel(make_kernel: Callable[..., Kernel]) -> AsyncIterator[Kernel]:
    async with make_kernel() as k:
        yield k


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Any:
    """Secrets a test registers (a canary, a fuzzed config) do not blank another test's output."""
    from asm_kernel import secrets

    redactor = secrets.default_redactor()
    saved = (redactor._values, redactor._pattern)
    yield
    redactor._values, redactor._pattern = saved
