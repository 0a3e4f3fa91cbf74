from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from serve_helpers import KEYS, ServerThread


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's config, home, plugin switches or server."""
    for name in ("ASM_CONFIG", "ASM_DISABLE_PLUGIN_AUTOLOAD", "ASM_LOAD_PLUGINS", "ASM_DISABLED_PLUGINS",
                 "ASM_URL", "ASM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    """A server without API keys (loopback only) on the memory store, with a slow echo provider."""
    with ServerThread() as srv:
        yield srv


@pytest.fixture
def keyed_server() -> Iterator[ServerThread]:
    """A server with an operator key and two tenant keys (see serve_helpers.KEYS)."""
    with ServerThread(serve={"keys": KEYS}) as srv:
        yield srv


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where tests leave files for people (screenshots): $ASM_SERVE_ARTIFACTS (tox sets it), else a tmp dir."""
    given = os.environ.get("ASM_SERVE_ARTIFACTS")
    path = Path(given) if given else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_report_header(config: Any) -> str:
    return f"asm-serve artifacts: {os.environ.get('ASM_SERVE_ARTIFACTS', '(a pytest tmp dir)')}"
