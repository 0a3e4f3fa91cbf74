"""The tools policy (allow/deny globs per agent), the strictest decision winning, run time limits."""

from __future__ import annotations

from typing import Any

import pytest

from asm_kernel import Kernel, RunStatus, ToolSpec
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import BudgetExceededError, PolicyError


class Tool:
    def __init__(self, name: str, ran: list[str]) -> None:
        self.spec = ToolSpec(name)
        self.ran = ran

    async def __call__(self, input: dict[str, Any]) -> str:
        self.ran.append(self.spec.name)
        return "ok"


def round_of(*names: str) -> list[list[dict[str, Any]]]:
    return [[{"tool_use": {"id": f"t{i}", "name": n}} for i, n in enumerate(names)], [{"text": "done"}]]


def kernel(provider: ScriptedProvider, policies: list[dict[str, Any]], ran: list[str], *names: str) -> Kernel:
    return Kernel({"plugins": {"autoload": False}, "policies": policies}, store=MemoryStore(),
                  providers={"s": provider}, tools=[Tool(n, ran) for n in names])


async def test_deny_wins_over_allow_per_agent_and_refusals_are_recorded() -> None:
    policies = [{"use": "tools", "name": "support-tools", "agents": ["support*"], "allow": ["lookup_*", "refund"],
                 "deny": ["refund"]}]
    ran: list[str] = []
    provider = ScriptedProvider(round_of("lookup_order", "refund", "wipe") + round_of("lookup_order", "refund", "wipe"))
    async with kernel(provider, policies, ran, "lookup_order", "refund", "wipe") as k:
        support = await k.sessions.create(agent_id="support-eu")
        other = await k.sessions.create(agent_id="sales")
        await k.run(support.id, "help")
        first = list(ran)
        done = await k.sessions.events(support.id, types=["tool_call_completed", "policy_decided"])
        await k.run(other.id, "help")
        elsewhere = await k.sessions.events(other.id, types=["policy_decided"])
    assert first == ["lookup_order"]  # refund and wipe never ran for support
    results = {e.payload["name"]: e.payload for e in done if e.type == "tool_call_completed"}
    assert not results["lookup_order"]["is_error"]
    assert results["refund"]["is_error"] and results["refund"]["denied"] == "support-tools"
    assert "is denied ('refund')" in results["refund"]["output"]
    assert "is not allowed" in results["wipe"]["output"]
    decided = [(e.payload["name"], e.payload["action"]) for e in done if e.type == "policy_decided"]
    assert decided == [("lookup_order", "allow"), ("refund", "refuse"), ("wipe", "refuse")]
    assert elsewhere == []  # the sales agent is not this policy's: no opinion, nothing recorded
    assert sorted(ran[1:]) == ["lookup_order", "refund", "wipe"]  # all three ran for sales


async def test_the_strictest_decision_wins_refuse_over_approval() -> None:
    policies = [{"use": "approval", "tools": ["delete_*"]}, {"use": "tools", "deny": ["delete_all"]}]
    ran: list[str] = []
    provider = ScriptedProvider(round_of("delete_one", "delete_all"))
    async with kernel(provider, policies, ran, "delete_one", "delete_all") as k:
        waiting = await k.run_once("clean")
        decided = [(e.payload["name"], e.payload["policy"], e.payload["action"])
                   for e in await k.sessions.events(waiting.session_id, types=["policy_decided"])]
    # delete_all is refused outright: only delete_one waits for a person.
    assert waiting.status is RunStatus.AWAITING_APPROVAL and [a.name for a in waiting.approvals] == ["delete_one"]
    assert ("delete_all", "tools", "refuse") in decided and ("delete_all", "approval", "approve") in decided
    assert ran == []


async def test_max_duration_bounds_a_runs_execution() -> None:
    provider = ScriptedProvider(round_of("lookup"))
    async with kernel(provider, [{"use": "budget", "max_duration": 0}], [], "lookup") as k:
        session = await k.sessions.create()
        with pytest.raises(BudgetExceededError) as info:
            await k.run(session.id, "go")
    assert info.value.details["what"] == "max_duration" and provider.requests == []
    provider = ScriptedProvider(round_of("lookup"))
    async with kernel(provider, [{"use": "budget", "max_duration": 3600}], [], "lookup") as k:
        assert (await k.run_once("go")).status is RunStatus.COMPLETED


async def test_a_policy_of_the_original_protocol_still_refuses_runs_and_tools() -> None:
    class Old:
        async def check_run(self, *, session: Any, run: Any, history: Any) -> None:
            if session.agent_id == "blocked":
                raise PolicyError("this agent is blocked")

        async def check_usage(self, *, session: Any, run: Any) -> None:
            pass

        async def check_tool(self, *, session: Any, run: Any, name: str, input: dict[str, Any]) -> None:
            raise PolicyError(f"no {name}")

    ran: list[str] = []
    provider = ScriptedProvider(round_of("lookup"))
    async with kernel(provider, [], ran, "lookup") as k:
        k.policies.append(Old())
        result = await k.run_once("go")
        (done,) = await k.sessions.events(result.session_id, types=["tool_call_completed"])
        blocked = await k.sessions.create(agent_id="blocked")
        with pytest.raises(PolicyError, match="blocked"):
            await k.run(blocked.id, "go")
    assert ran == [] and done.payload["is_error"] and "no lookup" in done.payload["output"]
    assert done.payload["denied"] == "Old"
