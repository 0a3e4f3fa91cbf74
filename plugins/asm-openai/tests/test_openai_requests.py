"""What the adapter sends: request bodies and headers as the fake server received them."""

from __future__ import annotations

import pytest
from asm_kernel.config import Secret
from asm_kernel.errors import CapabilityError
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
from openai_helpers import TEST_KEY, collect, make_provider, request

from asm_openai._requests import encode_reasoning, is_strict_schema
from asm_openai.provider import OpenAIProvider
from asm_openai.settings import OpenAISettings
from asm_openai.testing import FakeOpenAI, Reply, Text

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
STRICT = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}

CONVERSATION = (
    Message.user("What's the weather in Paris?"),
    Message(
        "assistant",
        (
            ThinkingBlock("Need the tool.", encode_reasoning("rs_1", "gAAAAenc")),
            TextBlock("Checking."),
            ToolUseBlock("call_1", "get_weather", {"city": "Paris"}),
        ),
    ),
    Message("user", (ToolResultBlock("call_1", "18 C, sunny"), TextBlock("And tomorrow?"))),
)


async def test_chat_body_for_a_tool_conversation(fake_openai: FakeOpenAI) -> None:
    await collect(
        make_provider(fake_openai, "chat"),
        request(*CONVERSATION, system="Be brief.", tools=(WEATHER,), max_tokens=300, temperature=0.2),
    )
    body = fake_openai.last_request.body
    assert body["model"] == "gpt-5.4-mini" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER.input_schema,
            },
        }
    ]
    assert body["max_tokens"] == 300  # a compatible server gets the widely supported field
    assert body["temperature"] == 0.2


async def test_responses_body_for_a_tool_conversation(fake_openai: FakeOpenAI) -> None:
    await collect(
        make_provider(fake_openai, "responses"),
        request(*CONVERSATION, system="Be brief.", tools=(WEATHER,), max_tokens=300, temperature=0.2),
    )
    body = fake_openai.last_request.body
    assert body["instructions"] == "Be brief."
    assert body["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "What's the weather in Paris?"}]},
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "Need the tool."}],
            "id": "rs_1",
            "encrypted_content": "gAAAAenc",
        },
        {"role": "assistant", "content": "Checking."},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C, sunny"},
        {"role": "user", "content": [{"type": "input_text", "text": "And tomorrow?"}]},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": WEATHER.input_schema,
            "strict": False,
        }
    ]
    assert body["max_output_tokens"] == 300 and body["temperature"] == 0.2


async def test_foreign_thinking_blocks_are_not_replayed(fake_openai: FakeOpenAI, api: str) -> None:
    history = (
        Message.user("q"),
        Message(
            "assistant", (ThinkingBlock("hmm", "anthropic-signature"), RedactedThinkingBlock("opaque"), TextBlock("a"))
        ),
        Message.user("next"),
    )
    await collect(make_provider(fake_openai, api), request(*history))
    body = fake_openai.last_request.body
    assert "hmm" not in str(body) and "opaque" not in str(body)


async def test_unstored_reasoning_without_encrypted_content_is_dropped(fake_openai: FakeOpenAI) -> None:
    history = (
        Message.user("q"),
        Message("assistant", (ThinkingBlock("t", encode_reasoning("rs_9", None)), TextBlock("a"))),
        Message.user("next"),
    )
    await collect(make_provider(fake_openai, "responses", store=False), request(*history))
    body = fake_openai.last_request.body
    assert body["store"] is False
    assert all(item.get("type") != "reasoning" for item in body["input"])


async def test_images_by_url_and_inline(fake_openai: FakeOpenAI, api: str) -> None:
    msg = Message(
        "user",
        (
            TextBlock("What is this?"),
            ImageBlock(url="https://example.com/cat.png"),
            ImageBlock(media_type="image/jpeg", data="QUJD"),
        ),
    )
    await collect(make_provider(fake_openai, api), request(msg))
    body = fake_openai.last_request.body
    if api == "chat":
        assert body["messages"][0]["content"] == [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        ]
    else:
        assert body["input"][0]["content"] == [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
            {"type": "input_image", "image_url": "data:image/jpeg;base64,QUJD", "detail": "auto"},
        ]


async def test_structured_output_json_schema(fake_openai: FakeOpenAI, api: str) -> None:
    await collect(make_provider(fake_openai, api), request(response_schema=STRICT))
    body = fake_openai.last_request.body
    if api == "chat":
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": STRICT, "strict": True},
        }
    else:
        assert body["text"] == {"format": {"type": "json_schema", "name": "response", "schema": STRICT, "strict": True}}


async def test_structured_output_envelope_and_non_strict_schema(fake_openai: FakeOpenAI) -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}}
    await collect(make_provider(fake_openai, "responses"), request(response_schema=loose))
    assert fake_openai.last_request.body["text"]["format"]["strict"] is False
    envelope = {"name": "answer", "schema": loose, "strict": False, "description": "An answer"}
    await collect(make_provider(fake_openai, "responses"), request(response_schema=envelope))
    assert fake_openai.last_request.body["text"]["format"] == {
        "type": "json_schema",
        "name": "answer",
        "schema": loose,
        "strict": False,
        "description": "An answer",
    }


def test_strict_schema_detection() -> None:
    assert is_strict_schema(STRICT)
    assert not is_strict_schema({"type": "object", "properties": {"a": {}}, "required": []})
    nested = {
        **STRICT,
        "properties": {"x": {"type": "array", "items": {"type": "object", "properties": {}}}},
        "required": ["x"],
    }
    assert not is_strict_schema(nested)


async def test_reasoning_settings(fake_openai: FakeOpenAI) -> None:
    await collect(
        make_provider(
            fake_openai,
            "responses",
            reasoning_effort="high",
            reasoning_summary="auto",
            include_encrypted_reasoning=True,
            store=False,
        )
    )
    body = fake_openai.last_request.body
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"] and body["store"] is False
    await collect(make_provider(fake_openai, "chat", reasoning_effort="low"))
    assert fake_openai.last_request.body["reasoning_effort"] == "low"


async def test_max_tokens_field_and_settings_default(fake_openai: FakeOpenAI) -> None:
    await collect(make_provider(fake_openai, "chat", max_tokens=77, max_tokens_field="max_completion_tokens"))
    body = fake_openai.last_request.body
    assert body["max_completion_tokens"] == 77 and "max_tokens" not in body


async def test_headers_auth_organization_and_project(fake_openai: FakeOpenAI) -> None:
    provider = make_provider(
        fake_openai, "responses", organization="org-1", project="proj-1", headers={"X-Tenant": "acme"}
    )
    await collect(provider)
    headers = fake_openai.last_request.headers
    assert headers["authorization"] == f"Bearer {TEST_KEY}"
    assert headers["openai-organization"] == "org-1" and headers["openai-project"] == "proj-1"
    assert headers["x-tenant"] == "acme"
    assert fake_openai.last_request.path == "/v1/responses"


async def test_request_options_openai_extra_body(fake_openai: FakeOpenAI) -> None:
    await collect(make_provider(fake_openai, "chat"), request(options={"openai": {"top_k": 20}}))
    assert fake_openai.last_request.body["top_k"] == 20


async def test_compatible_server_without_key_gets_a_placeholder(fake_openai: FakeOpenAI, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = OpenAIProvider(OpenAISettings(api="chat", base_url=fake_openai.base_url, model="llama3"))
    await collect(provider, request(model="llama3"))
    assert fake_openai.last_request.headers["authorization"] == "Bearer sk-no-key-required"


async def test_key_from_environment(fake_openai: FakeOpenAI, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    await collect(OpenAIProvider(OpenAISettings(api="chat", base_url=fake_openai.base_url)))
    assert fake_openai.last_request.headers["authorization"] == "Bearer sk-from-env"


@pytest.mark.parametrize(
    ("caps", "kwargs", "missing"),
    [
        (["streaming"], {"tools": (WEATHER,)}, "tools"),
        (["streaming", "tools"], {"response_schema": STRICT}, "json_schema"),
        (["streaming"], {"messages": (Message("user", (ImageBlock(url="https://x/y.png"),)),)}, "vision"),
    ],
)
async def test_undeclared_capabilities_are_refused_before_any_request(
    fake_openai: FakeOpenAI, caps: list[str], kwargs: dict, missing: str
) -> None:
    provider = make_provider(fake_openai, "chat", capabilities=caps)
    messages = kwargs.pop("messages", (Message.user("hi"),))
    with pytest.raises(CapabilityError) as info:
        await collect(provider, request(*messages, **kwargs))
    assert missing in str(info.value) and "capabilities" in str(info.value)
    assert fake_openai.requests == []


async def test_replies_are_unaffected_by_unknown_model_names(fake_openai: FakeOpenAI) -> None:
    fake_openai.enqueue(Reply([Text("ok")]))
    provider = make_provider(fake_openai, "chat", model="my-local-model", api_key=Secret("x"))
    items = await collect(provider, request(model=""))
    assert fake_openai.last_request.body["model"] == "my-local-model"
    assert items[-1].message.text == "ok"


# -- separate text blocks stay separate -----------------------------------------------------------

TWO_TURNS = (
    Message("user", (TextBlock("First question"), TextBlock("Second question"))),
    Message("assistant", (TextBlock("One answer."), TextBlock("Another answer."))),
    Message.user("Thanks"),
)


async def test_chat_sends_several_text_blocks_as_separate_parts(fake_openai: FakeOpenAI) -> None:
    await collect(make_provider(fake_openai, "chat"), request(*TWO_TURNS))
    user, assistant, last = fake_openai.last.body["messages"]
    assert user == {
        "role": "user",
        "content": [{"type": "text", "text": "First question"}, {"type": "text", "text": "Second question"}],
    }
    assert assistant["content"] == [
        {"type": "text", "text": "One answer."},
        {"type": "text", "text": "Another answer."},
    ]
    assert last == {"role": "user", "content": "Thanks"}  # one text block stays a plain string


async def test_responses_sends_several_assistant_text_blocks_as_separate_items(fake_openai: FakeOpenAI) -> None:
    await collect(make_provider(fake_openai, "responses"), request(*TWO_TURNS))
    items = fake_openai.last.body["input"]
    assert [item["content"] for item in items[:3]] == [
        [{"type": "input_text", "text": "First question"}, {"type": "input_text", "text": "Second question"}],
        "One answer.",
        "Another answer.",
    ]


async def test_a_failed_run_and_the_next_message_are_not_run_together(fake_openai: FakeOpenAI) -> None:
    from asm_kernel import Kernel
    from asm_kernel.errors import InvalidRequestError

    from asm_openai.testing import HttpError

    fake_openai.enqueue(HttpError(400, "refused"), Reply([Text("ok")]))
    provider = {"name": "gpt", "use": "openai", "api": "chat", "base_url": fake_openai.base_url, "api_key": TEST_KEY}
    async with Kernel({"store": {"use": "memory"}, "providers": [provider]}) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(InvalidRequestError):
            await kernel.run(session.id, "First question")
        await kernel.run(session.id, "Second question")
    texts = [part["text"] for message in fake_openai.last.body["messages"] for part in message["content"]]
    assert texts == ["First question", "Second question"]
