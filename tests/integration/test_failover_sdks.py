"""Routing and failover across the two real SDK plugins, over HTTP, against their fake servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asm_kernel import Kernel, RunStatus
from asm_kernel.errors import ProviderOverloadedError


@pytest.fixture
def claude() -> Iterator[Any]:
    from asm_anthropic.testing import FakeAnthropic

    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def gpt() -> Iterator[Any]:
    from asm_openai.testing import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


def config(claude: Any, gpt: Any, **extra: Any) -> dict[str, Any]:
    return {
        "store": {"use": "memory"},
        "providers": [
            {"name": "claude", "use": "anthropic", "base_url": claude.url, "api_key": "sk-ant-test",
             "model": "claude-sonnet-5-5"},
            {"name": "gpt", "use": "openai", "api": "chat", "base_url": gpt.base_url, "api_key": "sk-test",
             "model": "gpt-5.4-mini"},
        ],
        "router": {"use": "capability", "prefer": ["claude", "gpt"], "sticky": False},
        "resilience": {"max_attempts": 2, "initial_backoff": 0.01, "max_backoff": 0.05},
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "etype"),
    [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error")],
)
async def test_first_provider_fails_second_answers(claude: Any, gpt: Any, status: int, etype: str) -> None:
    claude.reply_error(status, etype, "try later", headers={"retry-after": "0"})
    claude.reply_error(status, etype, "still not")
    gpt.reply_text("answered by gpt")
    async with Kernel(config(claude, gpt)) as k:
        result = await k.run_once("hello")
        events = await k.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED and result.output == "answered by gpt" and result.provider == "gpt"
    # One retry layer: exactly max_attempts requests at the failing server, one at the other.
    assert len(claude.requests) == 2 and len(gpt.requests) == 1
    kinds = [e.type for e in events]
    assert kinds.count("provider_attempt_failed") == 2 and "provider_failover" in kinds
    failover = next(e for e in events if e.type == "provider_failover")
    assert failover.payload["from"] == "claude" and failover.payload["to"] == "gpt"
    received = next(e for e in events if e.type == "message_received")
    assert received.payload["provider"] == "gpt"


async def test_connection_reset_before_output_fails_over(claude: Any, gpt: Any) -> None:
    from asm_anthropic.testing import Reply

    claude.push(Reply(content=[{"type": "text", "text": "never seen"}], drop_at=0))
    claude.push(Reply(content=[{"type": "text", "text": "never seen"}], drop_at=0))
    gpt.reply_text("gpt here")
    async with Kernel(config(claude, gpt)) as k:
        result = await k.run_once("hello")
    assert result.provider == "gpt" and result.output == "gpt here"


async def test_no_failover_once_output_reached_the_caller(claude: Any, gpt: Any) -> None:
    from asm_anthropic.testing import Reply

    # Overloaded error arrives mid-stream, after text deltas were streamed.
    claude.push(Reply(content=[{"type": "text", "text": "a long partial answer"}], chunk=4, error_at=6))
    async with Kernel(config(claude, gpt)) as k:
        session = await k.sessions.create()
        with pytest.raises(ProviderOverloadedError) as info:
            await k.run(session.id, "hello")
        events = await k.sessions.events(session.id)
    assert info.value.output_started
    assert len(claude.requests) == 1 and not gpt.requests
    assert [e.type for e in events][-1] == "run_failed"


async def test_transcript_moves_between_providers(claude: Any, gpt: Any) -> None:
    claude.reply_thinking("let me think", "four", signature="c2lnbmF0dXJl")
    gpt.reply_text("and eight")
    async with Kernel(config(claude, gpt)) as k:
        first = await k.run_once("2+2?", provider="claude")
        second = await k.run(first.session_id, "double it", provider="gpt")
    assert (first.output, second.output) == ("four", "and eight")
    sent = gpt.requests[0].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert "four" in str(sent[1]["content"]) and "let me think" not in str(sent)


async def test_breaker_opens_on_a_failing_provider(claude: Any, gpt: Any) -> None:
    for _ in range(2):
        claude.reply_error(529, "overloaded_error", "busy")
    gpt.reply_text("one")
    gpt.reply_text("two")
    cfg = config(claude, gpt, resilience={"max_attempts": 1, "breaker_threshold": 1, "breaker_cooldown": 60})
    async with Kernel(cfg) as k:
        s = await k.sessions.create()
        assert (await k.run(s.id, "a")).output == "one"
        assert (await k.run(s.id, "b")).output == "two"  # claude skipped: its breaker is open
        skipped = await k.sessions.events(s.id, types=["provider_skipped"])
    assert len(claude.requests) == 1 and skipped[0].payload["provider"] == "claude"
