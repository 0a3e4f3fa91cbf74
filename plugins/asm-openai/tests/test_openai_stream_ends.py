"""How a stream ends decides what is kept: complete answers only, unknown usage stays unknown,
and a failed attempt reports the usage the server had already sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asm_kernel import Kernel, RunStatus
from asm_kernel.errors import ProviderConnectionError, ProviderError, ProviderResponseError, ProviderServerError
from asm_kernel.model import MessageDone, Usage, UsageUpdate
from openai_helpers import TEST_KEY, collect, make_provider

from asm_openai.testing import FakeOpenAI, Reply, Text


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n"


ROLE = _chunk({"role": "assistant", "content": ""})
TEXT = _chunk({"content": "Hello"})
FINISH = _chunk({}, "stop")
USAGE = (
    "data: "
    + json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47},
        }
    )
    + "\n\n"
)
DONE = "data: [DONE]\n\n"
PRICED = {
    "gpt-5.4-mini": {"context_window": 400000, "max_output_tokens": 128000, "input_price": 1.0, "output_price": 10.0}
}


def kernel_config(fake: FakeOpenAI, api: str = "chat", **extra: Any) -> dict[str, Any]:
    provider = {
        "name": "gpt",
        "use": "openai",
        "api": api,
        "base_url": fake.base_url,
        "api_key": TEST_KEY,
        "capabilities": ["streaming", "usage"],
        "models": PRICED,
        **extra,
    }
    return {"store": {"use": "memory"}, "providers": [provider], "resilience": {"max_attempts": 1}}


async def _error(provider: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await collect(provider)
    return info.value


# -- Chat Completions ---------------------------------------------------------------------------


async def test_a_chat_stream_cut_after_finish_reason_is_truncated(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(raw=[ROLE, TEXT, FINISH]))  # no usage chunk, no [DONE]
    err = await _error(make_provider(fake_openai))
    assert isinstance(err, ProviderResponseError) and err.code == "provider.bad_response"
    assert "[DONE]" in err.message and "truncated" in err.message
    assert err.output_started and err.usage is None


async def test_a_cut_chat_stream_fails_the_run_instead_of_completing_it(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(raw=[ROLE, TEXT, FINISH]))
    async with Kernel(kernel_config(fake_openai)) as kernel:
        with pytest.raises(ProviderResponseError) as info:
            await kernel.run_once("hi")
        run = await kernel.sessions.get_run(info.value.details["run_id"])
        events = await kernel.sessions.events(run.session_id)
    assert run.status is RunStatus.FAILED and run.error["code"] == "provider.bad_response"
    assert run.cost is None
    assert not any(e.type in ("message_received", "run_completed") for e in events)


async def test_a_chat_stream_cut_after_the_usage_chunk_reports_that_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(raw=[ROLE, TEXT, FINISH, USAGE]))
    err = await _error(make_provider(fake_openai))
    assert isinstance(err, ProviderResponseError)
    assert err.usage == Usage(input_tokens=40, output_tokens=7)


async def test_a_dropped_connection_after_the_usage_chunk_reports_that_usage(fake_openai: FakeOpenAI) -> None:
    # Events: role, "Hi", finish, usage, [DONE]; the connection drops before [DONE].
    fake_openai.enqueue(Reply([Text("Hi")], input_tokens=21, output_tokens=2, drop_after=4))
    err = await _error(make_provider(fake_openai))
    assert isinstance(err, ProviderConnectionError) and err.retryable
    assert err.usage == Usage(input_tokens=21, output_tokens=2)


async def test_an_error_chunk_after_usage_reports_that_usage(fake_openai: FakeOpenAI) -> None:
    error = 'data: {"error": {"message": "boom", "type": "server_error", "code": "server_error"}}\n\n'
    fake_openai.enqueue(Reply(raw=[ROLE, TEXT, USAGE, error]))
    err = await _error(make_provider(fake_openai))
    assert isinstance(err, ProviderServerError) and err.usage == Usage(input_tokens=40, output_tokens=7)


async def test_a_complete_chat_stream_without_usage_leaves_usage_unknown(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply(raw=[ROLE, TEXT, FINISH, DONE]))  # a server that ignores include_usage
    items = await collect(make_provider(fake_openai))
    done = items[-1]
    assert isinstance(done, MessageDone) and done.message.text == "Hello"
    assert done.usage is None and not any(isinstance(i, UsageUpdate) for i in items)
    assert fake_openai.last.body["stream_options"] == {"include_usage": True}


async def test_unknown_usage_is_recorded_as_unknown_cost_not_zero(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("Hello")], include_usage=False))
    async with Kernel(kernel_config(fake_openai)) as kernel:
        result = await kernel.run_once("hi")
        events = await kernel.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED and result.output == "Hello"
    assert result.cost is None
    (usage_event,) = [e for e in events if e.type == "token_usage_updated"]
    assert usage_event.payload["cost"] is None


async def test_reported_usage_is_still_priced(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("Hello")], input_tokens=1000, output_tokens=100))
    async with Kernel(kernel_config(fake_openai)) as kernel:
        result = await kernel.run_once("hi")
    assert result.cost == pytest.approx((1000 * 1.0 + 100 * 10.0) / 1e6)


# -- Responses API ------------------------------------------------------------------------------


async def test_a_responses_stream_cut_before_its_terminal_event_is_truncated(fake_openai: FakeOpenAI) -> None:
    reply = Reply([Text("complete text")])
    events = fake_openai.render_responses(reply, {"model": "gpt-5.4-mini"})
    assert events[-1][0] == "response.completed"
    reply.end_after = len(events) - 1  # every item done, the terminal event never sent
    fake_openai.enqueue(reply)
    err = await _error(make_provider(fake_openai, "responses"))
    assert isinstance(err, ProviderResponseError) and "response.completed" in err.message
    assert err.output_started


async def test_response_failed_reports_its_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("partial")], status="failed", input_tokens=30, output_tokens=5))
    err = await _error(make_provider(fake_openai, "responses"))
    assert isinstance(err, ProviderServerError) and "response.failed" in err.message
    assert err.usage == Usage(input_tokens=30, output_tokens=5)


async def test_response_incomplete_for_an_unknown_reason_reports_its_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply([Text("x")], status="incomplete", incomplete_reason="something_new", input_tokens=9, output_tokens=3)
    )
    err = await _error(make_provider(fake_openai, "responses"))
    assert isinstance(err, ProviderResponseError) and err.usage == Usage(input_tokens=9, output_tokens=3)


async def test_a_response_without_usage_leaves_usage_unknown(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("Hi")], include_usage=False))
    done = (await collect(make_provider(fake_openai, "responses")))[-1]
    assert isinstance(done, MessageDone) and done.message.text == "Hi" and done.usage is None
