"""End to end through asm's public API: Kernel (config → plugin → provider → fake server) and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asm_anthropic.models import MODELS
from asm_anthropic.testing import FakeAnthropic, text_block, thinking_block, tool_use_block

from asm_kernel import Kernel, RunStatus, ToolSpec
from asm_kernel.errors import InvalidRequestError, ProviderAuthError, ProviderOverloadedError
from asm_kernel.model import Usage
from asm_kernel.serialization import to_dict

SECRET = "sk-ant-api03-SECRET-do-not-leak-0123456789"


def config(fake: FakeAnthropic, attempts: int = 1, **provider: Any) -> dict[str, Any]:
    """One provider on the fake; the kernel's retries off unless ``attempts`` says otherwise."""
    entry = {"name": "claude", "use": "anthropic", "base_url": fake.url, "api_key": SECRET, **provider}
    return {"store": {"use": "memory"}, "providers": [entry], "resilience": {"max_attempts": attempts}}


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


class Weather:
    spec = ToolSpec("get_weather", "Weather for a city",
                    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, input: dict[str, Any]) -> str:
        self.calls.append(input)
        return f"{input['city']}: 18C, sunny"


async def test_run_records_streamed_received_and_usage_with_cost(fake_anthropic: FakeAnthropic) -> None:
    usage = {"input_tokens": 1200, "output_tokens": 300, "cache_creation_input_tokens": 1000,
             "cache_read_input_tokens": 5000}
    fake_anthropic.reply_text("Hello from Claude.", usage=usage, chunk=6)
    async with Kernel(config(fake_anthropic)) as kernel:
        result = await kernel.run_once("Say hello")
        events = await kernel.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED and result.output == "Hello from Claude."
    assert result.provider == "claude" and result.model == "claude-sonnet-5-5"
    assert result.stop_reason == "end_turn"
    streamed = [e.payload["text"] for e in events if e.type == "message_streamed"]
    assert "".join(streamed) == "Hello from Claude." and len(streamed) == 3
    received = next(e for e in events if e.type == "message_received")
    assert received.payload["message"]["content"] == [{"text": "Hello from Claude.", "type": "text"}]
    assert received.payload["provider"] == "claude" and received.payload["stop_reason"] == "end_turn"
    usage_event = next(e for e in events if e.type == "token_usage_updated")
    expected = Usage(1200, 300, 1000, 5000)
    assert usage_event.payload["usage"] == to_dict(expected)
    price = MODELS["claude-sonnet-5-5"].price
    assert usage_event.payload["cost"] == pytest.approx(price.cost(expected))
    assert usage_event.payload["cost"] == pytest.approx((1200 * 2 + 300 * 10 + 1000 * 2.5 + 5000 * 0.1) / 1e6)
    assert result.cost == pytest.approx(usage_event.payload["cost"])
    assert types(events)[-1] == "run_completed"


async def test_multi_turn_tool_use_with_thinking(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply(
        [thinking_block("Need the weather tool.", "sig-turn-1"), text_block("Let me look."),
         tool_use_block("get_weather", {"city": "Paris"}, id="toolu_A")],
        stop_reason="tool_use", usage={"input_tokens": 50, "output_tokens": 20},
    )
    fake_anthropic.reply_text("It is 18C and sunny in Paris.", usage={"input_tokens": 90, "output_tokens": 12})
    tool = Weather()
    async with Kernel(config(fake_anthropic, thinking_budget=1024), tools=[tool]) as kernel:
        result = await kernel.run_once("Weather in Paris?", system="Be brief.")
        events = await kernel.sessions.events(result.session_id)
    assert tool.calls == [{"city": "Paris"}]
    assert result.output == "It is 18C and sunny in Paris."
    assert result.usage == Usage(140, 32)
    first, second = fake_anthropic.requests[0].body, fake_anthropic.requests[1].body
    assert first["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                               "input_schema": Weather.spec.input_schema}]
    assert first["system"] == "Be brief." and first["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert second["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Need the weather tool.", "signature": "sig-turn-1"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_A", "content": "Paris: 18C, sunny"},
        ]},
    ]
    kinds = types(events)
    assert kinds.count("message_received") == 2 and kinds.count("token_usage_updated") == 2
    assert "thinking_streamed" in kinds
    started = next(e for e in events if e.type == "tool_call_started")
    assert started.payload == {"tool_use_id": "toolu_A", "name": "get_weather", "input": {"city": "Paris"},
                               "source": "test_anthropic_kernel"}


async def test_unserved_tool_call_is_returned_pending(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_tool_use("search", {"q": "asm"}, id="toolu_P")
    fake_anthropic.reply_text("Thanks, done.")
    async with Kernel(config(fake_anthropic)) as kernel:
        result = await kernel.run_once("find asm", tools=[ToolSpec("search")])
        assert [c.id for c in result.pending_tool_calls] == ["toolu_P"]
        from asm_kernel.model import ToolResultBlock

        follow = await kernel.run(result.session_id, [ToolResultBlock("toolu_P", "no results", is_error=True)])
    assert follow.output == "Thanks, done."
    last = fake_anthropic.requests[-1].body["messages"][-1]
    assert last == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_P", "content": "no results", "is_error": True}]}


async def test_failed_run_is_recorded(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_error(400, "invalid_request_error", "messages: roles must alternate")
    async with Kernel(config(fake_anthropic)) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(InvalidRequestError):
            await kernel.run(session.id, "hi")
        events = await kernel.sessions.events(session.id)
        runs = await kernel.sessions.runs(session.id)
    assert types(events)[-2:] == ["error_occurred", "run_failed"]
    error = events[-1].payload["error"]
    assert error["code"] == "provider.invalid_request" and error["status"] == 400
    assert error["provider"] == "claude" and "roles must alternate" in error["message"]
    assert runs[0].status is RunStatus.FAILED


async def test_kernel_retries_an_overload_honouring_retry_after(fake_anthropic: FakeAnthropic) -> None:
    # The adapter never retries; the kernel's one retry layer does, with the server's retry-after.
    fake_anthropic.reply_error(529, "overloaded_error", "Overloaded", headers={"retry-after": "0.2"})
    fake_anthropic.reply_text("second time lucky")
    async with Kernel(config(fake_anthropic, attempts=2)) as kernel:
        result = await kernel.run_once("hi")
        events = await kernel.sessions.events(result.session_id)
    assert result.output == "second time lucky" and len(fake_anthropic.requests) == 2
    failed = next(e for e in events if e.type == "provider_attempt_failed")
    assert failed.payload["error"]["code"] == "provider.overloaded"
    assert failed.payload["error"]["retry_after"] == 0.2
    scheduled = next(e for e in events if e.type == "retry_scheduled")
    assert scheduled.payload["delay"] >= 0.2


async def test_mid_stream_overload_fails_the_run_with_output_started(fake_anthropic: FakeAnthropic) -> None:
    reply = fake_anthropic.reply_text("partial words here", chunk=4)
    reply.error_at = 5
    async with Kernel(config(fake_anthropic)) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(ProviderOverloadedError) as info:
            await kernel.run(session.id, "hi")
        events = await kernel.sessions.events(session.id)
    assert info.value.output_started is True
    failed = events[-1]
    assert failed.type == "run_failed" and failed.payload["error"]["output_started"] is True
    assert failed.payload["error"]["retryable"] is True
    assert "message_received" not in types(events)  # nothing partial pretends to be complete


async def test_truncated_stream_fails_the_run(fake_anthropic: FakeAnthropic) -> None:
    reply = fake_anthropic.reply_text("cut short", chunk=3)
    reply.end_at = 4
    async with Kernel(config(fake_anthropic)) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(Exception, match="message_stop"):
            await kernel.run(session.id, "hi")
        events = await kernel.sessions.events(session.id)
    assert events[-1].type == "run_failed"
    assert events[-1].payload["error"]["code"] == "provider.bad_response"
    assert "message_received" not in types(events)


async def test_missing_key_fails_the_run_not_the_kernel(fake_anthropic: FakeAnthropic, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    cfg = config(fake_anthropic)
    del cfg["providers"][0]["api_key"]
    async with Kernel(cfg) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(ProviderAuthError) as info:
            await kernel.run(session.id, "hi")
        events = await kernel.sessions.events(session.id)
    assert "ANTHROPIC_API_KEY" in str(info.value) and "providers[0].api_key" in str(info.value)
    assert events[-1].type == "run_failed" and events[-1].payload["error"]["code"] == "provider.auth"
    assert fake_anthropic.requests == []


async def test_key_from_env_interpolation(fake_anthropic: FakeAnthropic, monkeypatch) -> None:
    monkeypatch.setenv("MY_CLAUDE_KEY", "interpolated-key")
    fake_anthropic.api_key = "interpolated-key"
    fake_anthropic.reply_text("ok")
    async with Kernel(config(fake_anthropic, api_key="${MY_CLAUDE_KEY}")) as kernel:
        assert (await kernel.run_once("hi")).output == "ok"


async def test_secrets_never_leak(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.api_key = "a-different-key"  # the configured key is rejected: a 401
    async with Kernel(config(fake_anthropic)) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(ProviderAuthError) as info:
            await kernel.run(session.id, "hi")
        events = await kernel.sessions.events(session.id)
        provider = kernel.providers["claude"]
        texts = [repr(provider), repr(provider.settings), str(info.value), repr(info.value),
                 json.dumps(info.value.to_dict()), json.dumps(kernel.config.masked())]
        texts += [json.dumps(to_dict(e), default=str) for e in events]
    assert all(SECRET not in t for t in texts)
    assert "providers[0].api_key" in str(info.value)


async def test_unknown_model_is_allowed_with_conservative_info(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_text("from the future")
    async with Kernel(config(fake_anthropic, model="claude-future-9")) as kernel:
        provider = kernel.providers["claude"]
        info = next(m for m in provider.models if m.name == "claude-future-9")
        assert info.price is None and info.context_window == 200_000
        result = await kernel.run_once("hi")
    assert result.output == "from the future" and result.model == "claude-future-9"
    assert result.cost is None
    assert fake_anthropic.last.body["model"] == "claude-future-9"


async def test_model_override_prices_a_new_model(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_text("priced", usage={"input_tokens": 1_000_000, "output_tokens": 1_000_000})
    overrides = {"claude-next": {"context_window": 500_000, "max_output_tokens": 32_000,
                                 "input_price": 1.0, "output_price": 2.0}}
    async with Kernel(config(fake_anthropic, model="claude-next", models=overrides)) as kernel:
        result = await kernel.run_once("hi")
    assert result.cost == pytest.approx(3.0)


# -- the CLI -------------------------------------------------------------------------------------

ASM = Path(sys.executable).parent / "asm"


def _asm(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASM", "ANTHROPIC"))}
    env.update(env_extra or {})
    env["ASM_HOME"] = str(tmp_path / "home")
    return subprocess.run([str(ASM), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def _toml(fake: FakeAnthropic, tmp_path: Path) -> Path:
    path = tmp_path / "asm.toml"
    path.write_text(
        '[store]\nuse = "memory"\n\n[resilience]\nmax_attempts = 1\n\n'
        '[[providers]]\nname = "claude"\nuse = "anthropic"\n'
        f'base_url = "{fake.url}"\napi_key = "${{CLI_TEST_KEY}}"\nmodel = "claude-haiku-4-5"\n'
    )
    return path


@pytest.mark.skipif(not ASM.exists(), reason="the asm command is not installed in this environment")
def test_cli_run_json(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.reply_text("CLI says hi.", usage={"input_tokens": 15, "output_tokens": 4})
    cfg = _toml(fake_anthropic, tmp_path)
    proc = _asm(tmp_path, "run", "hello", "--provider", "claude", "--json", "--config", str(cfg),
                env_extra={"CLI_TEST_KEY": SECRET})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "completed" and data["output"] == "CLI says hi."
    assert data["provider"] == "claude" and data["usage"]["input_tokens"] == 15
    assert data["session_id"].startswith("ses_") and data["run_id"].startswith("run_")
    assert fake_anthropic.last.body["model"] == "claude-haiku-4-5"
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.skipif(not ASM.exists(), reason="the asm command is not installed in this environment")
def test_cli_error_is_one_line(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    fake_anthropic.reply_error(529, "overloaded_error", "Overloaded")
    cfg = _toml(fake_anthropic, tmp_path)
    proc = _asm(tmp_path, "run", "hello", "--provider", "claude", "--json", "--config", str(cfg),
                env_extra={"CLI_TEST_KEY": SECRET})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout
    data = json.loads(proc.stdout)  # with --json a failed run is still one JSON object
    assert data["status"] == "failed" and data["error"]["code"] == "provider.overloaded"
    assert data["error"]["request_id"] == fake_anthropic.last.request_id
    fake_anthropic.reply_error(529, "overloaded_error", "Overloaded")
    proc = _asm(tmp_path, "run", "hello", "--provider", "claude", "--config", str(cfg),
                env_extra={"CLI_TEST_KEY": SECRET})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "provider.overloaded" in proc.stderr and SECRET not in proc.stderr


@pytest.mark.skipif(not ASM.exists(), reason="the asm command is not installed in this environment")
def test_cli_missing_key_names_the_variable(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    cfg = _toml(fake_anthropic, tmp_path)
    proc = _asm(tmp_path, "run", "hello", "--provider", "claude", "--config", str(cfg))
    assert proc.returncode != 0
    assert "CLI_TEST_KEY" in proc.stderr and "Traceback" not in proc.stderr
