"""A failed attempt reports the usage the API had sent before it failed (those tokens are billed)."""

from __future__ import annotations

import pytest
from anthropic_helpers import TEST_KEY, collect, make_request
from asm_anthropic.testing import FakeAnthropic

from asm_kernel import Kernel
from asm_kernel.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderResponseError,
    ProviderServerError,
)
from asm_kernel.model import Usage

USAGE = {"input_tokens": 500, "output_tokens": 42, "cache_creation_input_tokens": 64, "cache_read_input_tokens": 200}
# message_start carries the input and cache counts, and output_tokens 1 so far
AT_START = Usage(500, 1, 64, 200)


async def _error(provider) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await collect(provider, make_request())
    return info.value


async def test_an_error_event_after_message_start_reports_its_usage(
    fake_anthropic: FakeAnthropic, make_provider
) -> None:
    reply = fake_anthropic.reply_text("partial answer", usage=USAGE, chunk=4)
    reply.error_at = 4  # message_start, block start, ping, one delta, then the error
    err = await _error(make_provider())
    assert isinstance(err, ProviderOverloadedError) and err.output_started
    assert err.usage == AT_START


async def test_a_stream_cut_after_message_start_reports_its_usage(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("partial answer", usage=USAGE)
    reply.end_at = 3
    err = await _error(make_provider())
    assert isinstance(err, ProviderResponseError) and "message_stop" in err.message
    assert err.usage == AT_START


async def test_a_dropped_connection_after_message_start_reports_its_usage(
    fake_anthropic: FakeAnthropic, make_provider
) -> None:
    reply = fake_anthropic.reply_text("partial answer", usage=USAGE)
    reply.drop_at = 2
    err = await _error(make_provider())
    assert isinstance(err, ProviderConnectionError) and err.usage == AT_START


async def test_a_cut_after_message_delta_reports_the_final_counts(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("whole answer", usage=USAGE)
    reply.end_at = len(reply.events("claude-sonnet-5-5")) - 1  # everything but message_stop
    err = await _error(make_provider())
    assert isinstance(err, ProviderResponseError) and err.usage == Usage(500, 42, 64, 200)


async def test_an_error_before_message_start_has_no_usage(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("never seen")
    reply.error_at = 0
    reply.error = {"type": "api_error", "message": "Internal server error"}
    err = await _error(make_provider())
    assert isinstance(err, ProviderServerError) and err.usage is None


async def test_http_errors_have_no_usage(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_error(529, "overloaded_error", "Overloaded")
    assert (await _error(make_provider())).usage is None


async def test_the_kernel_sees_the_failed_attempts_usage(fake_anthropic: FakeAnthropic) -> None:
    reply = fake_anthropic.reply_text("partial words here", usage=USAGE, chunk=4)
    reply.error_at = 5
    provider = {"name": "claude", "use": "anthropic", "base_url": fake_anthropic.url, "api_key": TEST_KEY}
    config = {"store": {"use": "memory"}, "providers": [provider], "resilience": {"max_attempts": 1}}
    async with Kernel(config) as kernel:
        with pytest.raises(ProviderOverloadedError) as info:
            await kernel.run_once("hi")
    assert info.value.usage == AT_START
