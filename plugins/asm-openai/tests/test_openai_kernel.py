"""End to end through asm's public API: Kernel, sessions, events, tools, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from asm_kernel import Kernel, RunStatus, ToolSpec
from asm_kernel.errors import ConfigError, ProviderConnectionError, ProviderServerError
from openai_helpers import ALL_CAPS, TEST_KEY

from asm_openai.testing import FakeOpenAI, Reasoning, Reply, Text, ToolCall


def config(fake: FakeOpenAI, api: str = "chat", **extra: Any) -> dict[str, Any]:
    provider = {"name": "gpt", "use": "openai", "api": api, "base_url": fake.base_url, "api_key": TEST_KEY, **extra}
    return {"store": {"use": "memory"}, "providers": [provider]}


async def test_run_once_streams_and_records_everything(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(Reply([Text("Hello, asm!")], input_tokens=100, cached_tokens=40, output_tokens=5))
    cfg = config(
        fake_openai,
        api,
        models={
            "gpt-5.4-mini": {
                "context_window": 400000,
                "max_output_tokens": 128000,
                "input_price": 1.0,
                "output_price": 10.0,
                "cached_input_price": 0.1,
            }
        },
    )
    async with Kernel(cfg) as kernel:
        result = await kernel.run_once("Say hello")
        events = await kernel.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED
    assert result.output == "Hello, asm!" and result.provider == "gpt" and result.stop_reason == "end_turn"
    assert result.usage.input_tokens == 60 and result.usage.cache_read_input_tokens == 40
    # 60 * $1 + 40 * $0.1 + 5 * $10 per million tokens
    assert result.cost == pytest.approx((60 * 1.0 + 40 * 0.1 + 5 * 10.0) / 1e6)
    types = [e.type for e in events]
    assert types.count("message_received") == 1 and "token_usage_updated" in types and types[-1] == "run_completed"
    streamed = "".join(e.payload["text"] for e in events if e.type == "message_streamed")
    assert streamed == "Hello, asm!"
    dumped = json.dumps([e.payload for e in events], default=str)
    assert TEST_KEY not in dumped


async def test_tool_loop_with_a_kernel_tool(fake_openai: FakeOpenAI, api: str) -> None:
    calls: list[dict[str, Any]] = []

    class Weather:
        spec = ToolSpec(
            "get_weather",
            "Weather for a city",
            {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        )

        async def __call__(self, input: dict[str, Any]) -> str:
            calls.append(input)
            return f"sunny in {input['city']}"

    fake_openai.enqueue(
        Reply([Reasoning("Need weather."), ToolCall("get_weather", {"city": "Oslo"}, call_id="call_w1")]),
        Reply([Text("It is sunny in Oslo.")]),
    )
    async with Kernel(
        config(fake_openai, api, capabilities=ALL_CAPS, include_encrypted_reasoning=True), tools=[Weather()]
    ) as kernel:
        result = await kernel.run_once("Weather in Oslo?")
        events = await kernel.sessions.events(result.session_id)
    assert calls == [{"city": "Oslo"}]
    assert result.output == "It is sunny in Oslo." and result.status is RunStatus.COMPLETED
    assert [e.type for e in events].count("tool_call_completed") == 1
    first, second = (r.body for r in fake_openai.requests)
    assert first["tools"][0]["function" if api == "chat" else "name"]
    if api == "chat":
        assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny in Oslo"}
        assert second["messages"][-2]["tool_calls"][0]["id"] == "call_w1"
    else:
        kinds = [item.get("type", "message") for item in second["input"]]
        assert kinds == ["message", "reasoning", "function_call", "function_call_output"]
        assert second["input"][1]["encrypted_content"].startswith("gAAAA")  # replayed unchanged
        assert second["input"][-1] == {"type": "function_call_output", "call_id": "call_w1", "output": "sunny in Oslo"}


async def test_structured_output_through_the_kernel(fake_openai: FakeOpenAI, api: str) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    fake_openai.enqueue(Reply([Text('{"n": 4}')]))
    async with Kernel(config(fake_openai, api, capabilities=ALL_CAPS)) as kernel:
        result = await kernel.run_once("2+2 as JSON", response_schema=schema)
    assert json.loads(result.output) == {"n": 4}
    body = fake_openai.last_request.body
    fmt = body["response_format"]["json_schema"] if api == "chat" else body["text"]["format"]
    assert fmt["schema"] == schema and fmt["strict"] is True


async def test_a_mid_stream_failure_is_recorded_on_the_run(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(
        Reply(
            [Text("partial answer here", chunk_size=2)],
            error_after=7,
            error={"type": "server_error", "code": "server_error", "message": "boom"},
        )
    )
    async with Kernel(config(fake_openai, api)) as kernel:
        with pytest.raises(ProviderServerError) as info:
            await kernel.run_once("hi")
        session_id = info.value.details["session_id"]
        events = await kernel.sessions.events(session_id)
        run = await kernel.sessions.get_run(info.value.details["run_id"])
    assert run.status is RunStatus.FAILED
    assert run.error["code"] == "provider.server_error" and run.error["output_started"] is True
    failed = [e for e in events if e.type == "run_failed"]
    assert failed and failed[0].payload["error"]["message"].endswith("boom")
    assert not any(e.type == "message_received" for e in events)  # nothing partial pretends to be complete


async def test_a_dropped_stream_fails_the_run(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(Reply([Text("abcdef", chunk_size=1)], drop_after=5))
    async with Kernel(config(fake_openai, api)) as kernel:
        with pytest.raises(ProviderConnectionError):
            await kernel.run_once("hi")


async def test_cancelling_a_run_ends_it_cancelled_and_closes_the_stream(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(Reply([Text("y" * 300, chunk_size=1)], delay=0.02))
    async with Kernel(config(fake_openai, api)) as kernel:
        session = await kernel.sessions.create()
        streamed = asyncio.Event()

        async def consume() -> None:
            async for event in kernel.sessions.stream_run(session.id, "long answer please"):
                if getattr(event, "type", None) == "message_streamed":
                    streamed.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(streamed.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        runs = await kernel.sessions.runs(session.id)
    assert runs[0].status is RunStatus.CANCELLED
    assert await asyncio.to_thread(fake_openai.wait_for, lambda f: f.disconnects >= 1, 3.0)


async def test_missing_key_for_openai_names_env_var_and_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = {"store": {"use": "memory"}, "providers": [{"name": "echo", "use": "echo"}, {"name": "gpt", "use": "openai"}]}
    with pytest.raises(ConfigError) as info:
        async with Kernel(cfg):
            pass
    assert "OPENAI_API_KEY" in str(info.value) and info.value.path == "providers[1].api_key"


@pytest.mark.parametrize(
    ("settings", "path", "fragment"),
    [
        ({"api": "assistants"}, "providers[0].api", "'responses' | 'chat'"),
        ({"read_timeout": 0}, "providers[0].read_timeout", "greater than 0"),
        ({"base_url": "localhost:8000"}, "providers[0].base_url", "http://"),
        ({"modle": "x"}, "providers[0].modle", 'did you mean "model"'),
        ({"models": {"m": {"context_window": "big"}}}, "providers[0].models.m.context_window", "integer"),
    ],
)
async def test_bad_settings_are_config_errors_with_a_path(settings: dict[str, Any], path: str, fragment: str) -> None:
    cfg = {"store": {"use": "memory"}, "providers": [{"name": "gpt", "use": "openai", "api_key": "k", **settings}]}
    with pytest.raises(ConfigError) as info:
        async with Kernel(cfg):
            pass
    assert info.value.path == path and fragment in str(info.value)


def _run_cli(tmp_path: Path, fake: FakeOpenAI, *args: str, api: str = "chat") -> subprocess.CompletedProcess[str]:
    (tmp_path / "asm.toml").write_text(
        '[store]\nuse = "memory"\n\n[[providers]]\nname = "gpt"\nuse = "openai"\n'
        f'api = "{api}"\nbase_url = "{fake.base_url}"\napi_key = "${{MY_OPENAI_KEY}}"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "MY_OPENAI_KEY": TEST_KEY, "ASM_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, "-m", "asm_kernel.cli", *args, "--config", str(tmp_path / "asm.toml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def _cli_available() -> bool:
    try:
        import asm_kernel.cli  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _cli_available(), reason="asm_kernel.cli is not there yet")
def test_cli_run_json(tmp_path: Path, fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(Reply([Text("Hi from the CLI")], input_tokens=9, output_tokens=4))
    proc = _run_cli(tmp_path, fake_openai, "run", "hello", "--provider", "gpt", "--json", api=api)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "completed" and data["output"] == "Hi from the CLI" and data["provider"] == "gpt"
    assert data["usage"]["input_tokens"] == 9 and data["usage"]["output_tokens"] == 4
    assert fake_openai.last_request.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert TEST_KEY not in proc.stdout + proc.stderr


@pytest.mark.skipif(not _cli_available(), reason="asm_kernel.cli is not there yet")
def test_cli_failed_run_reports_the_typed_error_without_the_key(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_error(401, f"Incorrect API key provided: {TEST_KEY}", code="invalid_api_key")
    proc = _run_cli(tmp_path, fake_openai, "run", "hello", "--provider", "gpt")
    assert proc.returncode != 0
    assert "provider.auth" in proc.stderr and "Traceback" not in proc.stderr
    assert TEST_KEY not in proc.stdout + proc.stderr

    fake_openai.reply_error(401, f"Incorrect API key provided: {TEST_KEY}", code="invalid_api_key")
    proc = _run_cli(tmp_path, fake_openai, "run", "hello", "--provider", "gpt", "--json")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert TEST_KEY not in proc.stdout + proc.stderr
    if proc.stdout.strip():  # a failed run is reported as JSON with its ids
        data = json.loads(proc.stdout)
        assert data["status"] == "failed" and data["error"]["code"] == "provider.auth"
    else:
        assert "provider.auth" in proc.stderr
