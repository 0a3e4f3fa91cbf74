"""Context windows through the kernel: the context stage, compaction, pins, forks, the validator,
the context-length retry, and what the log records (scripted and echo providers, memory store)."""

from __future__ import annotations

from typing import Any

import pytest

from asm_kernel import Kernel, RunStatus, ToolSpec, hookimpl
from asm_kernel.builtin.echo import EchoProvider, EchoSettings
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider, ScriptedSettings
from asm_kernel.context.tokens import estimate_messages
from asm_kernel.context.validate import validate_request
from asm_kernel.errors import ContextLengthError, InvalidContextError, ValidationError
from asm_kernel.model import Message, ProviderRequest, TextBlock, ToolResultBlock

SYSTEM = "You are terse."


def scripted(turns: list[list[dict[str, Any]]] | None = None, window: int = 2_000) -> ScriptedProvider:
    return ScriptedProvider(settings=ScriptedSettings(turns=turns or [[{"text": "fine"}]], context_window=window))


def kernel(provider: Any, context: dict[str, Any] | None = None, store: Any = None, **providers: Any) -> Kernel:
    config: dict[str, Any] = {"store": {"use": "memory"}, "run": {"system": SYSTEM}}
    if context:
        config["context"] = context
    return Kernel(config, providers={"main": provider, **providers}, store=store)


def budget_of(provider: ScriptedProvider) -> int:
    window = provider.settings.context_window
    return window - min(8192, window, window // 4)


def check_request(provider: Any, request: ProviderRequest, budget: int) -> None:
    validate_request(request)
    assert request.system == SYSTEM
    # What the scripted provider counts (and reports) for the request is within the budget.
    assert estimate_messages(request.messages, request.system) <= budget


async def test_five_hundred_turns_in_a_small_window_never_fail_and_every_request_fits() -> None:
    provider = scripted()
    async with kernel(provider) as k:
        session = await k.sessions.create()
        for i in range(500):
            result = await k.sessions.run(session.id, f"turn {i}: " + "words " * 20)
            assert result.status is RunStatus.COMPLETED
        prepared = await k.sessions.events(session.id, types=["context_prepared"])
    budget = budget_of(provider)
    for request in provider.requests:
        check_request(provider, request, budget)
    assert len(prepared) == 500
    assert all(p.payload["counted_tokens"] <= budget for p in prepared)
    assert prepared[-1].payload["dropped"] and prepared[-1].payload["dropped"][0]["reason"] == "max_tokens"
    assert prepared[-1].payload["budget"] == budget
    # The last request starts with a user input and ends with the newest one.
    assert provider.requests[-1].messages[-1].text.startswith("turn 499:")


async def test_five_hundred_turns_with_summaries_never_fail() -> None:
    provider = scripted()
    summarizer = EchoProvider(EchoSettings(model="echo-sum"), name="sum")
    context = {"strategy": "summarize", "summarizer": "sum", "summary_max_tokens": 40}
    async with kernel(provider, context, sum=summarizer) as k:
        session = await k.sessions.create()
        for i in range(500):
            result = await k.sessions.run(session.id, f"turn {i}: " + "words " * 20)
            assert result.status is RunStatus.COMPLETED
        compactions = await k.sessions.events(session.id, types=["context_compacted"])
        events = await k.sessions.events(session.id)
    assert len(compactions) > 10
    budget = budget_of(provider)
    for request in provider.requests:
        check_request(provider, request, budget)
    last = compactions[-1].payload
    assert last["trigger"] == "auto" and last["provider"] == "sum" and last["model"] == "echo-sum"
    assert last["usage"]["input_tokens"] > 0 and last["cost"] == 0.0
    assert last["replaced"]["from"] <= 4
    # Later requests carry the summary in place of the replaced range; the originals stay in the log.
    sent = provider.requests[-1].messages[0].text
    assert sent.startswith("[Summary of the earlier conversation")
    assert sum(1 for e in events if e.type == "message_sent") == 500
    # Each compaction's usage is in the run's usage too, flagged in token_usage_updated.
    flagged = [e for e in events if e.type == "token_usage_updated" and e.payload.get("compaction")]
    assert len(flagged) == len(compactions)


async def test_context_prepared_records_the_window_and_is_stored_with_the_answer() -> None:
    provider = scripted([[{"text": "ok"}, {"usage": {"input_tokens": 40, "output_tokens": 2}}]])
    async with kernel(provider) as k:
        session = await k.sessions.create()
        await k.sessions.run(session.id, "first")
        await k.sessions.run(session.id, "second")
        events = await k.sessions.events(session.id)
    types = [e.type for e in events]
    prepared = [e for e in events if e.type == "context_prepared"]
    assert len(prepared) == 2
    first, second = (p.payload for p in prepared)
    assert first["strategy"] == "window" and first["provider"] == "main" and first["model"] == "scripted-1"
    assert first["count"] == "estimated" and first["anchor"] is None
    assert first["included"] == [{"from": 4, "to": 4}] and first["dropped"] == []
    # The second call's count starts from the first call's reported 40 tokens.
    assert second["count"] == "anchored" and second["anchor"]["reported_tokens"] == 40
    assert second["counted_tokens"] > 40 and second["counted_tokens"] < second["estimated_tokens"] + 40
    # Deferred: written just before the answer, in the same write.
    i = types.index("context_prepared")
    assert types[i + 1] in ("message_streamed", "message_received")


async def test_an_exact_anchor_keeps_a_window_the_estimate_would_have_cut() -> None:
    # The provider reports far fewer tokens than the estimator counts: the window can hold more.
    provider = scripted([[{"text": "ok"}, {"usage": {"input_tokens": 50, "output_tokens": 1}}]], window=2_000)
    async with kernel(provider) as k:
        session = await k.sessions.create()
        for i in range(16):
            await k.sessions.run(session.id, f"{i} " + "y" * 400)
        prepared = await k.sessions.events(session.id, types=["context_prepared"])
    last = prepared[-1].payload
    assert last["count"] == "anchored" and last["dropped"] == []
    assert last["estimated_tokens"] > last["budget"] >= last["counted_tokens"]


async def test_max_messages_and_max_age_per_run_and_pinned_turns_are_kept() -> None:
    provider = scripted(window=100_000)
    async with kernel(provider) as k:
        session = await k.sessions.create()
        for i in range(6):
            await k.sessions.run(session.id, f"message {i}")
        sent = await k.sessions.events(session.id, types=["message_sent"])
        await k.sessions.pin(session.id, sent[1].seq)
        await k.sessions.run(session.id, "now", context={"max_messages": 5})
        assert [m.text for m in provider.requests[-1].messages] == ["message 1", "fine", "message 5", "fine", "now"]
        await k.sessions.pin(session.id, sent[1].seq, pinned=False)
        await k.sessions.run(session.id, "later", context={"max_messages": 1})
        assert [m.text for m in provider.requests[-1].messages] == ["later"]
        await k.sessions.run(session.id, "aged", context={"max_age": 3600})
        assert len(provider.requests[-1].messages) == 17  # nothing is an hour old
        report = await k.sessions.context_report(session.id)
        window = await k.sessions.window(session.id, context={"max_messages": 3})
        assert [m.text for m in window.messages] == ["aged", "fine"]
        assert window.dropped and window.dropped[0]["reason"] == "max_messages"
        with pytest.raises(ValidationError, match="holds no message"):
            await k.sessions.pin(session.id, 1)
        with pytest.raises(ValidationError, match="max_messages"):
            await k.sessions.run(session.id, "x", context={"max_messages": 0})
        with pytest.raises(ValidationError, match="did you mean"):
            await k.sessions.run(session.id, "x", context={"max_message": 2})
    assert report[0]["limits"]["max_age"] == 3600.0


async def test_a_turn_that_alone_exceeds_the_budget_fails_typed_before_anything_is_sent() -> None:
    provider = scripted(window=400)
    async with kernel(provider) as k:
        session = await k.sessions.create()
        result = await k.sessions.run(session.id, "z" * 5_000, raise_on_error=False)
    assert result.status is RunStatus.FAILED and result.error["code"] == "context.window_exceeded"
    assert result.error["budget"] == 300 and result.error["required"] > 300
    assert provider.requests == []


async def test_the_validator_refuses_a_request_a_hook_broke() -> None:
    class Breaker:
        @hookimpl
        def asm_before_provider_request(self, request: ProviderRequest) -> ProviderRequest:
            # Drops the result of the model's tool call: an orphaned tool_use.
            messages = tuple(m for m in request.messages if not m.tool_results)
            from attrs import evolve

            return evolve(request, messages=messages)

    class Lookup:
        spec = ToolSpec("lookup")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "found"

    provider = scripted([[{"tool_use": {"name": "lookup", "input": {}, "id": "t1"}}], [{"text": "done"}]])
    k = Kernel({"store": {"use": "memory"}}, providers={"main": provider}, tools=[Lookup()], plugins=[Breaker()])
    async with k:
        result = await k.run_once("go", raise_on_error=False)
    assert result.status is RunStatus.FAILED and result.error["code"] == "context.invalid_request"
    assert "t1" in result.error["message"] and result.error["path"] == "messages[1]"
    assert len(provider.requests) == 1  # the broken second request was never sent


def test_the_validator_rules() -> None:
    user = Message.user("hi")
    with pytest.raises(InvalidContextError, match="first message"):
        validate_request(ProviderRequest(model="m", messages=(Message.assistant("x"),)))
    with pytest.raises(InvalidContextError, match="answers no tool call"):
        validate_request(ProviderRequest(model="m", messages=(Message("user", (ToolResultBlock("t", "r"),)),)))
    with pytest.raises(InvalidContextError, match="no messages"):
        validate_request(ProviderRequest(model="m", messages=()))
    validate_request(ProviderRequest(model="m", messages=(user, Message.assistant("prefill"))))
    with pytest.raises(InvalidContextError, match="reasoning"):
        from asm_kernel.model import ThinkingBlock

        validate_request(ProviderRequest(model="m", messages=(Message("user", (ThinkingBlock("t"),)),)))
    assert TextBlock("x")  # (keeps the import meaningful)


@pytest.mark.parametrize("strategy", ["window", "summarize"])
async def test_a_context_length_error_gets_one_compaction_and_one_retry(strategy: str) -> None:
    turns = [[{"text": "early answer " * 5}]] * 8 + [
        [{"error": "provider.context_length_exceeded", "message": "prompt is too long", "status": 400}],
        [{"text": "recovered"}],
    ]
    provider = scripted(turns, window=100_000)
    summarizer = EchoProvider(EchoSettings(model="echo-sum"), name="sum")
    async with kernel(provider, {"strategy": strategy, "summarizer": "sum", "summary_max_tokens": 30},
                      sum=summarizer) as k:
        session = await k.sessions.create()
        for i in range(8):
            await k.sessions.run(session.id, f"question {i} " + "q" * 300)
        result = await k.sessions.run(session.id, "the big one")
        events = await k.sessions.events(session.id)
    assert result.status is RunStatus.COMPLETED and result.output == "recovered"
    retried, failed = provider.requests[-1], provider.requests[-2]
    assert len(retried.messages) < len(failed.messages)
    prepared = [e.payload for e in events if e.type == "context_prepared"][-1]
    assert prepared["retry"] == "context_length"
    compacted = [e.payload for e in events if e.type == "context_compacted"]
    if strategy == "summarize":
        assert compacted and compacted[-1]["trigger"] == "context_length"
        assert retried.messages[0].text.startswith("[Summary of the earlier conversation")
    else:
        assert not compacted and prepared["dropped"]


async def test_a_second_context_length_error_fails_the_run() -> None:
    error = [{"error": "provider.context_length_exceeded", "message": "prompt is too long", "status": 400}]
    provider = scripted([[{"text": "a"}], error, error, [{"text": "never"}]], window=100_000)
    async with kernel(provider) as k:
        session = await k.sessions.create()
        await k.sessions.run(session.id, "one " + "x" * 400)
        with pytest.raises(ContextLengthError):
            await k.sessions.run(session.id, "two")
    assert len(provider.requests) == 3


async def test_manual_compaction_is_an_event_and_later_windows_use_it() -> None:
    provider = scripted(window=100_000)
    summarizer = EchoProvider(EchoSettings(model="echo-sum", prefix="SUMMARY: "), name="sum")
    async with kernel(provider, {"summarizer": "sum", "summary_max_tokens": 20}, sum=summarizer) as k:
        session = await k.sessions.create()
        for i in range(5):
            await k.sessions.run(session.id, f"fact {i}")
        event = await k.sessions.compact(session.id, keep_recent=2)
        assert event is not None and event.run_id is None
        assert event.payload["trigger"] == "manual" and event.payload["groups"] == 3
        assert event.payload["summary"].startswith("SUMMARY:") and event.payload["provider"] == "sum"
        await k.sessions.run(session.id, "next")
        sent = [m.text for m in provider.requests[-1].messages]
        transcript = await k.sessions.transcript(session.id)
        events = await k.sessions.events(session.id, types=["message_sent"])
        assert await k.sessions.compact(session.id, keep_recent=10) is None
    assert sent[0].startswith("[Summary of the earlier conversation") and "SUMMARY:" in sent[0]
    assert sent[0].endswith("fact 3") and sent[1:] == ["fine", "fact 4", "fine", "next"]
    assert transcript[0].text == sent[0]
    assert len(events) == 6  # the originals stay


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, int]] = []

    async def read(self, session_id: str, **kwargs: Any) -> Any:  # type: ignore[override]
        self.reads.append((session_id, kwargs.get("after", 0)))
        return await super().read(session_id, **kwargs)


async def test_forks_copy_the_prefix_keep_the_parent_and_stay_incremental() -> None:
    provider = scripted(window=100_000)
    summarizer = EchoProvider(EchoSettings(model="echo-sum"), name="sum")
    store = CountingStore()
    async with kernel(provider, {"summarizer": "sum", "summary_max_tokens": 20}, store=store, sum=summarizer) as k:
        parent = await k.sessions.create(metadata={"team": "a"}, tags=["t"])
        for i in range(4):
            await k.sessions.run(parent.id, f"p{i}")
        await k.sessions.compact(parent.id, keep_recent=2)
        sent = await k.sessions.events(parent.id, types=["message_sent"])
        at = (await k.sessions.pin(parent.id, sent[3].seq)).seq
        await k.sessions.run(parent.id, "p4")
        before = await k.sessions.events(parent.id)
        parent_transcript = await k.sessions.transcript(parent.id)

        fork = await k.sessions.fork(parent.id, at=at)
        fork_events = await k.sessions.events(fork.id)
        assert [e.type for e in fork_events[:2]] == ["session_created", "session_forked"]
        assert fork_events[1].payload == {"parent_session_id": parent.id, "at_seq": at, "copied": len(fork_events) - 2}
        assert fork.agent_id == parent.agent_id and fork.metadata == {"team": "a"} and fork.tags == ("t",)
        fork_transcript = await k.sessions.transcript(fork.id)
        # The fork's transcript is the parent's up to `at`: the summary, p2, p3 (pinned in the copy too).
        # (The summary's header names the range in each log's own seqs: 4-16 there, 3-6 here.)
        assert fork_transcript[1:] == parent_transcript[1:-2]
        head, fork_head = parent_transcript[0].content, fork_transcript[0].content
        assert head[1:] == fork_head[1:] and "(seq 3-6)" in fork_head[0].text  # type: ignore[union-attr]
        assert head[0].text.split("\n", 1)[1] == fork_head[0].text.split("\n", 1)[1]  # type: ignore[union-attr]
        pins = [e for e in fork_events if e.type == "message_pinned"]
        assert [e.payload["seq"] for e in pins] == [next(e.seq for e in fork_events
                                                         if e.type == "message_sent" and e.payload == sent[3].payload)]
        await k.sessions.run(fork.id, "f1")
        assert [m.text for m in provider.requests[-1].messages][-3:] == ["p3", "fine", "f1"]
        assert await k.sessions.events(parent.id) == before  # untouched

        grandchild = await k.sessions.fork(fork.id)
        assert await k.sessions.transcript(grandchild.id) == await k.sessions.transcript(fork.id)
        store.reads.clear()
        await k.sessions.run(grandchild.id, "g1")
        await k.sessions.run(grandchild.id, "g2")
        with pytest.raises(ValidationError, match="from 1 to"):
            await k.sessions.fork(parent.id, at=10_000)
    # Incremental: runs in the fork read only what is new in its own log, never the parents'.
    reads = [r for r in store.reads if r[0] != grandchild.id]
    assert reads == []
    assert all(after > 0 for sid, after in store.reads)


def test_the_sync_wrappers_compact_fork_and_pin() -> None:
    from asm_kernel.sync import SyncKernel

    summarizer = EchoProvider(EchoSettings(model="echo-sum"), name="sum")
    config = {"store": {"use": "memory"}, "context": {"summarizer": "sum", "summary_max_tokens": 10}}
    with SyncKernel(config, providers={"main": scripted(window=100_000), "sum": summarizer}) as asm:
        first = asm.run_once("one")
        asm.run(first.session_id, "two")
        asm.run(first.session_id, "three")
        pinned = asm.pin(first.session_id, 4)
        compacted = asm.compact(first.session_id, keep_recent=1)
        fork = asm.fork(first.session_id, at=pinned.seq)
        assert compacted is not None and compacted.payload["groups"] == 2
        assert [m.text for m in asm.transcript(fork.id)] == ["one", "fine", "two", "fine", "three", "fine"]
