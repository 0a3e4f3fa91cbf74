"""HTTP errors, stream errors, timeouts and connection failures mapped to asm's error tree."""

from __future__ import annotations

import email.utils
import socket
import time

import pytest
from anthropic_helpers import TEST_KEY, collect, make_request
from asm_anthropic.provider import AnthropicProvider
from asm_anthropic.settings import AnthropicSettings
from asm_anthropic.testing import FakeAnthropic

from asm_kernel.config import Secret
from asm_kernel.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ProviderAuthError,
    ProviderConflictError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
)
from asm_kernel.model import TextDelta

CASES = [
    (400, "invalid_request_error", InvalidRequestError, False),
    (401, "authentication_error", ProviderAuthError, False),
    (402, "billing_error", QuotaExceededError, False),
    (403, "permission_error", ProviderAuthError, False),
    (404, "not_found_error", ModelNotFoundError, False),
    (408, "timeout_error", ProviderTimeoutError, True),
    (409, "conflict_error", ProviderConflictError, True),
    (413, "request_too_large", RequestTooLargeError, False),
    (429, "rate_limit_error", RateLimitError, True),
    (500, "api_error", ProviderServerError, True),
    (502, "api_error", ProviderServerError, True),
    (503, "api_error", ProviderOverloadedError, True),  # the kit's one map: unavailable = overloaded
    (504, "timeout_error", ProviderTimeoutError, True),
    (529, "overloaded_error", ProviderOverloadedError, True),
]


@pytest.mark.parametrize(("status", "etype", "cls", "retryable"), CASES)
async def test_http_errors(fake_anthropic: FakeAnthropic, make_provider, status, etype, cls, retryable) -> None:
    fake_anthropic.reply_error(status, etype, f"server says {etype}")
    with pytest.raises(cls) as info:
        await collect(make_provider(), make_request())
    err = info.value
    assert type(err) is cls
    assert err.retryable is retryable
    assert err.status == status and err.provider == "claude" and err.model == "claude-sonnet-5-5"
    assert err.request_id == fake_anthropic.last.request_id and err.request_id.startswith("req_")
    assert err.output_started is False
    assert f"server says {etype}" in err.message
    assert err.to_dict()["error_type"] == etype


async def test_rate_limit_retry_after_header(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_error(429, "rate_limit_error", "Number of requests has exceeded your rate limit",
                               headers={"retry-after": "17"})
    with pytest.raises(RateLimitError) as info:
        await collect(make_provider(), make_request())
    assert info.value.retry_after == 17.0
    assert info.value.to_dict()["retry_after"] == 17.0


async def test_retry_after_as_http_date_and_ms(fake_anthropic: FakeAnthropic, make_provider) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake_anthropic.reply_error(529, "overloaded_error", "Overloaded", headers={"retry-after": when})
    fake_anthropic.reply_error(429, "rate_limit_error", "slow", headers={"retry-after-ms": "1500", "retry-after": "2"})
    provider = make_provider()
    with pytest.raises(ProviderOverloadedError) as info:
        await collect(provider, make_request())
    assert 25 <= info.value.retry_after <= 31
    with pytest.raises(RateLimitError) as info2:
        await collect(provider, make_request())
    assert info2.value.retry_after == 1.5


async def test_spend_limit_429_is_quota_not_rate(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_error(429, "rate_limit_error", "spend limit reached")
    reply.body = (b'{"type":"error","error":{"type":"rate_limit_error","message":"spend limit reached",'
                  b'"details":{"error_code":"enforced_spend_limit_reached"}}}')
    with pytest.raises(QuotaExceededError) as info:
        await collect(make_provider(), make_request())
    assert info.value.retryable is False


async def test_sdk_retries_are_off(fake_anthropic: FakeAnthropic, make_provider) -> None:
    for _ in range(3):
        fake_anthropic.reply_error(529, "overloaded_error", "Overloaded", headers={"retry-after": "0"})
    with pytest.raises(ProviderOverloadedError):
        await collect(make_provider(), make_request())
    assert len(fake_anthropic.requests) == 1  # the kernel owns retries, the SDK made exactly one attempt
    assert fake_anthropic.requests[0].headers["x-stainless-retry-count"] == "0"
    assert fake_anthropic.pending == 2


async def test_error_event_mid_stream_after_output(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("partial answer here", chunk=4)
    reply.error_at = 5  # message_start, block start, ping, 2 deltas, then the error
    seen = []
    with pytest.raises(ProviderOverloadedError) as info:
        async for item in make_provider().stream(make_request()):
            seen.append(item)
    err = info.value
    assert [i.text for i in seen if isinstance(i, TextDelta)] == ["part", "ial "]
    assert err.output_started is True and err.retryable is True
    assert err.status is None  # the HTTP status was 200; the error came inside the stream
    assert err.request_id == fake_anthropic.last.request_id


async def test_error_event_before_any_output(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("never seen")
    reply.error_at = 1
    reply.error = {"type": "api_error", "message": "Internal server error"}
    with pytest.raises(ProviderServerError) as info:
        await collect(make_provider(), make_request())
    assert info.value.output_started is False


async def test_auth_error_names_the_config_key(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.api_key = "the-right-key"
    with pytest.raises(ProviderAuthError) as info:
        await collect(make_provider(), make_request())
    text = str(info.value)
    assert "providers[0].api_key" in text and "ANTHROPIC_API_KEY" in text
    assert TEST_KEY not in text and TEST_KEY not in repr(info.value)
    assert TEST_KEY not in str(info.value.to_dict())


async def test_auth_error_names_the_env_var(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.api_key = "the-right-key"
    provider = AnthropicProvider(AnthropicSettings(base_url=fake_anthropic.url), name="claude", path="providers[2]",
                                 environ={"ANTHROPIC_API_KEY": "sk-ant-wrong-key-from-env"})
    try:
        with pytest.raises(ProviderAuthError) as info:
            await collect(provider, make_request())
    finally:
        await provider.aclose()
    assert "from ANTHROPIC_API_KEY" in info.value.message
    assert "sk-ant-wrong-key-from-env" not in str(info.value)
    assert fake_anthropic.last.headers.get("authorization", "").endswith("sk-ant-wrong-key-from-env")


async def test_missing_key(fake_anthropic: FakeAnthropic) -> None:
    provider = AnthropicProvider(AnthropicSettings(base_url=fake_anthropic.url), name="claude",
                                 path="providers[1]", environ={})
    with pytest.raises(ProviderAuthError) as info:
        await collect(provider, make_request())
    assert "ANTHROPIC_API_KEY" in str(info.value) and "providers[1].api_key" in str(info.value)
    assert info.value.retryable is False
    assert fake_anthropic.requests == []  # nothing was sent
    await provider.aclose()


async def test_empty_secret_falls_back_to_env(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply_text("ok")
    provider = AnthropicProvider(AnthropicSettings(base_url=fake_anthropic.url, api_key=Secret("")),
                                 environ={"ANTHROPIC_API_KEY": "env-key"})
    await collect(provider, make_request())
    await provider.aclose()
    assert fake_anthropic.last.headers["authorization"] == "Bearer env-key"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connection_refused(make_provider) -> None:
    provider = make_provider(base_url=f"http://127.0.0.1:{_closed_port()}", connect_timeout=2.0)
    with pytest.raises(ProviderConnectionError) as info:
        await collect(provider, make_request())
    assert info.value.retryable is True and info.value.output_started is False
    assert "before a response" in info.value.message


async def test_read_timeout_before_the_response(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("late", headers_delay=1.5)
    with pytest.raises(ProviderTimeoutError) as info:
        await collect(make_provider(read_timeout=0.3), make_request())
    assert info.value.retryable is True and info.value.output_started is False


async def test_idle_timeout_between_events(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("slow stream of words", chunk=4, delay=1.0)
    with pytest.raises(ProviderTimeoutError) as info:
        await collect(make_provider(read_timeout=0.3), make_request())
    assert "next stream event" in info.value.message  # the idle limit fired, not the total one


async def test_total_timeout(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("a b c d e f g h i j k l", chunk=2, delay=0.15)
    seen = []
    with pytest.raises(ProviderTimeoutError, match="total_timeout") as info:
        async for item in make_provider(total_timeout=0.5, read_timeout=5.0).stream(make_request()):
            seen.append(item)
    assert info.value.output_started is bool([i for i in seen if isinstance(i, TextDelta)])
    assert fake_anthropic.last.finished.wait(10) and fake_anthropic.last.outcome == "client_closed"


async def test_errors_are_provider_errors_with_codes(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_error(400, "invalid_request_error", "max_tokens: must be positive")
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(), make_request())
    assert info.value.code == "provider.invalid_request"
    assert info.value.to_dict()["status"] == 400
