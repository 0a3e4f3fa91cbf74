"""Chat Completions: streamed chunks -> asm stream events, over real HTTP."""

from __future__ import annotations

import json

import pytest
from asm_kernel.errors import ProviderResponseError
from asm_kernel.model import (
    MessageDone,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from openai_helpers import collect, make_provider

from asm_openai.testing import FakeOpenAI, Reasoning, Refusal, Reply, Text, ToolCall


async def test_text_deltas_and_final_message(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("The answer is 42.", chunk_size=3)], input_tokens=20, output_tokens=6))
    items = await collect(make_provider(fake_openai))
    deltas = [i.text for i in items if isinstance(i, TextDelta)]
    assert deltas == ["The", " an", "swe", "r i", "s 4", "2."]
    done = items[-1]
    assert isinstance(done, MessageDone)
    assert done.message.content == (TextBlock("The answer is 42."),)
    assert done.stop_reason == "end_turn"
    assert done.model == "gpt-5.4-mini"
    assert done.response_id and done.response_id.startswith("chatcmpl-")
    assert done.usage == Usage(input_tokens=20, output_tokens=6)


async def test_usage_splits_cached_tokens_out_of_prompt_tokens(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply([Text("ok")], input_tokens=1000, cached_tokens=800, output_tokens=50, reasoning_tokens=30)
    )
    items = await collect(make_provider(fake_openai))
    updates = [i for i in items if isinstance(i, UsageUpdate)]
    expected = Usage(input_tokens=200, output_tokens=50, cache_read_input_tokens=800, reasoning_tokens=30)
    assert updates[-1].usage == expected and items[-1].usage == expected
    # The total counts each prompt token once, as OpenAI's total_tokens does.
    assert expected.total_tokens == 1050


async def test_tool_calls_are_assembled_from_argument_deltas(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply(
            [
                Text("Let me check."),
                ToolCall("get_weather", {"city": "Paris", "unit": "C"}, call_id="call_a", chunk_size=3),
                ToolCall("get_time", {"tz": "Europe/Paris"}, call_id="call_b", chunk_size=2),
            ]
        )
    )
    items = await collect(make_provider(fake_openai))
    done = items[-1]
    assert done.stop_reason == "tool_use"
    assert done.message.tool_uses == (
        ToolUseBlock("call_a", "get_weather", {"city": "Paris", "unit": "C"}),
        ToolUseBlock("call_b", "get_time", {"tz": "Europe/Paris"}),
    )
    assert done.message.text == "Let me check."


def _chunk(delta: dict, finish: str | None = None, **extra: object) -> str:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


async def test_interleaved_parallel_tool_call_deltas_are_assembled_by_index(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply(
            raw=[
                _chunk({"role": "assistant", "content": None}),
                _chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "call_0", "type": "function", "function": {"name": "a", "arguments": ""}}
                        ]
                    }
                ),
                _chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "b", "arguments": '{"y"'},
                            }
                        ]
                    }
                ),
                _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}),
                _chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 2}"}}]}),
                _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                _chunk({}, "tool_calls"),
                "data: [DONE]\n\n",
            ]
        )
    )
    done = (await collect(make_provider(fake_openai)))[-1]
    assert done.message.tool_uses == (ToolUseBlock("call_0", "a", {"x": 1}), ToolUseBlock("call_1", "b", {"y": 2}))


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", "not json"])
async def test_invalid_tool_arguments_are_a_response_error(fake_openai: FakeOpenAI, arguments: str) -> None:
    fake_openai.enqueue(Reply([ToolCall("get_weather", arguments)]))
    with pytest.raises(ProviderResponseError) as info:
        await collect(make_provider(fake_openai))
    assert "get_weather" in str(info.value)
    assert info.value.details["tool"] == "get_weather"


async def test_refusal_is_streamed_as_text_with_stop_reason_refusal(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Refusal("I can't help with that.")]))
    items = await collect(make_provider(fake_openai))
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == "I can't help with that."
    assert items[-1].stop_reason == "refusal"
    assert items[-1].message.text == "I can't help with that."


@pytest.mark.parametrize(
    ("reply", "stop"),
    [
        (Reply([Text("partial")], status="incomplete", incomplete_reason="max_output_tokens"), "max_tokens"),
        (Reply([Text("")], status="incomplete", incomplete_reason="content_filter"), "refusal"),
        (Reply([Text("done")], finish_reason="stop"), "end_turn"),
        (Reply([ToolCall("f", {})], finish_reason="stop"), "tool_use"),  # lenient servers
    ],
)
async def test_finish_reasons_map_to_asm_stop_reasons(fake_openai: FakeOpenAI, reply: Reply, stop: str) -> None:
    fake_openai.enqueue(reply)
    assert (await collect(make_provider(fake_openai)))[-1].stop_reason == stop


async def test_reasoning_content_of_compatible_servers_becomes_thinking(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Reasoning("Think first."), Text("Answer.")]))
    items = await collect(make_provider(fake_openai))
    assert "".join(i.text for i in items if isinstance(i, ThinkingDelta)) == "Think first."
    assert items[-1].message.content == (ThinkingBlock("Think first."), TextBlock("Answer."))


async def test_without_usage_capability_no_stream_options_are_sent(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("hi")]))
    items = await collect(make_provider(fake_openai, capabilities=["streaming"]))
    assert "stream_options" not in fake_openai.last_request.body
    assert not any(isinstance(i, UsageUpdate) for i in items)
    assert items[-1].usage is None and items[-1].message.text == "hi"


async def test_unknown_delta_fields_and_extra_choices_are_ignored(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply(
            raw=[
                _chunk({"role": "assistant", "content": "A", "audio": None, "future_field": {"x": 1}}),
                "data: "
                + json.dumps(
                    {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": "m",
                        "choices": [{"index": 1, "delta": {"content": "other choice"}, "finish_reason": None}],
                    }
                )
                + "\n\n",
                ": keep-alive comment\n\n",
                _chunk({"content": "B"}, "stop"),
                "data: [DONE]\n\n",
            ]
        )
    )
    done = (await collect(make_provider(fake_openai)))[-1]
    assert done.message.text == "AB"
