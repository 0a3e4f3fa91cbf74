"""Factories learn whether they are built for a short-lived command (the CLI) or a long-running process."""

from __future__ import annotations

from typing import Any

import pytest

from asm_kernel import Kernel, hookimpl
from asm_kernel.builtin.echo import EchoProvider


class _Recorder:
    seen: list[bool] = []

    @staticmethod
    @hookimpl
    def asm_register_providers(register: Any) -> None:
        def build(settings: Any, ctx: Any) -> EchoProvider:
            _Recorder.seen.append(ctx.short_lived)
            return EchoProvider(name=ctx.name)

        register("recorded", build)


@pytest.mark.parametrize("short_lived", [True, False])
def test_factories_are_told_whether_the_kernel_is_short_lived(short_lived: bool) -> None:
    _Recorder.seen = []
    cfg = {"store": {"use": "memory"}, "providers": [{"use": "recorded"}]}
    Kernel(cfg, plugins=[_Recorder()], short_lived=short_lived)._build_all()
    assert _Recorder.seen == [short_lived]


@pytest.mark.parametrize(
    ("settings", "short_lived", "expected"),
    [({}, True, 10.0), ({}, False, 0.0), ({"lock_timeout": 0}, True, 0.0), ({"lock_timeout": 2.5}, True, 2.5)],
)
def test_the_duckdb_store_waits_for_a_held_file_only_when_short_lived_and_unset(
    settings: dict[str, Any], short_lived: bool, expected: float
) -> None:
    pytest.importorskip("asm_duckdb")
    kernel = Kernel({"store": {"use": "duckdb", **settings}}, short_lived=short_lived)
    kernel._build_all()
    assert kernel.store.lock_timeout == expected  # type: ignore[attr-defined]
