"""What the adapter sends: request bodies and headers as the fake server recorded them."""

from __future__ import annotations

import pytest
from anthropic_helpers import TEST_KEY, collect, make_request
from asm_anthropic.testing import FakeAnthropic

from asm_kernel.errors import InvalidRequestError
from asm_kernel.model import (
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)


@pytest.fixture
def fake(fake_anthropic: FakeAnthropic) -> FakeAnthropic:
    fake_anthropic.default = fake_anthropic.reply_text("ok")
    fake_anthropic.reset()
    return fake_anthropic


async def sent(fake: FakeAnthropic, provider, req) -> dict:
    await collect(provider, req)
    return fake.last.body


async def test_basic_body_and_headers(fake: FakeAnthropic, make_provider) -> None:
    body = await sent(
        fake,
        make_provider(headers={"anthropic-beta": "fancy-2026-01-01"}),
        make_request("Hello", system="You are terse."),
    )
    assert body == {
        "model": "claude-sonnet-5-5",
        "max_tokens": 4096,
        "stream": True,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }
    headers = fake.last.headers
    assert fake.last.path == "/v1/messages" and fake.last.method == "POST"
    assert headers["anthropic-version"]
    assert headers["anthropic-beta"] == "fancy-2026-01-01"
    assert headers.get("x-api-key") == TEST_KEY or headers.get("authorization") == f"Bearer {TEST_KEY}"


async def test_max_tokens_from_request_and_clamped_to_the_model(fake: FakeAnthropic, make_provider) -> None:
    provider = make_provider(max_tokens=1000)
    assert (await sent(fake, provider, make_request(max_tokens=77)))["max_tokens"] == 77
    assert (await sent(fake, provider, make_request()))["max_tokens"] == 1000
    big = await sent(fake, provider, make_request(model="claude-haiku-4-5", max_tokens=10_000_000))
    assert big["max_tokens"] == 64_000


async def test_multi_turn_with_tools_results_and_merging(fake: FakeAnthropic, make_provider) -> None:
    messages = (
        Message.user("weather in Paris and Rome?"),
        Message(
            "assistant",
            (
                TextBlock("Checking both."),
                ToolUseBlock("toolu_1", "get_weather", {"city": "Paris"}),
                ToolUseBlock("toolu_2", "get_weather", {"city": "Rome"}),
            ),
        ),
        Message("user", (ToolResultBlock("toolu_1", "18C and sunny"),)),
        Message("user", (ToolResultBlock("toolu_2", "error: service down", is_error=True),)),
        Message("assistant", (TextBlock(""),)),  # an empty turn is dropped
        Message.user("and tomorrow?"),
    )
    body = await sent(fake, make_provider(), make_request(*messages))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C and sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "error: service down", "is_error": True},
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]


async def test_tool_result_with_blocks(fake: FakeAnthropic, make_provider) -> None:
    result = ToolResultBlock(
        "toolu_9",
        [TextBlock("chart:"), ImageBlock("image/png", data="iVBORw0KGgo="), {"type": "text", "text": "raw dict"}, 42],
    )
    body = await sent(fake, make_provider(), make_request(Message("user", (result,))))
    assert body["messages"][0]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_9",
        "content": [
            {"type": "text", "text": "chart:"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "raw dict"},
            {"type": "text", "text": "42"},
        ],
    }


async def test_images_inline_and_by_url(fake: FakeAnthropic, make_provider) -> None:
    msg = Message(
        "user",
        (
            ImageBlock("image/jpeg", data="/9j/4AAQSkZJRg=="),
            ImageBlock(url="https://example.com/cat.png"),
            TextBlock("What is in these?"),
        ),
    )
    body = await sent(fake, make_provider(), make_request(msg))
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is in these?"},
    ]


async def test_bad_image_is_refused_before_sending(fake: FakeAnthropic, make_provider) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await collect(make_provider(), make_request(Message("user", (ImageBlock(data="abc"),))))
    assert info.value.path == "messages[0].content[0]" and "media_type" in info.value.message
    with pytest.raises(InvalidRequestError, match="neither data nor url"):
        await collect(make_provider(), make_request(Message("user", (ImageBlock(),))))
    assert fake.requests == []


async def test_thinking_blocks_replayed_unchanged(fake: FakeAnthropic, make_provider) -> None:
    assistant = Message(
        "assistant",
        (
            ThinkingBlock("I should call the tool.", "EqQBCkYIARgCKkD+sig=="),
            RedactedThinkingBlock("EmwKAhgBEgy3va3pzix"),
            ToolUseBlock("toolu_5", "lookup", {"q": "x"}),
        ),
    )
    msgs = (Message.user("go"), assistant, Message("user", (ToolResultBlock("toolu_5", "found"),)))
    body = await sent(fake, make_provider(thinking_budget=2048), make_request(*msgs))
    assert body["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": "I should call the tool.", "signature": "EqQBCkYIARgCKkD+sig=="},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
    ]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 4096


async def test_thinking_budget_larger_than_max_tokens(fake: FakeAnthropic, make_provider) -> None:
    body = await sent(fake, make_provider(thinking="enabled", thinking_budget=8000), make_request(max_tokens=500))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert body["max_tokens"] == 8500  # thinking counts toward max_tokens: the answer keeps its 500


async def test_adaptive_thinking_display_and_effort(fake: FakeAnthropic, make_provider) -> None:
    body = await sent(
        fake, make_provider(thinking="adaptive", thinking_display="summarized", effort="high"), make_request()
    )
    assert body["thinking"] == {"type": "adaptive", "display": "summarized"}
    assert body["output_config"] == {"effort": "high"}
    body = await sent(fake, make_provider(thinking="disabled"), make_request())
    assert body["thinking"] == {"type": "disabled"}
    assert "thinking" not in await sent(fake, make_provider(), make_request())


async def test_prompt_cache_marks_system_and_last_user_message(fake: FakeAnthropic, make_provider) -> None:
    msgs = (Message.user("first"), Message.assistant("answer"), Message("user", (TextBlock("a"), TextBlock("b"))))
    body = await sent(fake, make_provider(prompt_cache=True), make_request(*msgs, system="Long stable prompt."))
    assert body["system"] == [{"type": "text", "text": "Long stable prompt.", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][0]["content"] == [{"type": "text", "text": "first"}]
    assert body["messages"][2]["content"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
    ]
    body = await sent(fake, make_provider(prompt_cache=True, cache_ttl="1h"), make_request("x", system="s"))
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


async def test_no_cache_control_without_prompt_cache(fake: FakeAnthropic, make_provider) -> None:
    body = await sent(fake, make_provider(), make_request("x", system="s"))
    assert "cache_control" not in str(body)


async def test_tools_temperature_schema_and_metadata(fake: FakeAnthropic, make_provider) -> None:
    spec = ToolSpec(
        "get_weather",
        "Current weather for a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    req = make_request(
        "hi",
        tools=(spec, ToolSpec("noop")),
        temperature=0.2,
        response_schema=schema,
        metadata={"session_id": "ses_1", "run_id": "run_1", "user_id": "user-42"},
    )
    body = await sent(fake, make_provider(), req)
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather for a city", "input_schema": spec.input_schema},
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["temperature"] == 0.2
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["metadata"] == {"user_id": "user-42"}  # asm's session/run ids are not sent


async def test_options_passthrough(fake: FakeAnthropic, make_provider) -> None:
    req = make_request(
        "hi",
        options={
            "stop_sequences": ["END"],
            "top_k": 5,
            "tool_choice": {"type": "auto"},
            "openai_only": True,
            "anthropic": {"service_tier": "standard_only"},
        },
    )
    body = await sent(fake, make_provider(), req)
    assert body["stop_sequences"] == ["END"] and body["top_k"] == 5
    assert body["tool_choice"] == {"type": "auto"} and body["service_tier"] == "standard_only"
    assert "openai_only" not in body and "anthropic" not in body


async def test_no_metadata_when_no_user_id(fake: FakeAnthropic, make_provider) -> None:
    body = await sent(fake, make_provider(), make_request("hi", metadata={"session_id": "ses_1"}))
    assert "metadata" not in body


def test_reasoning_from_other_providers_is_not_replayed() -> None:
    from asm_anthropic._request import build_params
    from asm_anthropic.settings import AnthropicSettings

    from asm_kernel.model import Message, ProviderRequest, RedactedThinkingBlock, TextBlock, ThinkingBlock

    request = ProviderRequest(
        model="claude-x",
        messages=(
            Message.user("q"),
            Message(
                "assistant",
                (
                    ThinkingBlock("mine", "c2lnbmF0dXJl"),
                    ThinkingBlock("theirs", 'openai-reasoning:{"id":"r"}'),
                    RedactedThinkingBlock('openai-reasoning:{"id":"r2"}'),
                    ThinkingBlock("unsigned", ""),
                    TextBlock("a"),
                ),
            ),
            Message.user("again"),
        ),
    )
    params = build_params(request, AnthropicSettings(), model="claude-x", provider="claude")
    assistant = params["messages"][1]["content"]
    assert assistant == [
        {"type": "thinking", "thinking": "mine", "signature": "c2lnbmF0dXJl"},
        {"type": "text", "text": "a"},
    ]
