"""One short prompt against the real Anthropic API. Opt-in: runs only with ANTHROPIC_API_KEY set."""

from __future__ import annotations

import os

import pytest

from asm_kernel import Kernel, RunStatus

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("ANTHROPIC_API_KEY"), reason="set ANTHROPIC_API_KEY to run live tests"),
]


async def test_live_short_prompt() -> None:
    model = os.environ.get("ASM_ANTHROPIC_LIVE_MODEL", "claude-haiku-4-5")
    config = {"store": {"use": "memory"},
              "providers": [{"name": "claude", "use": "anthropic", "model": model, "max_tokens": 64}]}
    async with Kernel(config) as kernel:
        result = await kernel.run_once("Reply with exactly the word: pong")
        events = await kernel.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED
    assert "pong" in result.output.lower()
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.cost is not None and result.cost > 0
    assert "message_streamed" in [e.type for e in events]
