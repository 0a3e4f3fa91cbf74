"""A run that needs a person leaves execution, survives restarts, and continues once decided."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from asm_kernel import Kernel, ModelInfo, Price, RunStatus, ToolResultBlock, ToolSpec, hookimpl
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import IllegalTransitionError, NotFoundError, StateError, StorageError, ValidationError
from asm_kernel.model import Run, utcnow
from asm_kernel.testing import FaultyStore, assert_record_and_log_agree

ROUND = [
    {"text": "I will clean up."},
    {"tool_use": {"id": "t_lookup", "name": "lookup", "input": {"q": "old files"}}},
    {"tool_use": {"id": "t_delete", "name": "delete_file", "input": {"path": "/tmp/x"}}},
    {"usage": {"input_tokens": 30, "output_tokens": 12}},
]
ANSWER = [{"text": "Cleaned up."}, {"usage": {"input_tokens": 60, "output_tokens": 5}}]
APPROVAL = {"use": "approval", "tools": ["delete_*"], "timeout": 600}


class Tools:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def all(self) -> list[Any]:
        owner = self

        class Lookup:
            spec = ToolSpec("lookup")

            async def __call__(self, input: dict[str, Any]) -> str:
                owner.calls.append("lookup")
                return "3 old files"

        class Delete:
            spec = ToolSpec("delete_file")

            async def __call__(self, input: dict[str, Any]) -> str:
                owner.calls.append("delete_file")
                return f"deleted {input['path']}"

        return [Lookup(), Delete()]


def kernel(store: Any, provider: Any, tools: Tools, *policies: dict[str, Any], **kwargs: Any) -> Kernel:
    config = {"plugins": {"autoload": False}, "policies": list(policies) or [APPROVAL]}
    return Kernel(config, store=store, providers={"s": provider}, tools=tools.all(), **kwargs)


async def test_a_tool_round_waits_for_a_person_and_continues_after_a_restart() -> None:
    store = MemoryStore()
    tools = Tools()
    first_provider = ScriptedProvider([ROUND])
    async with kernel(store, first_provider, tools) as k:
        session = await k.sessions.create()
        waiting = await k.sessions.run(session.id, "clean up old files")
    # The run left execution: stored awaiting_approval, no lease, nothing of the round ran.
    assert waiting.status is RunStatus.AWAITING_APPROVAL and waiting.stop_reason == "approval_required"
    assert [(a.tool_use_id, a.name, a.kind) for a in waiting.approvals] == [("t_delete", "delete_file", "tool")]
    assert tools.calls == []
    record = await store.get_run(waiting.run_id)
    assert record.status is RunStatus.AWAITING_APPROVAL and record.lease_expires_at is None
    assert record.usage.total_tokens == 42

    # Another process (a new kernel on the same store) finds it, decides, and continues it.
    second_provider = ScriptedProvider([ANSWER])
    async with kernel(store, second_provider, tools) as k:
        report = await k.runtime.start()
        assert report.crashed == () and report.resumed == ()  # recovery leaves a waiting run alone
        (request,) = await k.approvals.pending()
        assert request.run_id == waiting.run_id and request.input == {"path": "/tmp/x"}
        assert request.expires_at is not None and request.expires_at > utcnow()
        run = await k.approvals.approve(waiting.run_id, "t_delete", by="alice", reason="safe to delete")
        assert run.status is RunStatus.PENDING
        result = await k.runtime.await_run(waiting.run_id)  # its runtime resumed it at once
        events = await k.sessions.events(session.id)
    assert result.status is RunStatus.COMPLETED and result.output == "Cleaned up."
    assert sorted(tools.calls) == ["delete_file", "lookup"]  # the whole round ran (at once)
    assert result.usage.total_tokens == 42 + 65  # both executions' usage
    kinds = [e.type for e in events]
    assert kinds.count("message_sent") == 1 and kinds.count("run_started") == 2
    assert kinds.count("tool_call_started") == 2  # recorded once, before the wait
    granted = next(e for e in events if e.type == "approval_granted")
    assert granted.payload["decided_by"] == "alice" and granted.payload["reason"] == "safe to delete"
    assert kinds.index("approval_requested") < kinds.index("approval_granted") < kinds.index("tool_call_completed")
    # The model continued with the round's results after its own tool calls.
    sent = second_provider.requests[0].messages
    assert sent[-2].tool_uses[1].id == "t_delete"
    assert [b.tool_use_id for b in sent[-1].content] == ["t_lookup", "t_delete"]
    await assert_record_and_log_agree(store, session.id)


async def test_a_denied_call_answers_the_model_with_an_error_and_the_run_goes_on() -> None:
    store, tools = MemoryStore(), Tools()
    provider = ScriptedProvider([ROUND, ANSWER])
    async with kernel(store, provider, tools) as k:
        waiting = await k.run_once("clean up")
        await k.approvals.deny(waiting.run_id, by="bob", reason="not today")
        result = await k.sessions.execute(waiting.run_id)
        done = await k.sessions.events(waiting.session_id, types=["tool_call_completed"])
    assert result.status is RunStatus.COMPLETED and tools.calls == ["lookup"]
    assert done[1].payload["output"] == "error: denied by bob: not today" and done[1].payload["denied"] == "bob"
    assert provider.requests[1].messages[-1].content[1] == ToolResultBlock("t_delete", done[1].payload["output"], True)


async def test_an_approval_nobody_decides_in_time_is_denied() -> None:
    store, tools = MemoryStore(), Tools()
    async with kernel(store, ScriptedProvider([ROUND, ANSWER]), tools, {**APPROVAL, "timeout": 60}) as k:
        waiting = await k.run_once("clean up")
        assert await k.approvals.expire() == []  # not yet
        later = utcnow() + timedelta(seconds=61)
        assert await k.approvals.expire(now=later) == [waiting.approvals[0].id]
        run = await k.sessions.get_run(waiting.run_id)
        assert run.status is RunStatus.PENDING
        result = await k.sessions.execute(waiting.run_id)
        denied = await k.sessions.events(waiting.session_id, types=["approval_denied"])
    assert result.status is RunStatus.COMPLETED and tools.calls == ["lookup"]
    assert denied[0].payload["decided_by"] == "asm.timeout"


async def test_approving_after_the_deadline_records_the_timeout_and_says_so() -> None:
    store, tools = MemoryStore(), Tools()
    async with kernel(store, ScriptedProvider([ROUND, ANSWER]), tools, {**APPROVAL, "timeout": 60}) as k:
        waiting = await k.run_once("clean up")
        with pytest.raises(StateError, match="expired"):
            await k.approvals.decide(waiting.run_id, approve=True, by="late", now=utcnow() + timedelta(hours=1))
        run = await k.sessions.get_run(waiting.run_id)
    assert run.status is RunStatus.PENDING


async def test_a_cost_threshold_asks_before_the_call_and_a_denial_fails_the_run() -> None:
    class Priced(ScriptedProvider):
        @property
        def models(self) -> Any:
            return (ModelInfo("scripted-1", 100_000, 1_000, Price(1.0, 10.0)),)

    store, tools = MemoryStore(), Tools()
    policy = {"use": "approval", "cost_over": 0.001}
    provider = Priced([ANSWER])
    async with kernel(store, provider, tools, policy) as k:
        waiting = await k.run_once("hello")
        assert waiting.status is RunStatus.AWAITING_APPROVAL and provider.requests == []
        assert waiting.approvals[0].kind == "cost"
        await k.approvals.approve(waiting.run_id, by="carol")
        done = await k.sessions.execute(waiting.run_id)
        assert done.status is RunStatus.COMPLETED and len(provider.requests) == 1
        again = await k.run(done.session_id, "and again?")
        failed = await k.approvals.deny(again.run_id, by="carol", reason="too expensive")
        events = await k.sessions.events(done.session_id, run_id=again.run_id)
    assert failed.status is RunStatus.FAILED and failed.error["code"] == "policy.approval_denied"
    assert [e.type for e in events][-3:] == ["approval_denied", "error_occurred", "run_failed"]
    await assert_record_and_log_agree(store, done.session_id)


async def test_a_budget_can_ask_a_person_to_go_past_its_limit() -> None:
    store, tools = MemoryStore(), Tools()
    loop = [[{"tool_use": {"name": "lookup", "input": {}}}]] * 3 + [ANSWER]
    policy = {"use": "budget", "max_model_calls": 1, "action": "approve", "approval_timeout": 30}
    provider = ScriptedProvider(loop)
    async with kernel(store, provider, tools, policy) as k:
        waiting = await k.run_once("go")
        assert waiting.status is RunStatus.AWAITING_APPROVAL and len(provider.requests) == 1
        (request,) = waiting.approvals
        assert request.kind == "budget" and request.key == "budget:budget:max_model_calls"
        await k.approvals.approve(waiting.run_id, by="dana")
        done = await k.sessions.execute(waiting.run_id)
        decided = await k.sessions.events(waiting.session_id, types=["policy_decided"])
    assert done.status is RunStatus.COMPLETED and len(provider.requests) == 4
    assert [d.payload["action"] for d in decided if d.payload["step"] == "model_call"] == [
        "allow", "approve", "warn", "warn", "warn"]


async def test_other_runs_of_the_session_wait_behind_a_run_awaiting_approval() -> None:
    store, tools = MemoryStore(), Tools()
    provider = ScriptedProvider([ROUND, ANSWER, [{"text": "second answer"}]])
    async with kernel(store, provider, tools) as k:
        session = await k.sessions.create()
        first = await k.runtime.execute_run(session.id, "clean up")
        assert first.status is RunStatus.AWAITING_APPROVAL
        with pytest.raises(StateError, match="awaiting approval"):
            await k.sessions.run(session.id, "a direct run would split the round")
        queued = await k.runtime.submit_run(session.id, "next question")
        for _ in range(20):
            await asyncio.sleep(0)
        assert not queued.done() and (await k.sessions.get_run(queued.run_id)).status is RunStatus.PENDING
        await k.approvals.approve(first.run_id, by="erin")
        second = await queued
        resumed = await k.runtime.await_run(first.run_id)
    assert resumed.status is RunStatus.COMPLETED and second.output == "second answer"
    assert resumed.output == "Cleaned up."


async def test_a_waiting_run_can_be_cancelled_and_decisions_are_checked() -> None:
    store, tools = MemoryStore(), Tools()
    async with kernel(store, ScriptedProvider([ROUND]), tools) as k:
        waiting = await k.run_once("clean up")
        with pytest.raises(ValidationError, match="who decides"):
            await k.approvals.approve(waiting.run_id, by=" ")
        with pytest.raises(NotFoundError, match="open requests: t_delete"):
            await k.approvals.approve(waiting.run_id, "t_nope", by="x")
        cancelled = await k.runtime.cancel_run(waiting.run_id, "changed my mind")
        assert cancelled.status is RunStatus.CANCELLED
        with pytest.raises(StateError, match="not awaiting approval"):
            await k.approvals.approve(waiting.run_id, by="x")
        await k.sessions.complete(waiting.session_id)  # nothing holds the session open any more
    with pytest.raises(IllegalTransitionError):
        Run("s", status=RunStatus.AWAITING_APPROVAL).transition(RunStatus.COMPLETED)


async def test_a_session_cannot_complete_while_a_run_awaits_approval() -> None:
    async with kernel(MemoryStore(), ScriptedProvider([ROUND]), Tools()) as k:
        waiting = await k.run_once("clean up")
        with pytest.raises(StateError, match="pending or running"):
            await k.sessions.complete(waiting.session_id)


async def test_two_decisions_at_once_queue_the_run_exactly_once() -> None:
    both = [{"tool_use": {"id": f"t{i}", "name": "delete_file", "input": {"path": str(i)}}} for i in range(2)]
    store, tools = MemoryStore(), Tools()
    async with kernel(store, ScriptedProvider([both, ANSWER]), tools) as k:
        waiting = await k.run_once("delete both")
        assert len(waiting.approvals) == 2
        runs = await asyncio.gather(
            k.approvals.approve(waiting.run_id, "t0", by="a"), k.approvals.approve(waiting.run_id, "t1", by="b")
        )
        events = await k.sessions.events(waiting.session_id, types=["approval_granted"])
    assert sorted(r.status.value for r in runs) == ["awaiting_approval", "pending"]
    assert len(events) == 2


async def test_the_hook_tells_someone_a_run_waits() -> None:
    told: list[Any] = []

    class Notify:
        @hookimpl
        def asm_run_awaiting_approval(self, session: Any, run: Any, approvals: Any) -> None:
            told.append((run.status, [a.tool_use_id for a in approvals]))

    async with kernel(MemoryStore(), ScriptedProvider([ROUND]), Tools(), plugins=[Notify()]) as k:
        await k.run_once("clean up")
    assert told == [(RunStatus.AWAITING_APPROVAL, ["t_delete"])]


async def test_workers_continue_a_decided_run_wherever_it_was_paused() -> None:
    store, tools = MemoryStore(), Tools()
    async with kernel(store, ScriptedProvider([ROUND, ANSWER]), tools) as k:
        session = await k.sessions.create()
        handle = await k.runtime.submit_run(session.id, "clean up", execute=False)
        worker = k.runtime.worker(poll=0.01)
        task = asyncio.create_task(worker.run())
        paused = await handle
        assert paused.status is RunStatus.AWAITING_APPROVAL
        await k.approvals.approve(paused.run_id, by="frank")
        result = await k.runtime.await_run(paused.run_id)
        await worker.stop()
        await task
    assert result.status is RunStatus.COMPLETED and sorted(tools.calls) == ["delete_file", "lookup"]


@pytest.mark.parametrize("mode", ["before", "after", "down"])
async def test_a_fault_at_the_pause_or_the_decision_leaves_record_and_log_agreeing(mode: str) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner, close_inner=False)
    async with kernel(faulty, ScriptedProvider([ROUND, ANSWER]), Tools()) as k:
        faulty.arm(10**9)
        waiting = await k.run_once("clean up")
        await k.approvals.approve(waiting.run_id, by="g")
        await k.sessions.execute(waiting.run_id)
        writes = faulty.writes
    for n in range(1, writes + 1):
        async with kernel(faulty, ScriptedProvider([ROUND, ANSWER]), Tools()) as k:
            k.sessions.commit_backoff = 0.0
            session = await k.sessions.create()
            faulty.arm(n, mode)
            try:
                waiting = await k.sessions.run(session.id, "clean up", raise_on_error=False)
                if waiting.status is RunStatus.AWAITING_APPROVAL:
                    await k.approvals.approve(waiting.run_id, by="g")
                    await k.sessions.execute(waiting.run_id, raise_on_error=False)
            except StorageError:
                assert mode == "down"
            faulty.heal()
            await k.sessions.closer.flush()
            await assert_record_and_log_agree(inner, session.id)
            for run in await inner.list_runs(session_id=session.id):
                if run.status is RunStatus.AWAITING_APPROVAL:  # waiting, as its log says
                    events = await inner.read(session.id, run_id=run.id, types=["approval_requested"])
                    assert len(events) >= 1


async def test_recovery_never_takes_a_waiting_run_for_a_crashed_one() -> None:
    now = [utcnow()]
    store = MemoryStore(clock=lambda: now[0])
    async with kernel(store, ScriptedProvider([ROUND]), Tools()) as k:
        waiting = await k.run_once("clean up")
    now[0] += timedelta(days=30)  # every lease there ever was has long expired
    async with kernel(store, ScriptedProvider([ANSWER]), Tools()) as k:
        report = await k.runtime.recover()
        run = await k.sessions.get_run(waiting.run_id)
    assert report.crashed == () and run.status is RunStatus.AWAITING_APPROVAL


def test_the_sync_kernel_decides_and_continues() -> None:
    from asm_kernel import SyncKernel

    tools = Tools()
    config = {"plugins": {"autoload": False}, "policies": [APPROVAL]}
    with SyncKernel(config, store=MemoryStore(), providers={"s": ScriptedProvider([ROUND, ANSWER])},
                    tools=tools.all()) as asm:
        waiting = asm.run_once("clean up")
        assert [r.tool_use_id for r in asm.pending_approvals()] == ["t_delete"]
        asm.approve(waiting.run_id, by="sync")
        done = asm.execute(waiting.run_id)
        assert asm.cost(by="session").total.calls == 2
    assert done.output == "Cleaned up." and sorted(tools.calls) == ["delete_file", "lookup"]
