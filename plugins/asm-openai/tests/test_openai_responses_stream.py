"""Responses API: streamed events -> asm stream events, over real HTTP."""

from __future__ import annotations

import json

import pytest
from asm_kernel.errors import ProviderResponseError, ProviderServerError, RateLimitError
from asm_kernel.model import (
    RedactedThinkingBlock,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from openai_helpers import collect, make_provider

from asm_openai._requests import decode_reasoning
from asm_openai.testing import FakeOpenAI, Reasoning, Refusal, Reply, Text, ToolCall


async def test_text_and_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply(
            [Text("Bonjour le monde", chunk_size=5)],
            input_tokens=30,
            cached_tokens=10,
            output_tokens=9,
            reasoning_tokens=4,
        )
    )
    items = await collect(make_provider(fake_openai, "responses"))
    assert [i.text for i in items if isinstance(i, TextDelta)] == ["Bonjo", "ur le", " mond", "e"]
    done = items[-1]
    assert done.message.content == (TextBlock("Bonjour le monde"),)
    assert done.stop_reason == "end_turn"
    assert done.response_id.startswith("resp_")
    expected = Usage(input_tokens=20, output_tokens=9, cache_read_input_tokens=10, reasoning_tokens=4)
    assert done.usage == expected
    assert [i for i in items if isinstance(i, UsageUpdate)][-1].usage == expected


async def test_function_call_uses_call_id_and_streamed_arguments(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([ToolCall("lookup", {"q": "asm", "n": 3}, call_id="call_xyz", chunk_size=2)]))
    done = (await collect(make_provider(fake_openai, "responses")))[-1]
    assert done.stop_reason == "tool_use"
    assert done.message.content == (ToolUseBlock("call_xyz", "lookup", {"q": "asm", "n": 3}),)


async def test_reasoning_summary_is_thinking_with_a_replayable_signature(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Reasoning("First I consider...", encrypted_content="gAAAAenc"), Text("Done.")]))
    items = await collect(make_provider(fake_openai, "responses", include_encrypted_reasoning=True))
    assert "".join(i.text for i in items if isinstance(i, ThinkingDelta)) == "First I consider..."
    block = items[-1].message.content[0]
    assert isinstance(block, ThinkingBlock) and block.thinking == "First I consider..."
    data = decode_reasoning(block.signature)
    assert data["encrypted_content"] == "gAAAAenc" and data["id"].startswith("rs_")
    assert fake_openai.last_request.body["include"] == ["reasoning.encrypted_content"]


async def test_reasoning_without_summary_is_redacted_thinking(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Reasoning("", encrypted_content="gAAAAsecret"), Text("Hi")]))
    done = (await collect(make_provider(fake_openai, "responses", include_encrypted_reasoning=True)))[-1]
    block = done.message.content[0]
    assert isinstance(block, RedactedThinkingBlock)
    assert decode_reasoning(block.data)["encrypted_content"] == "gAAAAsecret"
    assert done.message.text == "Hi"


async def test_encrypted_content_only_when_requested(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Reasoning("why", encrypted_content="gAAAA"), Text("Hi")]))
    done = (await collect(make_provider(fake_openai, "responses")))[-1]
    assert "include" not in fake_openai.last_request.body
    assert "encrypted_content" not in decode_reasoning(done.message.content[0].signature)


async def test_refusal_part(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Refusal("I won't do that.")]))
    items = await collect(make_provider(fake_openai, "responses"))
    assert items[-1].stop_reason == "refusal"
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == items[-1].message.text == "I won't do that."


async def test_incomplete_for_max_output_tokens_ends_with_max_tokens(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(
        Reply([Text("The beginning of a long")], status="incomplete", incomplete_reason="max_output_tokens")
    )
    done = (await collect(make_provider(fake_openai, "responses")))[-1]
    assert done.stop_reason == "max_tokens"
    assert done.message.text == "The beginning of a long"


async def test_incomplete_for_content_filter_is_a_refusal(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("")], status="incomplete", incomplete_reason="content_filter"))
    assert (await collect(make_provider(fake_openai, "responses")))[-1].stop_reason == "refusal"


async def test_incomplete_for_another_reason_is_an_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("x")], status="incomplete", incomplete_reason="something_new"))
    with pytest.raises(ProviderResponseError, match=r"incomplete.*something_new"):
        await collect(make_provider(fake_openai, "responses"))


async def test_response_failed_maps_the_error_code(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("partial answer")], status="failed"))
    with pytest.raises(ProviderServerError) as info:
        await collect(make_provider(fake_openai, "responses"))
    assert info.value.retryable and info.value.output_started
    assert "response.failed" in str(info.value)

    fake_openai.enqueue(Reply([], status="failed", error={"code": "rate_limit_exceeded", "message": "slow down"}))
    with pytest.raises(RateLimitError) as info2:
        await collect(make_provider(fake_openai, "responses"))
    assert not info2.value.output_started


def _event(kind: str, seq: int, **data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **data})}\n\n"


async def test_unknown_events_are_ignored_and_final_output_fills_gaps(fake_openai: FakeOpenAI) -> None:
    # A stream that announces nothing item-by-item: the final response carries the output.
    final = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "m",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "From the final object", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
    }
    fake_openai.enqueue(
        Reply(
            raw=[
                _event("response.created", 0, response={**final, "status": "in_progress", "output": []}),
                _event("response.web_search_call.searching", 1, item_id="ws_1", output_index=0),
                _event("response.future_thing", 2, foo="bar"),
                _event("response.completed", 3, response=final),
            ]
        )
    )
    items = await collect(make_provider(fake_openai, "responses"))
    assert "".join(i.text for i in items if isinstance(i, TextDelta)) == "From the final object"
    assert items[-1].message.text == "From the final object"
    assert items[-1].usage == Usage(input_tokens=3, output_tokens=4)
