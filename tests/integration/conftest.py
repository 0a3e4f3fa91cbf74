"""Integration tests need every first-party plugin; they skip without them, except in the
`integration` tox env (ASM_REQUIRE_INTEGRATION=1), where a missing plugin is a failure."""

from __future__ import annotations

import importlib.util
import os

import pytest

REQUIRED = ("asm_duckdb", "asm_anthropic", "asm_openai", "asm_serve", "asm_mcp")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if os.environ.get("ASM_REQUIRE_INTEGRATION") == "1":
        raise pytest.UsageError(f"integration env is missing plugins: {', '.join(missing)}")
    skip = pytest.mark.skip(reason=f"needs the first-party plugins installed (missing: {', '.join(missing)})")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)
