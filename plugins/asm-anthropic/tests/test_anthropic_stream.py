"""Mapping of the Messages API stream to asm's normalized stream events."""

from __future__ import annotations

import pytest
from anthropic_helpers import collect, make_request
from asm_anthropic.testing import (
    FakeAnthropic,
    redacted_thinking_block,
    sse,
    text_block,
    thinking_block,
)

from asm_kernel.errors import ProviderConnectionError, ProviderResponseError
from asm_kernel.model import (
    MessageDone,
    RedactedThinkingBlock,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)


async def test_text_deltas_and_final_message(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("The quick brown fox jumps.", chunk=5, id="msg_01abc", model="claude-sonnet-5-5")
    items = await collect(make_provider(), make_request("hi"))
    deltas = [i for i in items if isinstance(i, TextDelta)]
    assert [d.text for d in deltas] == ["The q", "uick ", "brown", " fox ", "jumps", "."]
    assert all(d.index == 0 for d in deltas)
    done = items[-1]
    assert isinstance(done, MessageDone) and sum(isinstance(i, MessageDone) for i in items) == 1
    assert done.message.role == "assistant"
    assert done.message.content == (TextBlock("The quick brown fox jumps."),)
    assert done.stop_reason == "end_turn"
    assert done.response_id == "msg_01abc" and done.model == "claude-sonnet-5-5"


async def test_usage_from_message_start_and_message_delta(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("ok", usage={
        "input_tokens": 120, "output_tokens": 42,
        "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 4096,
    })
    items = await collect(make_provider(), make_request())
    updates = [i.usage for i in items if isinstance(i, UsageUpdate)]
    # message_start carries input and cache counts (output 1 so far); message_delta the output count
    assert updates[0] == Usage(120, 1, 2048, 4096)
    assert updates[-1] == Usage(120, 42, 2048, 4096)
    assert items[-1].usage == Usage(120, 42, 2048, 4096)


async def test_cumulative_delta_usage_overrides(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("ok", full_delta_usage=True, usage={
        "input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 5})
    items = await collect(make_provider(), make_request())
    assert items[-1].usage == Usage(7, 3, 0, 5)


async def test_tool_use_from_partial_json(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_tool_use("get_weather", {"city": "Paris", "units": "metric", "days": [1, 2]},
                                  id="toolu_01", text="Checking.", chunk=3)
    items = await collect(make_provider(), make_request("weather?"))
    done = items[-1]
    assert done.stop_reason == "tool_use"
    assert done.message.content == (
        TextBlock("Checking."),
        ToolUseBlock("toolu_01", "get_weather", {"city": "Paris", "units": "metric", "days": [1, 2]}),
    )
    assert done.message.tool_uses[0].input["days"] == [1, 2]


async def test_tool_use_without_arguments(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_tool_use("now", {}, id="toolu_02")
    done = (await collect(make_provider(), make_request()))[-1]
    assert done.message.content == (ToolUseBlock("toolu_02", "now", {}),)


async def test_thinking_with_signature_and_redacted(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply(
        [thinking_block("Let me think about this step by step.", "EqQBCkYIARgCKkD=="),
         redacted_thinking_block("EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"),
         text_block("42")],
        chunk=10,
    )
    items = await collect(make_provider(), make_request("meaning?"))
    thinking = [i for i in items if isinstance(i, ThinkingDelta)]
    assert "".join(t.text for t in thinking) == "Let me think about this step by step."
    assert all(t.index == 0 for t in thinking)
    text = [i for i in items if isinstance(i, TextDelta)]
    assert [t.index for t in text] == [2]
    assert items[-1].message.content == (
        ThinkingBlock("Let me think about this step by step.", "EqQBCkYIARgCKkD=="),
        RedactedThinkingBlock("EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"),
        TextBlock("42"),
    )


@pytest.mark.parametrize(
    "reason",
    ["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "model_context_window_exceeded"],
)
async def test_stop_reasons_keep_anthropic_names(fake_anthropic: FakeAnthropic, make_provider, reason: str) -> None:
    fake_anthropic.reply_text("x", stop_reason=reason, stop_sequence="###" if reason == "stop_sequence" else None)
    assert (await collect(make_provider(), make_request()))[-1].stop_reason == reason


async def test_empty_answer_is_a_message_without_blocks(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply([], stop_reason="end_turn")
    done = (await collect(make_provider(), make_request()))[-1]
    assert done.message.content == () and done.message.text == ""


# -- bad responses -------------------------------------------------------------------------------


async def test_invalid_tool_json_is_a_response_error(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_tool_use("get_weather", raw_json='{"city": "Par', text="Sure.")
    seen = []
    with pytest.raises(ProviderResponseError) as info:
        async for item in make_provider().stream(make_request()):
            seen.append(item)
    assert "invalid JSON input" in info.value.message and "get_weather" in info.value.message
    assert info.value.output_started is True  # "Sure." had been streamed
    assert not any(isinstance(i, MessageDone) for i in seen)


async def test_tool_json_that_is_not_an_object(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_tool_use("f", raw_json="[1, 2]")
    with pytest.raises(ProviderResponseError, match="not an object"):
        await collect(make_provider(), make_request())


async def test_invalid_json_in_sse_data(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("hello world", replace={3: b"event: content_block_delta\ndata: {not json\n\n"})
    with pytest.raises(ProviderResponseError, match="malformed stream") as info:
        await collect(make_provider(), make_request())
    assert info.value.retryable is False


async def test_stream_ending_before_message_stop(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("truncated answer", chunk=4)
    reply.end_at = 5  # ends the chunked body cleanly in the middle of the text
    seen = []
    with pytest.raises(ProviderResponseError, match="message_stop") as info:
        async for item in make_provider().stream(make_request()):
            seen.append(item)
    assert info.value.output_started is True
    assert any(isinstance(i, TextDelta) for i in seen)
    assert not any(isinstance(i, MessageDone) for i in seen)


async def test_body_that_is_not_sse(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("x", raw=b'{"type": "message", "content": []}')
    with pytest.raises(ProviderResponseError, match="before message_start"):
        await collect(make_provider(), make_request())


async def test_events_out_of_order(fake_anthropic: FakeAnthropic, make_provider) -> None:
    bad = sse("content_block_delta", {"type": "content_block_delta", "index": 7,
                                      "delta": {"type": "text_delta", "text": "x"}})
    fake_anthropic.reply_text("abc", replace={3: bad})
    with pytest.raises(ProviderResponseError, match="not open"):
        await collect(make_provider(), make_request())


async def test_dropped_connection_mid_stream(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("a long answer that never finishes", chunk=4)
    reply.drop_at = 6
    with pytest.raises(ProviderConnectionError, match="mid-stream") as info:
        await collect(make_provider(), make_request())
    assert info.value.output_started is True and info.value.retryable is True
    assert fake_anthropic.last.finished.wait(5) and fake_anthropic.last.outcome == "dropped"


async def test_response_larger_than_the_limit(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("x" * 5000, chunk=100)
    with pytest.raises(ProviderResponseError, match="max_response_chars"):
        await collect(make_provider(max_response_chars=1000), make_request())


async def test_too_many_events(fake_anthropic: FakeAnthropic, make_provider) -> None:
    fake_anthropic.reply_text("y" * 500, chunk=1)
    with pytest.raises(ProviderResponseError, match="max_events"):
        await collect(make_provider(max_events=50), make_request())


async def test_unknown_event_types_are_ignored(fake_anthropic: FakeAnthropic, make_provider) -> None:
    reply = fake_anthropic.reply_text("fine", ping=True)
    assert reply.events("m")[2][0] == "ping"
    reply.replace = {2: sse("future_event", {"type": "future_event", "x": 1})}
    # an unknown event type in place of the ping changes nothing
    done = (await collect(make_provider(), make_request()))[-1]
    assert done.message.text == "fine"
