"""Budgets reserve the worst case before each step, so they are never exceeded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asm_kernel import Kernel, ModelInfo, Price, RunStatus, ToolSpec
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import BudgetExceededError, ConfigError, StorageError
from asm_kernel.policy import Spend
from asm_kernel.testing import FaultyStore, assert_record_and_log_agree

PRICE = Price(input=1.0, output=10.0, source="test", as_of="2026-01-01")  # dollars per million tokens


class Priced(ScriptedProvider):
    """The scripted provider with a known price and output ceiling."""

    @property
    def models(self) -> Any:
        return (ModelInfo("scripted-1", 200_000, 1_000, PRICE),)


def loop(n: int, usage: tuple[int, int] = (100, 50)) -> list[list[dict[str, Any]]]:
    """``n`` model turns that each call the tool, then an answer."""
    turn = [{"tool_use": {"name": "lookup", "input": {}}}, {"usage": {"input_tokens": usage[0],
                                                                      "output_tokens": usage[1]}}]
    return [turn] * n + [[{"text": "done"}, {"usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}]]


class Lookup:
    spec = ToolSpec("lookup")

    async def __call__(self, input: dict[str, Any]) -> str:
        return "found"


def kernel(provider: ScriptedProvider, *policies: dict[str, Any], store: Any = None, **config: Any) -> Kernel:
    cfg = {"plugins": {"autoload": False}, "policies": list(policies), "run": {"max_turns": 20}, **config}
    return Kernel(cfg, store=store or MemoryStore(), providers={"s": provider}, tools=[Lookup()])


def decisions(events: list[Any]) -> list[tuple[str, str, str | None]]:
    return [(e.payload["step"], e.payload["action"], e.payload.get("limit")) for e in events
            if e.type == "policy_decided"]


async def test_a_call_budget_stops_the_tool_loop_before_the_call_that_would_pass_it() -> None:
    provider = Priced(loop(5))
    async with kernel(provider, {"use": "budget", "max_model_calls": 2}) as k:
        session = await k.sessions.create()
        with pytest.raises(BudgetExceededError) as info:
            await k.run(session.id, "go")
        events = await k.sessions.events(session.id)
    assert len(provider.requests) == 2  # the third call was never sent
    error = info.value.details
    assert (error["what"], error["limit"], error["spend"], error["requested"]) == ("max_model_calls", 2, 2, 1)
    assert error["scope"].startswith("run:")
    model = [d for d in decisions(events) if d[0] == "model_call"]
    assert [d[1] for d in model] == ["allow", "allow", "refuse"]
    assert [e.type for e in events][-2:] == ["error_occurred", "run_failed"]


async def test_a_cost_budget_refuses_the_first_call_whose_worst_case_does_not_fit() -> None:
    provider = Priced(loop(8, usage=(50, 400)))
    async with kernel(provider, {"use": "budget", "max_cost_usd": 0.02}, run={"max_turns": 20, "max_tokens": 500}) as k:
        session = await k.sessions.create()
        with pytest.raises(BudgetExceededError) as info:
            await k.run(session.id, "go")
        runs = await k.sessions.runs(session.id)
        events = await k.sessions.events(session.id, types=["policy_decided"])
    refused = info.value.details
    # It was refused because spend plus the call's worst case would pass the limit...
    assert refused["spend"] + refused["requested"] > 0.02
    # ...and the spend never passed it: every call that was made fitted at its worst case.
    assert runs[0].cost is not None and runs[0].cost <= 0.02
    allowed = [e.payload for e in events if e.payload["action"] == "allow" and e.payload["step"] == "model_call"]
    assert len(allowed) == len(provider.requests)
    assert all(a["spend"] + a["requested"] <= 0.02 for a in allowed)
    # The output reserved is what the request asked for: the run's max_tokens.
    assert all(r.max_tokens == 500 for r in provider.requests)


async def test_the_request_is_clamped_to_the_output_that_was_reserved() -> None:
    provider = Priced([[{"text": "hi"}, {"usage": {"input_tokens": 5, "output_tokens": 2}}]])
    async with kernel(provider, {"use": "budget", "max_output_tokens": 5000}) as k:
        await k.run_once("hello")  # no max_tokens anywhere: the model's ceiling is reserved and sent
    assert provider.requests[0].max_tokens == 1_000
    bare = Priced([[{"text": "hi"}]])
    async with kernel(bare) as k:
        await k.run_once("hello")
    assert bare.requests[0].max_tokens is None  # without a budget nothing is changed


async def test_warn_lets_the_step_through_and_records_the_warning() -> None:
    provider = Priced(loop(2))
    async with kernel(provider, {"use": "budget", "max_model_calls": 1, "action": "warn"}) as k:
        result = await k.run_once("go")
        events = await k.sessions.events(result.session_id, types=["policy_decided"])
    assert result.status is RunStatus.COMPLETED and len(provider.requests) == 3
    assert [e.payload["action"] for e in events if e.payload["step"] == "model_call"] == ["allow", "warn", "warn"]


async def test_a_session_budget_holds_across_runs_and_kernels_sharing_a_store() -> None:
    store = MemoryStore()
    policy = {"use": "budget", "scope": "session", "max_total_tokens": 1_000}
    turn = [[{"text": "ok"}, {"usage": {"input_tokens": 150, "output_tokens": 100}}]]
    async with kernel(Priced(turn), policy, store=store, run={"max_tokens": 50}) as k:
        session = await k.sessions.create()
        first = await k.run(session.id, "one")
    # Another kernel (another process, or this one after a restart) sees what was spent.
    provider = Priced(turn)
    async with kernel(provider, policy, store=store, run={"max_tokens": 50}) as k:
        await k.run(session.id, "two")
        for _ in range(5):
            try:
                await k.run(session.id, "more")
            except BudgetExceededError as exc:
                refused = exc
                break
        ledger = await k.sessions.events(f"asm.budget:budget:session:{session.id}:all")
    assert first.usage.total_tokens == 250
    settled = sum(e.payload["spend"]["input_tokens"] + e.payload["spend"]["output_tokens"]
                  for e in ledger if e.type == "budget_settled")
    assert settled <= 1_000 and refused.details["spend"] == settled
    assert {e.type for e in ledger} == {"session_created", "budget_reserved", "budget_settled"}


async def test_concurrent_runs_sharing_a_budget_never_take_the_same_dollars() -> None:
    store = MemoryStore()
    policy = {"use": "budget", "scope": "global", "max_model_calls": 7}
    kernels = [kernel(Priced(loop(30)), policy, store=store) for _ in range(2)]
    async with kernels[0] as a, kernels[1] as b:
        sessions = [await a.sessions.create() for _ in range(6)]

        async def go(k: Kernel, sid: str) -> Any:
            return await k.sessions.run(sid, "go", raise_on_error=False)

        results = await asyncio.gather(*(go(a if i % 2 else b, s.id) for i, s in enumerate(sessions)))
        ledger = await a.sessions.events("asm.budget:budget:global:all:all")
    calls = len(kernels[0].providers["s"].requests) + len(kernels[1].providers["s"].requests)  # type: ignore[attr-defined]
    assert calls == 7  # exactly the budget: none more, across two kernels and six concurrent runs
    assert all(r.status is RunStatus.FAILED for r in results)
    reserved = [e for e in ledger if e.type == "budget_reserved"]
    assert len(reserved) == 7 and len([e for e in ledger if e.type == "budget_settled"]) == 7


async def test_tool_calls_and_turns_are_budgeted_too() -> None:
    three = [[{"tool_use": {"name": "lookup", "input": {}}}] * 3, [{"text": "done"}]]
    provider = Priced(three)
    async with kernel(provider, {"use": "budget", "max_tool_calls": 2}) as k:
        session = await k.sessions.create()
        with pytest.raises(BudgetExceededError, match="max_tool_calls"):
            await k.run(session.id, "go")
        done = await k.sessions.events(session.id, types=["tool_call_completed"])
    assert done == []  # the round was refused before any of it ran
    provider = Priced([[{"text": "hi"}]])
    async with kernel(provider, {"use": "budget", "scope": "session", "max_turns": 2}) as k:
        session = await k.sessions.create()
        await k.run(session.id, "1")
        await k.run(session.id, "2")
        with pytest.raises(BudgetExceededError, match="max_turns"):
            await k.run(session.id, "3")
    assert len(provider.requests) == 2


async def test_an_unknown_price_cannot_be_proven_to_fit_a_cost_limit() -> None:
    provider = ScriptedProvider([[{"text": "hi"}]])  # no price
    async with kernel(provider, {"use": "budget", "max_cost_usd": 1.0}) as k:
        session = await k.sessions.create()
        with pytest.raises(BudgetExceededError, match="a price is unknown"):
            await k.run(session.id, "hi")
    assert provider.requests == []
    async with kernel(ScriptedProvider([[{"text": "hi"}]]),
                      {"use": "budget", "max_cost_usd": 1.0, "unknown_price": "allow"}) as k:
        assert (await k.run_once("hi")).status is RunStatus.COMPLETED


async def test_agents_and_periods_choose_the_ledger() -> None:
    policy = {"use": "budget", "name": "daily", "scope": "agent", "period": "day", "max_model_calls": 1,
              "agents": ["sup*"]}
    async with kernel(Priced([[{"text": "x"}]]), policy) as k:
        support = await k.sessions.create(agent_id="support")
        other = await k.sessions.create(agent_id="sales")
        await k.run(support.id, "1")
        with pytest.raises(BudgetExceededError):
            await k.run(support.id, "2")
        await k.run(other.id, "1")
        await k.run(other.id, "2")  # not this budget's agent
        ledgers = [s.id for s in await k.sessions.list(agent_id="asm.budget")]
    assert len(ledgers) == 1 and ledgers[0].startswith("asm.budget:daily:agent:support:20")


def test_bad_budget_settings_are_config_errors() -> None:
    for settings, text in (
        ({}, "at least one limit"),
        ({"max_turns": 3}, "max_turns counts runs"),
        ({"scope": "session", "max_duration": 3}, "max_duration"),
        ({"max_cost_usd": -1}, "must be a number >= 0"),
        ({"max_cost_usd": 1, "action": "ask"}, "action"),
    ):
        with pytest.raises(ConfigError, match=text):
            Kernel({"store": {"use": "memory"}, "policies": [{"use": "budget", **settings}]})._build_all()


@pytest.mark.parametrize("mode", ["before", "after", "down"])
async def test_a_fault_at_any_ledger_write_leaves_record_log_and_ledger_agreeing(mode: str) -> None:
    inner = MemoryStore()
    faulty = FaultyStore(inner, close_inner=False)
    policy = {"use": "budget", "scope": "session", "max_model_calls": 3}
    async with kernel(Priced(loop(1)), policy, store=faulty) as k:
        session = await k.sessions.create()
        faulty.arm(10**9)
        await k.run(session.id, "clean")
        writes = faulty.writes  # the run's own writes and its ledger's, in order
    assert writes >= 6
    for n in range(1, writes + 1):
        async with kernel(Priced(loop(1)), policy, store=faulty) as k:
            k.sessions.commit_backoff = 0.0
            session = await k.sessions.create()
            faulty.arm(n, mode)
            try:
                await k.sessions.run(session.id, "go", raise_on_error=False)
            except StorageError:
                assert mode == "down"  # the store stayed down: the outcome is kept and retried
            faulty.heal()
            await k.sessions.closer.flush()
            assert len(k.sessions.closer) == 0
            await assert_record_and_log_agree(inner, session.id)
            ledger_id = f"asm.budget:budget:session:{session.id}:all"
            ledger = await inner.read(ledger_id) if ledger_id in {s.id for s in await inner.list_sessions()} else []
            reserved = {e.payload["reservation_id"] for e in ledger if e.type == "budget_reserved"}
            settled = {e.payload["reservation_id"] for e in ledger if e.type == "budget_settled"}
            # A settlement never comes without its reservation (an open one counts at its worst),
            # and every model call the run made was reserved first.
            assert settled <= reserved
            received = await inner.read(session.id, types=["message_received"])
            assert len(reserved) >= len(received)


def test_worst_case_is_an_upper_bound_of_the_call() -> None:
    from asm_kernel.builtin.policies.stages import input_bound
    from asm_kernel.context.tokens import estimate_messages
    from asm_kernel.model import Message

    text = "naïve café — 東京 " * 50
    messages = [Message.user(text)]
    assert input_bound(messages, None, []) >= len(text.encode()) > estimate_messages(messages)
    assert Spend(1, 2, 0.5) + Spend(3, 4, None) == Spend(4, 6, None)


async def test_what_request_hooks_add_is_reserved_before_it_is_sent() -> None:
    from asm_kernel import hookimpl

    class Instructions:
        @hookimpl
        def asm_before_provider_request(self, request: Any) -> Any:
            import attrs

            return attrs.evolve(request, system="Always answer in French. " * 40)

    def build(limit: int) -> Kernel:
        cfg = {"plugins": {"autoload": False}, "policies": [{"use": "budget", "max_input_tokens": limit}]}
        return Kernel(cfg, store=MemoryStore(), providers={"s": provider}, plugins=[Instructions()])

    provider = Priced([[{"text": "oui"}, {"usage": {"input_tokens": 300, "output_tokens": 1}}]])
    async with build(5_000) as k:
        result = await k.run_once("hello")
        decided = await k.sessions.events(result.session_id, types=["policy_decided"])
    assert result.status is RunStatus.COMPLETED and provider.requests[0].system.startswith("Always")
    model = [d.payload for d in decided if d.payload["step"] == "model_call"]
    assert len(model) == 2 and model[1]["requested"] >= len("Always answer in French. " * 40)  # the top-up
    async with build(200) as k:
        session = await k.sessions.create()
        with pytest.raises(BudgetExceededError, match="max_input_tokens"):
            await k.run(session.id, "hello")  # the message fits, what the hook adds does not
    assert len(provider.requests) == 1
