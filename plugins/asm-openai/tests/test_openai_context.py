"""Context windows end to end: the official SDK over HTTP against the fake OpenAI server, for
Chat Completions and the Responses API.

What was actually sent is read back from the fake: old turns dropped whole, each function call
followed by its output, the system prompt (instructions) always; OpenAI's real
``context_length_exceeded`` answer met with one tighter cut and one retry.
"""

from __future__ import annotations

from typing import Any

from asm_kernel import Kernel, RunStatus, ToolSpec
from openai_helpers import TEST_KEY

from asm_openai.testing import FakeOpenAI, Reply, Text, ToolCall

MODEL = "gpt-test"
SYSTEM = "Answer in one line."


def config(fake: FakeOpenAI, api: str, window: int = 100_000, **context: Any) -> dict[str, Any]:
    provider = {"name": "gpt", "use": "openai", "api": api, "base_url": fake.base_url, "api_key": TEST_KEY,
                "model": MODEL, "models": {MODEL: {"context_window": window, "max_output_tokens": 400}}}
    cfg: dict[str, Any] = {"store": {"use": "memory"}, "providers": [provider], "run": {"system": SYSTEM},
                           "resilience": {"max_attempts": 1}}
    if context:
        cfg["context"] = context
    return cfg


class Lookup:
    spec = ToolSpec("lookup", "look a thing up", {"type": "object", "properties": {"q": {"type": "string"}}})

    async def __call__(self, input: dict[str, Any]) -> str:
        return "r" * 500


def items(body: dict[str, Any], api: str) -> list[dict[str, Any]]:
    """The conversation as sent, without the system prompt."""
    if api == "chat":
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        return body["messages"][1:]
    assert body["instructions"] == SYSTEM
    return body["input"]


def check_wire(body: dict[str, Any], api: str) -> None:
    sent = items(body, api)
    assert sent[0]["role"] == "user"
    if api == "chat":
        for i, message in enumerate(sent):
            for call in message.get("tool_calls") or []:
                answers = [m for m in sent[i + 1:] if m["role"] == "tool" and m["tool_call_id"] == call["id"]]
                assert answers, f"tool call {call['id']} sent without its result"
            if message["role"] == "tool":
                before = [c["id"] for m in sent[:i] for c in (m.get("tool_calls") or [])]
                assert message["tool_call_id"] in before
    else:
        calls = [i.get("call_id") for i in sent if i.get("type") == "function_call"]
        outputs = [i.get("call_id") for i in sent if i.get("type") == "function_call_output"]
        assert sorted(calls) == sorted(outputs)


def first_text(body: dict[str, Any], api: str) -> str:
    content = items(body, api)[0]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


async def test_a_long_session_is_windowed_in_whole_turns(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.report_input_tokens = True
    turns = 12
    for i in range(turns):
        if i % 4 == 1:
            fake_openai.enqueue(Reply([ToolCall("lookup", {"q": str(i)}, call_id=f"call_{i}")]))
        fake_openai.enqueue(Reply([Text(f"answer {i}")]))
    async with Kernel(config(fake_openai, api, window=1_500), tools=[Lookup()]) as kernel:
        session = await kernel.sessions.create()
        for i in range(turns):
            result = await kernel.sessions.run(session.id, f"question {i}: " + "lorem ipsum " * 30)
            assert result.status is RunStatus.COMPLETED
        prepared = await kernel.sessions.events(session.id, types=["context_prepared"])
    bodies = [r.body for r in fake_openai.requests]
    for body in bodies:
        check_wire(body, api)
    assert first_text(bodies[-1], api).startswith("question ")
    assert not first_text(bodies[-1], api).startswith("question 0:")
    assert prepared[-1].payload["dropped"][0]["reason"] == "max_tokens"
    assert prepared[-1].payload["count"] in ("anchored", "estimated")


async def test_context_length_exceeded_gets_one_tighter_cut_and_one_retry(fake_openai: FakeOpenAI, api: str) -> None:
    fake_openai.report_input_tokens = True
    async with Kernel(config(fake_openai, api)) as kernel:
        session = await kernel.sessions.create()
        for i in range(6):
            await kernel.sessions.run(session.id, f"question {i} " + "w" * 600)
        fake_openai.context_limit = 700  # OpenAI's real 400 for a prompt over it
        result = await kernel.sessions.run(session.id, "and now?")
        events = await kernel.sessions.events(session.id)
    assert result.status is RunStatus.COMPLETED
    refused, retried = fake_openai.settled()[-2:]
    assert refused.outcome == "error" and retried.outcome == "completed"
    assert len(items(retried.body, api)) < len(items(refused.body, api))
    check_wire(retried.body, api)
    failed = [e for e in events if e.type == "provider_attempt_failed"][-1].payload["error"]
    assert failed["code"] == "provider.context_length_exceeded"
    if api == "chat":  # the chat wording gives the numbers; the Responses one does not
        assert failed["limit_tokens"] == 700 and failed["prompt_tokens"] > 700
    prepared = [e.payload for e in events if e.type == "context_prepared"][-1]
    assert prepared["retry"] == "context_length" and prepared["dropped"]
