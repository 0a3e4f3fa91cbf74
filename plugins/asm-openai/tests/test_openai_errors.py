"""Every failure is a typed asm error: HTTP statuses, transport faults, in-stream errors."""

from __future__ import annotations

import asyncio
import socket

import pytest
from asm_kernel.config import Secret
from asm_kernel.errors import (
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderAuthError,
    ProviderConflictError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
)
from asm_kernel.model import TextDelta
from asm_kernel.secrets import REDACTED
from openai_helpers import TEST_KEY, collect, make_provider, request

from asm_openai.testing import FakeOpenAI, HttpError, Reply, Text


@pytest.mark.parametrize(
    ("status", "type_", "code", "cls", "retryable"),
    [
        (400, "invalid_request_error", None, InvalidRequestError, False),
        (400, "invalid_request_error", "context_length_exceeded", ContextLengthError, False),
        (401, "invalid_request_error", "invalid_api_key", ProviderAuthError, False),
        (403, "invalid_request_error", "unsupported_country_region_territory", ProviderAuthError, False),
        (404, "invalid_request_error", "model_not_found", ModelNotFoundError, False),
        (409, "invalid_request_error", None, ProviderConflictError, True),
        (413, "invalid_request_error", None, RequestTooLargeError, False),
        (422, "invalid_request_error", None, InvalidRequestError, False),
        (429, "requests", "rate_limit_exceeded", RateLimitError, True),
        (429, "insufficient_quota", "insufficient_quota", QuotaExceededError, False),
        (500, "server_error", None, ProviderServerError, True),
        (502, "server_error", None, ProviderServerError, True),
        (503, "server_error", None, ProviderOverloadedError, True),
    ],
)
async def test_http_errors_are_mapped(
    fake_openai: FakeOpenAI,
    api: str,
    status: int,
    type_: str,
    code: str | None,
    cls: type[ProviderError],
    retryable: bool,
) -> None:
    fake_openai.enqueue(HttpError(status, f"server says {status}", type_, code, headers={"x-request-id": "req_abc"}))
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(fake_openai, api))
    err = info.value
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.status == status and err.request_id == "req_abc"
    assert err.provider == "gpt" and err.model == "gpt-5.4-mini"
    assert f"server says {status}" in err.message
    assert not err.output_started
    assert len(fake_openai.requests) == 1  # SDK retries are off: exactly one attempt
    data = err.to_dict()
    assert data["code"] == cls.code and data["status"] == status
    if status == 409:
        assert data["code"] == "provider.conflict"


async def test_auth_error_names_the_env_var_and_config_key(fake_openai: FakeOpenAI) -> None:
    fake_openai.api_key = "sk-the-right-one"
    with pytest.raises(ProviderAuthError) as info:
        await collect(make_provider(fake_openai, "chat"))
    assert "OPENAI_API_KEY" in str(info.value) and "providers[0].api_key" in str(info.value)


async def test_rate_limit_carries_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_error(429, "Rate limit reached", code="rate_limit_exceeded", headers={"retry-after": "7"})
    with pytest.raises(RateLimitError) as info:
        await collect(make_provider(fake_openai, "responses"))
    assert info.value.retry_after == 7.0
    fake_openai.reply_error(429, "Rate limit reached", code="rate_limit_exceeded", headers={"retry-after-ms": "1500"})
    with pytest.raises(RateLimitError) as info:
        await collect(make_provider(fake_openai, "responses"))
    assert info.value.retry_after == 1.5


async def test_insufficient_quota_is_not_retryable_and_says_so(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply_error(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
        headers={"retry-after": "20"},
    )
    with pytest.raises(QuotaExceededError) as info:
        await collect(make_provider(fake_openai, "chat"))
    assert not info.value.retryable and "waiting will not help" in str(info.value)


async def test_non_json_error_body(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(HttpError(502, body="<html>Bad Gateway</html>"))
    with pytest.raises(ProviderServerError) as info:
        await collect(make_provider(fake_openai, "chat"))
    assert info.value.status == 502


async def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    from asm_openai.provider import OpenAIProvider
    from asm_openai.settings import OpenAISettings

    provider = OpenAIProvider(
        OpenAISettings(api="chat", base_url=f"http://127.0.0.1:{port}/v1", api_key=Secret(TEST_KEY))
    )
    with pytest.raises(ProviderConnectionError) as info:
        await collect(provider)
    assert info.value.retryable and not info.value.output_started


async def test_read_timeout_between_events(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(Reply([Text("slow answer")], pause_after=3, pause=5.0))
    provider = make_provider(fake_openai, api, read_timeout=0.3)
    with pytest.raises(ProviderTimeoutError) as info:
        await collect(provider)
    assert info.value.retryable


async def test_slow_first_byte_hits_the_read_timeout(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("x")], first_byte_delay=5.0))
    with pytest.raises(ProviderTimeoutError):
        await collect(make_provider(fake_openai, "chat", read_timeout=0.3))
    assert len(fake_openai.requests) == 1


async def test_total_timeout_bounds_a_trickling_stream(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("a" * 200, chunk_size=1)], delay=0.02))
    provider = make_provider(fake_openai, "chat", read_timeout=5.0, total_timeout=0.3)
    with pytest.raises(ProviderTimeoutError, match="total_timeout") as info:
        await collect(provider)
    assert info.value.output_started


@pytest.mark.parametrize("after", [1, 6])
async def test_error_inside_the_stream_records_output_started(fake_openai: FakeOpenAI, api: str, after: int) -> None:
    # chat: event 0 is the role chunk, 1.. are text; responses: 0-3 are preamble, 4.. text deltas
    fake_openai.enqueue(
        Reply(
            [Text("abcdefghijklmnop", chunk_size=2)],
            error_after=after,
            error={"type": "server_error", "code": "server_error", "message": "boom"},
        )
    )
    items: list = []
    provider = make_provider(fake_openai, api)
    with pytest.raises(ProviderServerError) as info:
        try:
            async for item in provider.stream(request()):
                items.append(item)
        finally:
            await provider.aclose()
    streamed = any(isinstance(i, TextDelta) for i in items)
    assert info.value.output_started is streamed
    assert "boom" in str(info.value)
    assert streamed is (after == 6)


async def test_overloaded_error_mid_stream(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(
        Reply(
            [Text("hello")],
            error_after=1,
            error={"type": "overloaded", "code": "server_overloaded", "message": "try later"},
        )
    )
    with pytest.raises(ProviderOverloadedError):
        await collect(make_provider(fake_openai, api))


async def test_dropped_connection_mid_stream(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(Reply([Text("abcdefghij", chunk_size=1)], drop_after=7))
    with pytest.raises(ProviderConnectionError) as info:
        await collect(make_provider(fake_openai, api))
    assert info.value.output_started and info.value.retryable


async def test_truncated_stream_is_never_a_complete_answer(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.enqueue(Reply([Text("abcdefghij", chunk_size=1)], end_after=6))
    with pytest.raises(ProviderResponseError, match="truncated") as info:
        await collect(make_provider(fake_openai, api))
    assert info.value.output_started


@pytest.mark.parametrize(
    "raw",
    [
        ["data: {not json\n\n"],
        ["data: [1, 2, 3]\n\n"],
        ['data: {"id": "x", "choices": "nope"}\n\n'],
        ['data: {"id": "x", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": "zero"}]}}]}\n\n'],
        ["data: \xff\xfe garbage\n\n"],
    ],
)
async def test_malformed_chat_streams(fake_openai: FakeOpenAI, raw: list[str]) -> None:
    fake_openai.enqueue(Reply(raw=raw))
    with pytest.raises(ProviderResponseError):
        await collect(make_provider(fake_openai, "chat"))


@pytest.mark.parametrize(
    "raw",
    [
        ["event: response.created\ndata: {oops\n\n"],
        ['event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": 5}\n\n'],
        [
            'event: response.output_item.done\ndata: {"type": "response.output_item.done", "output_index": 0, '
            '"item": {"type": "function_call", "name": "f", "call_id": "c", "arguments": "{bad"}}\n\n'
        ],
        ['event: response.completed\ndata: {"type": "response.completed", "response": "nope"}\n\n'],
        ['data: "just a string"\n\n'],
    ],
)
async def test_malformed_responses_streams(fake_openai: FakeOpenAI, raw: list[str]) -> None:
    fake_openai.enqueue(Reply(raw=raw))
    with pytest.raises(ProviderResponseError):
        await collect(make_provider(fake_openai, "responses"))


async def test_the_key_never_appears_in_errors(fake_openai: FakeOpenAI, api: str) -> None:
    # A server that echoes the key back in its message (some gateways do).
    fake_openai.reply_error(401, f"Incorrect API key provided: {TEST_KEY}", code="invalid_api_key")
    provider = make_provider(fake_openai, api)
    with pytest.raises(ProviderAuthError) as info:
        await collect(provider)
    err = info.value
    for text in (str(err), repr(err), str(err.to_dict()), err.message, repr(provider), repr(provider.settings)):
        assert TEST_KEY not in text
    assert REDACTED in err.message


async def test_cancelled_request_before_headers_is_not_wrapped(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("x")], first_byte_delay=2.0))
    provider = make_provider(fake_openai, "chat")

    async def consume() -> None:
        async for _ in provider.stream(request()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.aclose()
