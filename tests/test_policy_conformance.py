"""The builtin policies, and a policy written to the original protocol, pass the policy suite."""

from __future__ import annotations

from typing import Any

import pytest

from asm_kernel import hookimpl
from asm_kernel.errors import PolicyError
from asm_kernel.testing import PolicyConformance


class TestRunBudget(PolicyConformance):
    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:
        return {"use": "budget", "max_model_calls": 3, "max_cost_usd": 0.01, "max_tool_calls": 3}


class TestSharedBudget(PolicyConformance):
    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:
        return {"use": "budget", "scope": "global", "period": "day", "max_total_tokens": 900, "max_turns": 4}


class TestWarningBudget(PolicyConformance):
    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:
        return {"use": "budget", "scope": "session", "max_model_calls": 1, "action": "warn"}


class TestApprovingBudget(PolicyConformance):
    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:
        return {"use": "budget", "scope": "agent", "max_model_calls": 2, "action": "approve"}


class TestToolLists(PolicyConformance):
    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:
        return {"use": "tools", "allow": ["look*", "delete_*"], "deny": ["delete_*"]}


class TestApprovals(PolicyConformance):
    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:
        return {"use": "approval", "tools": ["delete_*"], "cost_over": 0.0001}


class LegacyPolicy:
    """A third-party policy of the original protocol only: it raises to refuse."""

    name = "legacy"

    async def check_run(self, *, session: Any, run: Any, history: Any) -> None:
        if len(history) > 6:
            raise PolicyError("conversation too long")

    async def check_usage(self, *, session: Any, run: Any) -> None:
        pass

    async def check_tool(self, *, session: Any, run: Any, name: str, input: dict[str, Any]) -> None:
        if name.startswith("delete"):
            raise PolicyError("no deleting")


class LegacyPlugin:
    @hookimpl
    def asm_register_policies(self, register: Any) -> None:
        register("legacy", lambda settings, context: LegacyPolicy())


class TestLegacyPolicy(PolicyConformance):
    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:
        return {"use": "legacy"}

    @pytest.fixture
    def plugins(self) -> list[object]:
        return [LegacyPlugin()]


class Broken:
    """Reserves with an answer that is not a Decision, and its tool check is not a coroutine."""

    name = "broken"

    async def check_run(self, **kwargs: Any) -> None:
        pass

    async def check_usage(self, **kwargs: Any) -> None:
        pass

    def check_tool(self, **kwargs: Any) -> None:
        pass

    async def reserve(self, request: Any) -> Any:
        return "fine by me"

    async def settle(self, request: Any, actual: Any) -> None:
        pass


class BrokenPlugin:
    @hookimpl
    def asm_register_policies(self, register: Any) -> None:
        register("broken", lambda settings, context: Broken())


def test_the_suite_catches_a_broken_policy() -> None:
    suite = PolicyConformance()
    with pytest.raises(AssertionError, match="check_tool is not async"):
        suite.test_the_original_methods_are_coroutines({"use": "broken"}, [BrokenPlugin()])
    with pytest.raises(AssertionError, match="not a Decision"):
        suite.test_runs_under_the_policy_end_in_a_typed_way({"use": "broken"}, [BrokenPlugin()])
