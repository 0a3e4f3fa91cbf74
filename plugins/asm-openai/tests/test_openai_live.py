"""Opt-in: one short prompt against the real OpenAI API (set OPENAI_API_KEY; costs a fraction of a cent)."""

from __future__ import annotations

import os

import pytest
from asm_kernel import Kernel, RunStatus

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="set OPENAI_API_KEY to run live tests"),
]

MODEL = os.environ.get("ASM_OPENAI_LIVE_MODEL", "gpt-5.4-mini")


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_one_short_prompt(api: str) -> None:
    cfg = {"store": {"use": "memory"}, "providers": [{"name": "gpt", "use": "openai", "api": api, "model": MODEL}]}
    async with Kernel(cfg) as kernel:
        result = await kernel.run_once("Reply with the single word: pong", max_tokens=200)
    assert result.status is RunStatus.COMPLETED
    assert "pong" in result.output.lower()
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.cost is not None and result.cost > 0
