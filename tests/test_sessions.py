"""The session/run lifecycle and the execute-run flow, through the public API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asm_kernel import (
    EventType,
    Kernel,
    Message,
    RunStatus,
    SessionStatus,
    SyncKernel,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.context.transcript import MISSING_RESULT
from asm_kernel.errors import (
    IllegalTransitionError,
    ProviderOverloadedError,
    ProviderResponseError,
    RunTimeoutError,
    SeqConflictError,
    SessionNotFoundError,
    StateError,
    UnknownComponentError,
    ValidationError,
)


def kernel_with(*turns: list[dict[str, Any]], **kwargs: Any) -> tuple[Kernel, ScriptedProvider]:
    provider = ScriptedProvider(list(turns))
    return Kernel({"store": {"use": "memory"}}, providers={"main": provider}, **kwargs), provider


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


async def test_a_run_records_the_whole_story(kernel: Kernel) -> None:
    result = await kernel.run_once("hello there")
    assert result.status is RunStatus.COMPLETED and result.output == "hello there"
    assert result.provider == "echo" and result.model == "echo-1" and result.usage.output_tokens > 0
    events = await kernel.sessions.events(result.session_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kinds = types(events)
    assert kinds[:4] == ["session_created", "session_activated", "run_started", "message_sent"]
    assert kinds[-3:] == ["message_received", "token_usage_updated", "run_completed"]
    streamed = "".join(e.payload["text"] for e in events if e.type == EventType.MESSAGE_STREAMED)
    assert streamed == "hello there"
    run = await kernel.sessions.get_run(result.run_id)
    assert run.status is RunStatus.COMPLETED and run.output.text == "hello there"
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at
    assert all(e.run_id == run.id for e in events[2:])


async def test_second_run_sees_the_first(kernel: Kernel) -> None:
    first = await kernel.run_once("one")
    await kernel.run(first.session_id, "two")
    transcript = await kernel.sessions.transcript(first.session_id)
    assert [(m.role, m.text) for m in transcript] == [
        ("user", "one"),
        ("assistant", "one"),
        ("user", "two"),
        ("assistant", "two"),
    ]


async def test_transcript_replays_thinking_with_signature() -> None:
    kernel, provider = kernel_with(
        [{"thinking": "let me think", "signature": "sig-123"}, {"text": "42"}], [{"text": "again"}]
    )
    async with kernel:
        r = await kernel.run_once("q1")
        await kernel.run(r.session_id, "q2")
    sent = provider.requests[1].messages
    assert sent[1].content[0] == ThinkingBlock("let me think", "sig-123")
    assert sent[1].content[1] == TextBlock("42")


async def test_kernel_tools_are_executed_and_results_fed_back() -> None:
    class Add:
        spec = ToolSpec("add", "add two numbers", {"type": "object"})

        async def __call__(self, input: dict[str, Any]) -> str:
            return str(input["a"] + input["b"])

    kernel, provider = kernel_with(
        [{"text": "calling"}, {"tool_use": {"id": "t1", "name": "add", "input": {"a": 2, "b": 3}}}],
        [{"text": "the answer is 5"}],
        tools=[Add()],
    )
    async with kernel:
        result = await kernel.run_once("add 2 and 3")
        events = await kernel.sessions.events(result.session_id)
    assert result.output == "the answer is 5" and result.stop_reason == "end_turn"
    assert result.usage.output_tokens > 0
    completed = next(e for e in events if e.type == EventType.TOOL_CALL_COMPLETED)
    duration = completed.payload.pop("duration")
    assert isinstance(duration, float) and duration >= 0
    assert completed.payload == {
        "tool_use_id": "t1",
        "name": "add",
        "output": "5",
        "is_error": False,
        "source": "test_sessions",
    }
    assert provider.requests[0].tools[0].name == "add"
    second = provider.requests[1].messages
    assert second[-1].role == "user" and second[-1].content == (ToolResultBlock("t1", "5"),)
    assert types(events).count("message_received") == 2


async def test_a_failing_tool_becomes_an_error_result_for_the_model() -> None:
    class Broken:
        spec = ToolSpec("broken")

        async def __call__(self, input: dict[str, Any]) -> str:
            raise KeyError("nope")

    kernel, provider = kernel_with(
        [{"tool_use": {"id": "t1", "name": "broken"}}], [{"text": "sorry"}], tools=[Broken()]
    )
    async with kernel:
        result = await kernel.run_once("x")
    assert result.output == "sorry"
    block = provider.requests[1].messages[-1].content[0]
    assert isinstance(block, ToolResultBlock) and block.is_error and "KeyError" in block.content


async def test_unknown_tool_calls_are_returned_and_answered_next_run() -> None:
    kernel, provider = kernel_with(
        [{"tool_use": {"id": "call-9", "name": "lookup_order", "input": {"order": 1234}}}],
        [{"text": "your order shipped"}],
    )
    async with kernel:
        first = await kernel.run_once("where is my order?", tools=[ToolSpec("lookup_order")])
        assert first.status is RunStatus.COMPLETED and first.stop_reason == "tool_use"
        assert [c.id for c in first.pending_tool_calls] == ["call-9"]
        events = await kernel.sessions.events(first.session_id, types=["run_completed"])
        assert events[0].payload["pending_tool_calls"] == ["call-9"]
        second = await kernel.run(first.session_id, [ToolResultBlock("call-9", "shipped yesterday")])
    assert second.output == "your order shipped"
    msgs = provider.requests[1].messages
    assert msgs[-2].tool_uses[0].id == "call-9" and msgs[-1].tool_results[0].content == "shipped yesterday"


async def test_an_unanswered_tool_call_is_never_orphaned() -> None:
    kernel, provider = kernel_with([{"tool_use": {"id": "t1", "name": "x"}}], [{"text": "ok"}])
    async with kernel:
        first = await kernel.run_once("go")
        await kernel.run(first.session_id, "never mind")
    sent = provider.requests[1].messages
    assert sent[-1].role == "user"
    assert sent[-1].content[0] == ToolResultBlock("t1", MISSING_RESULT, True)
    assert sent[-1].content[1] == TextBlock("never mind")


async def test_max_turns_bounds_the_tool_loop() -> None:
    class Echo:
        spec = ToolSpec("again")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "again"

    kernel, provider = kernel_with([{"tool_use": {"name": "again"}}], tools=[Echo()])
    async with kernel:
        result = await kernel.run_once("loop", max_turns=3)
    assert len(provider.requests) == 3 and result.stop_reason == "max_turns"


async def test_provider_error_fails_the_run_and_is_recorded() -> None:
    kernel, _ = kernel_with([{"text": "partial "}, {"error": "provider.overloaded", "message": "busy"}])
    async with kernel:
        session = await kernel.sessions.create()
        with pytest.raises(ProviderOverloadedError) as info:
            await kernel.run(session.id, "hi")
        assert info.value.output_started is True
        assert info.value.details["run_id"]
        events = await kernel.sessions.events(session.id)
        run = await kernel.sessions.get_run(info.value.details["run_id"])
    assert types(events)[-2:] == ["error_occurred", "run_failed"]
    failed = events[-1].payload["error"]
    assert failed["code"] == "provider.overloaded" and failed["retryable"] and failed["output_started"]
    assert run.status is RunStatus.FAILED and run.error["code"] == "provider.overloaded"
    assert "message_received" not in types(events)  # nothing partial pretends to be complete


async def test_failed_run_result_without_raising() -> None:
    kernel, _ = kernel_with([{"error": "provider.rate_limited"}])
    async with kernel:
        session = await kernel.sessions.create()
        items = [i async for i in kernel.sessions.stream_run(session.id, "x", raise_on_error=False)]
    assert items[-1].status is RunStatus.FAILED and items[-1].error["code"] == "provider.rate_limited"


async def test_truncated_stream_fails_the_run() -> None:
    class Truncating(ScriptedProvider):
        async def stream(self, request):
            yield __import__("asm_kernel").TextDelta("half an ans")

    kernel = Kernel({"store": {"use": "memory"}}, providers={"t": Truncating([])})
    async with kernel:
        with pytest.raises(ProviderResponseError, match="without a final message"):
            await kernel.run_once("x")


async def test_cancelling_a_run_records_run_cancelled() -> None:
    kernel, _ = kernel_with([{"text": "slow "}, {"delay": 30}, {"text": "never"}])
    async with kernel:
        session = await kernel.sessions.create()
        task = asyncio.create_task(kernel.run(session.id, "x"))
        while not [e for e in await kernel.sessions.events(session.id) if e.type == "message_streamed"]:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events = await kernel.sessions.events(session.id)
        runs = await kernel.sessions.runs(session.id)
    assert types(events)[-1] == "run_cancelled"
    assert runs[0].status is RunStatus.CANCELLED


async def test_timeout_ends_the_run_timed_out() -> None:
    kernel, _ = kernel_with([{"delay": 30}, {"text": "late"}])
    async with kernel:
        session = await kernel.sessions.create()
        with pytest.raises(RunTimeoutError):
            await kernel.run(session.id, "x", timeout=0.05)
        events = await kernel.sessions.events(session.id)
        runs = await kernel.sessions.runs(session.id)
    assert types(events)[-1] == "run_timed_out" and events[-1].payload["timeout"] == 0.05
    assert runs[0].status is RunStatus.TIMED_OUT


async def test_idempotency_key_returns_the_existing_run() -> None:
    kernel, provider = kernel_with([{"text": "once"}])
    async with kernel:
        session = await kernel.sessions.create()
        a = await kernel.run(session.id, "x", idempotency_key="req-1")
        b = await kernel.run(session.id, "x", idempotency_key="req-1")
    assert a.run_id == b.run_id and b.output == "once" and len(provider.requests) == 1


async def test_session_lifecycle_and_paused_sessions_take_no_runs(kernel: Kernel) -> None:
    s = await kernel.sessions.create(agent_id="bot", metadata={"user": "u1"}, tags=["vip"])
    assert s.status is SessionStatus.PENDING
    await kernel.sessions.activate(s.id)
    await kernel.sessions.pause(s.id, reason="human handoff")
    with pytest.raises(StateError, match="resume"):
        await kernel.run(s.id, "x")
    with pytest.raises(IllegalTransitionError):
        await kernel.sessions.pause(s.id)
    await kernel.sessions.resume(s.id)
    assert (await kernel.run(s.id, "back")).output == "back"
    await kernel.sessions.complete(s.id)
    with pytest.raises(StateError, match="new session"):
        await kernel.run(s.id, "x")
    kinds = types(await kernel.sessions.events(s.id))
    assert {"session_paused", "session_resumed", "session_completed"} <= set(kinds)
    paused = (await kernel.sessions.events(s.id, types=["session_paused"]))[0]
    assert paused.payload == {"from": "active", "reason": "human handoff"}
    assert [x.id for x in await kernel.sessions.list(tag="vip")] == [s.id]


async def test_bad_arguments_get_typed_errors(kernel: Kernel) -> None:
    s = await kernel.sessions.create()
    with pytest.raises(ValidationError, match="empty"):
        await kernel.run(s.id, "")
    with pytest.raises(ValidationError, match="role"):
        await kernel.run(s.id, Message.assistant("hi"))
    with pytest.raises(ValidationError):
        await kernel.run(s.id, 42)
    with pytest.raises(ValidationError, match="input\\[0\\]"):
        await kernel.run(s.id, [ToolUseBlock("t", "x")])
    with pytest.raises(ValidationError, match="max_turns"):
        await kernel.run(s.id, "x", max_turns=0)
    with pytest.raises(UnknownComponentError, match="ghost"):
        await kernel.run(s.id, "x", provider="ghost")
    with pytest.raises(SessionNotFoundError):
        await kernel.run("ses_missing", "x")
    with pytest.raises(ValidationError):
        await kernel.sessions.create(tags="vip")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await kernel.sessions.events(s.id, after=-5)


async def test_many_sessions_at_once_keep_gapless_logs(kernel: Kernel) -> None:
    results = await asyncio.gather(*(kernel.run_once(f"message {i}") for i in range(30)))
    for r in results:
        events = await kernel.sessions.events(r.session_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert r.output == r.output and events[-1].type == "run_completed"


def test_sync_kernel_for_scripts() -> None:
    with SyncKernel({"store": {"use": "memory"}}) as asm:
        r = asm.run_once("sync hello")
        assert r.output == "sync hello"
        assert asm.transcript(r.session_id)[-1].text == "sync hello"
        assert asm.get_session(r.session_id).status is SessionStatus.ACTIVE
        assert asm.events(r.session_id, types=["run_completed"])[0].payload["output"] == "sync hello"


async def test_sync_kernel_refuses_a_running_loop() -> None:
    with pytest.raises(StateError, match="running event loop"):
        SyncKernel({"store": {"use": "memory"}})


async def test_configured_tools_are_called_by_their_spec_name() -> None:
    from asm_kernel import hookimpl
    from asm_kernel.errors import ConfigError

    class Plugin:
        @hookimpl
        def asm_register_tools(self, register):
            class Clock:
                spec = ToolSpec("current_time")

                async def __call__(self, input: dict[str, Any]) -> str:
                    return "12:00"

            register("clock", lambda s, c: Clock())

    provider = ScriptedProvider([[{"tool_use": {"id": "t", "name": "current_time"}}], [{"text": "noon"}]])
    cfg = {"store": {"use": "memory"}, "tools": [{"name": "my-clock", "use": "clock"}]}
    async with Kernel(cfg, providers={"p": provider}, plugins=[Plugin()]) as k:
        assert list(k.tools) == ["current_time"]
        assert (await k.run_once("time?")).output == "noon"
    with pytest.raises(ConfigError, match="two tools"):
        Kernel(
            {"store": {"use": "memory"}, "tools": [{"name": "a", "use": "clock"}, {"name": "b", "use": "clock"}]},
            plugins=[Plugin()],
        )._build_all()


async def test_a_run_costs_two_durable_writes_and_one_more_per_tool_round() -> None:
    from asm_kernel import ToolSpec
    from asm_kernel.builtin.memory import MemoryStore

    class Counting(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.durable_units: list[list[str]] = []

        async def commit(self, unit: Any) -> Any:
            if unit.durable:
                self.durable_units.append([e.type for e in unit.events])
            return await super().commit(unit)

    class Lookup:
        spec = ToolSpec("lookup")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "found"

    store = Counting()
    provider = ScriptedProvider(
        [[{"text": "one moment"}, {"tool_use": {"name": "lookup", "input": {}, "id": "t1"}}], [{"text": "done"}]]
    )
    async with Kernel({"plugins": {"autoload": False}}, store=store, providers={"s": provider}, tools=[Lookup()]) as k:
        await k.run_once("a question that needs the tool")
    plain = store.durable_units
    assert len(plain) == 3  # start (with the new session), the tool round, the outcome
    assert plain[0][:3] == ["session_created", "session_activated", "run_started"]
    assert plain[1][-1] == "tool_call_completed"
    assert plain[2][-1] == "run_completed"
    store2 = Counting()
    provider2 = ScriptedProvider([[{"text": "just text"}]])
    async with Kernel({"plugins": {"autoload": False}}, store=store2, providers={"s": provider2}) as k:
        await k.run_once("no tools here")
    assert [u[-1] for u in store2.durable_units] == ["routing_decided", "run_completed"]


async def test_the_transcript_cache_is_bounded_in_bytes_and_stays_incremental() -> None:
    from asm_kernel.builtin.memory import MemoryStore

    class CountingReads(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.read_from: list[int] = []

        async def read(self, session_id: str, **kwargs: Any) -> Any:
            self.read_from.append(kwargs.get("after", 0))
            return await super().read(session_id, **kwargs)

    store = CountingReads()
    async with Kernel(
        {"plugins": {"autoload": False}}, store=store, providers={"s": ScriptedProvider([[{"text": "x" * 500}]])}
    ) as k:
        k.sessions.transcript_cache_bytes = 20_000
        sessions = [await k.sessions.create() for _ in range(40)]
        for s in sessions:
            await k.sessions.run(s.id, "hello " * 50)
        count, size = k.sessions.transcript_cache
        assert size <= 20_000 and 1 < count < 40
        # A cached session's next run reads only what came after the cached seq.
        last = sessions[-1]
        store.read_from.clear()
        await k.sessions.run(last.id, "again")
        assert 0 not in store.read_from


async def test_integrations_append_their_own_events_atomically() -> None:
    async with Kernel({"store": {"use": "memory"}}) as k:
        s = await k.sessions.create()
        stored = await k.sessions.append(s.id, [("myapp.note", {"n": 1}), ("myapp.note", {"n": 2})])
        assert [e.seq for e in stored] == [2, 3]
        from asm_kernel import Event

        again = Event(session_id=s.id, type="myapp.note", payload={"n": 3})
        assert (await k.sessions.append(s.id, [again]))[0].seq == 4
        assert (await k.sessions.append(s.id, [again]))[0].seq == 4  # a retry is not stored twice
        with pytest.raises(SeqConflictError):
            await k.sessions.append(s.id, [("myapp.note", {})], expected_seq=1)
        with pytest.raises(ValidationError):
            await k.sessions.append(s.id, [("myapp.note", "not a payload")])  # type: ignore[list-item]
        await k.sessions.activate(s.id)
        await k.sessions.complete(s.id)
        with pytest.raises(StateError):
            await k.sessions.append(s.id, [("myapp.note", {})])
        assert [e.seq for e in await k.sessions.events(s.id)] == [1, 2, 3, 4, 5, 6]
