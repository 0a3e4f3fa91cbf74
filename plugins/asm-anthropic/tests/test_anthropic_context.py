"""Context windows end to end: the official SDK over HTTP against the fake Anthropic API.

What was actually sent is read back from the fake: turns dropped whole, tool calls with their
results, reasoning with its signature, the system prompt always; ``count_tokens`` asked when the
estimate says the transcript does not fit; the API's real "prompt is too long" answer met with
one compaction and one retry.
"""

from __future__ import annotations

from typing import Any

from asm_anthropic.testing import FakeAnthropic, thinking_block, tool_use_block
from asm_anthropic.testing._server import COUNT_TOKENS

from asm_kernel import Kernel, RunStatus, ToolSpec
from asm_kernel.testing.fake_http import JsonResponse

MODEL = "claude-sonnet-5-5"
SYSTEM = "Answer in one line."


def config(fake: FakeAnthropic, window: int = 200_000, **context: Any) -> dict[str, Any]:
    provider = {"name": "claude", "use": "anthropic", "base_url": fake.url, "api_key": "test-key",
                "models": {MODEL: {"context_window": window, "max_output_tokens": 400}}}
    cfg: dict[str, Any] = {"store": {"use": "memory"}, "providers": [provider], "run": {"system": SYSTEM},
                           "resilience": {"max_attempts": 1}}
    if context:
        cfg["context"] = context
    return cfg


class Lookup:
    spec = ToolSpec("lookup", "look a thing up", {"type": "object", "properties": {"q": {"type": "string"}}})

    async def __call__(self, input: dict[str, Any]) -> str:
        return "r" * 600


def check_wire(body: dict[str, Any]) -> None:
    """The rules the real API enforces, on the body it received."""
    messages = body["messages"]
    assert messages[0]["role"] == "user"
    assert not any(b["type"] == "tool_result" for b in messages[0]["content"])
    for i, message in enumerate(messages):
        calls = {b["id"] for b in message["content"] if b["type"] == "tool_use"}
        if calls:
            results = {b["tool_use_id"] for b in messages[i + 1]["content"] if b["type"] == "tool_result"}
            assert calls <= results, f"messages[{i}] has a tool call without its result"
        for b in message["content"]:
            if b["type"] == "tool_result":
                prev = {c["id"] for c in messages[i - 1]["content"] if c["type"] == "tool_use"}
                assert b["tool_use_id"] in prev
    assert body["system"] == SYSTEM


async def test_a_long_session_is_windowed_by_whole_turns_with_tools_and_reasoning(
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.default = None
    fake_anthropic.report_input_tokens = True
    turns = 14
    for i in range(turns):
        if i % 3 == 1:  # a tool round with reasoning: kept together or dropped together
            fake_anthropic.reply([thinking_block("I should look it up.", f"sig-{i}"),
                                  tool_use_block("lookup", {"q": str(i)}, id=f"toolu_{i}")],
                                 stop_reason="tool_use", usage={"input_tokens": 900, "output_tokens": 20})
        fake_anthropic.reply_text(f"answer {i}", usage={"input_tokens": 900, "output_tokens": 5})
    async with Kernel(config(fake_anthropic, window=3_000), tools=[Lookup()]) as kernel:
        session = await kernel.sessions.create()
        for i in range(turns):
            result = await kernel.sessions.run(session.id, f"question {i}: " + "lorem ipsum " * 30)
            assert result.status is RunStatus.COMPLETED
        prepared = await kernel.sessions.events(session.id, types=["context_prepared"])
    bodies = [r.body for r in fake_anthropic.requests if r.route == "/v1/messages"]
    for body in bodies:
        check_wire(body)
    last = bodies[-1]
    assert last["messages"][0]["content"][0]["text"].startswith("question ")
    assert not last["messages"][0]["content"][0]["text"].startswith("question 0:")
    texts = [b.get("text", "") for m in last["messages"] for b in m["content"]]
    assert any(t.startswith(f"question {turns - 1}:") for t in texts)
    # Within a kept tool round the reasoning is replayed with its signature, before its call.
    for body in bodies:
        for message in body["messages"]:
            kinds = [b["type"] for b in message["content"]]
            if "tool_use" in kinds:
                assert kinds[0] == "thinking" and message["content"][0]["signature"].startswith("sig-")
    assert prepared[-1].payload["dropped"][0]["reason"] == "max_tokens"
    assert prepared[-1].payload["budget"] == 3_000 - 400


async def test_count_tokens_is_asked_when_the_estimate_says_it_does_not_fit(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.default = None
    fake_anthropic.reply_text("fits", usage={"output_tokens": 1})
    fake_anthropic.reply_text("cut", usage={"output_tokens": 1})
    history = []
    for i in range(10):  # an imported conversation: no earlier request's usage to anchor a count
        history.append(("message_sent", {"message": {"role": "user", "content": [
            {"type": "text", "text": f"q{i} " + "x" * 900}]}}))
        history.append(("message_received", {"message": {"role": "assistant", "content": [
            {"type": "text", "text": f"a{i}"}]}, "provider": "claude"}))
    # The fake counts 4 characters a token; asm's Claude estimate is 3: the exact count keeps more.
    async with Kernel(config(fake_anthropic, window=3_200)) as kernel:
        first = await kernel.sessions.create()
        await kernel.sessions.append(first.id, history)
        await kernel.sessions.run(first.id, "q10")
        second = await kernel.sessions.create()
        await kernel.sessions.append(second.id, history)
        fake_anthropic.script(JsonResponse(500, {"type": "error", "error": {"type": "api_error", "message": "x"}}),
                              route=COUNT_TOKENS)
        await kernel.sessions.run(second.id, "q10")
        exact = (await kernel.sessions.events(first.id, types=["context_prepared"]))[0].payload
        estimated = (await kernel.sessions.events(second.id, types=["context_prepared"]))[0].payload
    counts = [r for r in fake_anthropic.requests if r.route == COUNT_TOKENS]
    assert len(counts) == 2
    assert "max_tokens" not in counts[0].body and counts[0].body["system"] == SYSTEM
    assert exact["count"] == "exact" and exact["counted_tokens"] == exact["exact_tokens"] <= exact["budget"]
    assert exact["estimated_tokens"] > exact["budget"] and exact["dropped"] == []
    sent = [r.body for r in fake_anthropic.requests if r.route == "/v1/messages"]
    assert len(sent[0]["messages"]) == 21
    # When counting fails the estimate stands: the run still completes, with a cut window.
    assert estimated["count"] == "estimated" and estimated["dropped"] and len(sent[1]["messages"]) < 21


async def test_prompt_too_long_gets_one_compaction_and_one_retry(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.default = None
    fake_anthropic.report_input_tokens = True
    for i in range(6):
        fake_anthropic.reply_text(f"answer {i}", usage={"output_tokens": 5})
    async with Kernel(config(fake_anthropic, strategy="summarize", summary_max_tokens=50)) as kernel:
        session = await kernel.sessions.create()
        for i in range(6):
            await kernel.sessions.run(session.id, f"question {i} " + "w" * 600)
        fake_anthropic.context_limit = 900  # the real API's answer for a prompt over it
        fake_anthropic.reply_text("a summary of it all", usage={"output_tokens": 10})
        fake_anthropic.reply_text("answer 6", usage={"output_tokens": 5})
        result = await kernel.sessions.run(session.id, "and now?")
        events = await kernel.sessions.events(session.id)
    assert result.status is RunStatus.COMPLETED and result.output == "answer 6"
    refused, summary_call, retried = [r for r in fake_anthropic.settled() if r.route == "/v1/messages"][-3:]
    assert refused.outcome == "error" and len(refused.body["messages"]) == 13
    assert summary_call.body["system"].startswith("You summarize a conversation")
    assert retried.body["messages"][0]["content"][0]["text"].startswith("[Summary of the earlier conversation")
    check_wire(retried.body)
    failed = [e for e in events if e.type == "provider_attempt_failed"][-1].payload["error"]
    assert failed["code"] == "provider.context_length_exceeded"
    assert failed["prompt_tokens"] > 900 and failed["limit_tokens"] == 900
    compacted = [e.payload for e in events if e.type == "context_compacted"][-1]
    assert compacted["trigger"] == "context_length" and compacted["usage"]["output_tokens"] == 10
    assert compacted["cost"] > 0


async def test_a_second_refusal_fails_the_run_with_the_typed_error(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.default = None
    fake_anthropic.report_input_tokens = True
    for i in range(3):
        fake_anthropic.reply_text(f"answer {i}")
    fake_anthropic.reply_context_length(250_000, 200_000)
    fake_anthropic.reply_context_length(240_000, 200_000)
    fake_anthropic.reply_context_length(230_000, 200_000)
    async with Kernel(config(fake_anthropic)) as kernel:
        session = await kernel.sessions.create()
        for i in range(3):
            await kernel.sessions.run(session.id, f"question {i} " + "w" * 600)
        result = await kernel.sessions.run(session.id, "too much", raise_on_error=False)
        # With nothing left to drop there is no retry: the provider's refusal is the answer.
        alone = await kernel.run_once("hello", raise_on_error=False)
    assert result.status is RunStatus.FAILED
    assert result.error["code"] == "provider.context_length_exceeded" and result.error["prompt_tokens"] == 240_000
    messages = [r for r in fake_anthropic.requests if r.route == "/v1/messages"]
    assert len(messages) == 6
    sent = [len(r.body["messages"]) for r in messages[3:5]]
    assert sent[1] < sent[0]
    assert alone.error["code"] == "provider.context_length_exceeded" and alone.error["prompt_tokens"] == 230_000
