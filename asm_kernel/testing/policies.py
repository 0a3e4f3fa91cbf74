"""The policy conformance suite: what every policy — builtin or a plugin's — must do.

Subclass :class:`PolicyConformance` and give the ``policy_config`` fixture (the policy's
``[[policies]]`` table) and, when a plugin of yours registers it, the ``plugins`` fixture::

    class TestMyPolicy(PolicyConformance):
        @pytest.fixture
        def policy_config(self):
            return {"use": "my-policy", "limit": 3}

        @pytest.fixture
        def plugins(self):
            return [my_plugin]

The suite runs real kernels with the policy (a scripted provider with a price, two tools, runs
in sequence and at once) and checks the contract: the original methods are coroutines; every
run ends in a typed way (completed; failed with a ``policy.*`` error; or awaiting approval,
then continued once approved); every decision it makes is a valid ``policy_decided`` event;
every reservation it holds is settled exactly once — also when another policy refuses the step
— and a settlement it did not reserve is harmless; each run's record and log agree.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any

import pytest

from ..model import ModelInfo, Price, RunResult, RunStatus, ToolSpec
from ..policy import ACTIONS, Decision, Spend, SpendRequest, policy_name
from ._store_faults import assert_record_and_log_agree
from .stores import run_async

__all__ = ["PolicyConformance"]

_STEPS = {"run", "model_call", "tool_round", "tool"}
_TURNS: list[list[dict[str, Any]]] = [
    [
        {"text": "Let me check. "},
        {"tool_use": {"name": "lookup", "input": {"q": "order 1234"}}},
        {"tool_use": {"name": "delete_item", "input": {"id": 7}}},
        {"usage": {"input_tokens": 40, "output_tokens": 20}},
    ],
    [{"text": "Done."}, {"usage": {"input_tokens": 80, "output_tokens": 6}}],
]


class _Tool:
    def __init__(self, name: str) -> None:
        self.spec = ToolSpec(name, f"the {name} tool", {"type": "object"})

    async def __call__(self, input: dict[str, Any]) -> str:
        return f"{self.spec.name} ok"


class _Watch:
    """Wraps the policy to see what the kernel asks of it and what it answers."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = policy_name(inner)
        self.held: dict[str, SpendRequest] = {}
        self.settled: list[tuple[str, Spend]] = []
        self.problems: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def check_run(self, **kwargs: Any) -> None:
        await self.inner.check_run(**kwargs)

    async def check_usage(self, **kwargs: Any) -> None:
        await self.inner.check_usage(**kwargs)

    async def check_tool(self, **kwargs: Any) -> None:
        await self.inner.check_tool(**kwargs)


def _watch(policy: Any) -> _Watch:
    """A watch exposing exactly the optional methods the policy has (the kernel looks them up)."""
    members: dict[str, Any] = {}
    if callable(getattr(policy, "reserve", None)):

        async def reserve(self: _Watch, request: SpendRequest) -> Decision | None:
            decision = await self.inner.reserve(request)
            if decision is not None and not isinstance(decision, Decision):
                self.problems.append(f"reserve returned {type(decision).__name__}, not a Decision or None")
            elif decision is not None and decision.action in ("allow", "warn"):
                self.held[request.id] = request
            return decision

        members["reserve"] = reserve
    if callable(getattr(policy, "settle", None)):

        async def settle(self: _Watch, request: SpendRequest, actual: Spend) -> None:
            self.settled.append((request.id, actual))
            await self.inner.settle(request, actual)

        members["settle"] = settle
    if callable(getattr(policy, "review_tool", None)):

        async def review_tool(self: _Watch, request: Any) -> Decision | None:
            decision = await self.inner.review_tool(request)
            if decision is not None and not isinstance(decision, Decision):
                self.problems.append(f"review_tool returned {type(decision).__name__}, not a Decision or None")
            return decision

        members["review_tool"] = review_tool
    return type("WatchedPolicy", (_Watch,), members)(policy)


class _RefuseEverything:
    """A second policy that refuses every spend: the first one's reservations must come back."""

    name = "conformance-refuser"

    async def check_run(self, **kwargs: Any) -> None:
        pass

    async def check_usage(self, **kwargs: Any) -> None:
        pass

    async def check_tool(self, **kwargs: Any) -> None:
        pass

    async def reserve(self, request: SpendRequest) -> Decision:
        return Decision("refuse", self.name, "refuses everything", limit="conformance", limit_value=0.0)

    async def settle(self, request: SpendRequest, actual: Spend) -> None:
        raise AssertionError("a refusing policy holds nothing to settle")


class PolicyConformance:
    """Contract tests for :class:`asm_kernel.interfaces.Policy` implementations."""

    @pytest.fixture
    def policy_config(self) -> dict[str, Any]:  # pragma: no cover - must be overridden
        raise NotImplementedError("define a policy_config fixture: the policy's [[policies]] table")

    @pytest.fixture
    def plugins(self) -> Sequence[object]:
        """Plugin objects to register (the one that registers your policy, if it is not installed)."""
        return ()

    def _kernel(self, config: dict[str, Any], plugins: Sequence[object]) -> Any:
        from ..builtin.memory import MemoryStore
        from ..builtin.scripted import ScriptedProvider
        from ..kernel import Kernel

        class Priced(ScriptedProvider):
            @property
            def models(self) -> Any:
                return (ModelInfo("scripted-1", 100_000, 500, Price(1.0, 4.0, source="conformance")),)

        return Kernel(
            {"plugins": {"autoload": False}, "policies": [config], "run": {"max_turns": 4, "max_tokens": 200}},
            store=MemoryStore(),
            providers={"scripted": Priced(_TURNS, name="scripted")},
            tools=[_Tool("lookup"), _Tool("delete_item")],
            plugins=list(plugins),
        )

    async def _settled(self, kernel: Any, result: RunResult) -> RunResult:
        """The run's end: continued (everything approved) while it waits for approval."""
        for _ in range(5):
            if result.status is not RunStatus.AWAITING_APPROVAL:
                return result
            for request in result.approvals:
                await kernel.approvals.approve(result.run_id, request.id, by="conformance")
            result = await kernel.sessions.execute(result.run_id, raise_on_error=False)
        raise AssertionError(f"run {result.run_id} kept asking for approval after being approved")

    async def _check_run(self, kernel: Any, watch: _Watch, result: RunResult) -> None:
        result = await self._settled(kernel, result)
        assert result.status in (RunStatus.COMPLETED, RunStatus.FAILED), result.status
        if result.status is RunStatus.FAILED:
            code = (result.error or {}).get("code", "")
            assert code.startswith("policy."), f"the run failed with {code!r}, not a policy decision"
        await assert_record_and_log_agree(kernel.store, result.session_id)
        for event in await kernel.sessions.events(result.session_id, types=["policy_decided"]):
            p = event.payload
            assert p["action"] in ACTIONS and p["policy"] and p["step"] in _STEPS, p
            assert isinstance(p.get("reason", ""), str)
        assert not watch.problems, watch.problems

    async def _watched(self, kernel: Any, *extra: Any) -> _Watch:
        await kernel.start()
        (policy,) = [p for p in kernel.policies if not isinstance(p, _RefuseEverything)]
        watch = _watch(policy)
        kernel.policies[:] = [watch, *extra]
        return watch

    def test_the_original_methods_are_coroutines(self, policy_config: dict[str, Any], plugins: Any) -> None:
        async def body() -> None:
            kernel = self._kernel(policy_config, plugins)
            async with kernel:
                (policy,) = kernel.policies
                for name in ("check_run", "check_usage", "check_tool"):
                    method = getattr(policy, name, None)
                    assert method is not None and inspect.iscoroutinefunction(method), f"{name} is not async"
                for name in ("reserve", "settle", "review_tool"):
                    method = getattr(policy, name, None)
                    assert method is None or inspect.iscoroutinefunction(method), f"{name} is not async"
                if callable(getattr(policy, "reserve", None)):
                    assert callable(getattr(policy, "settle", None)), "a policy that reserves must settle"

        run_async(body())

    def test_runs_under_the_policy_end_in_a_typed_way(self, policy_config: dict[str, Any], plugins: Any) -> None:
        async def body() -> None:
            kernel = self._kernel(policy_config, plugins)
            watch = await self._watched(kernel)
            try:
                session = await kernel.sessions.create(agent_id="conformance")
                for prompt in ("first", "second", "third"):
                    await self._check_run(kernel, watch, await kernel.sessions.run(session.id, prompt,
                                                                                    raise_on_error=False))
            finally:
                await kernel.close()

        run_async(body())

    def test_every_reservation_is_settled_exactly_once(self, policy_config: dict[str, Any], plugins: Any) -> None:
        async def body() -> None:
            kernel = self._kernel(policy_config, plugins)
            watch = await self._watched(kernel)
            try:
                sessions = [await kernel.sessions.create() for _ in range(3)]
                results = await asyncio.gather(
                    *(kernel.sessions.run(s.id, "at once", raise_on_error=False) for s in sessions)
                )
                for result in results:
                    await self._check_run(kernel, watch, result)
            finally:
                await kernel.close()
            ids = [rid for rid, _ in watch.settled]
            assert len(ids) == len(set(ids)), "a reservation was settled twice"
            assert set(watch.held) <= set(ids), f"reservations never settled: {set(watch.held) - set(ids)}"

        run_async(body())

    def test_a_step_another_policy_refuses_gives_the_reservation_back(
        self, policy_config: dict[str, Any], plugins: Any
    ) -> None:
        async def body() -> None:
            kernel = self._kernel(policy_config, plugins)
            watch = await self._watched(kernel, _RefuseEverything())
            try:
                result = await self._settled(kernel, await kernel.run_once("refused", raise_on_error=False))
                assert result.status is RunStatus.FAILED
                assert (result.error or {}).get("code", "").startswith("policy.")
            finally:
                await kernel.close()
            assert set(watch.held) <= {rid for rid, _ in watch.settled}
            for rid, actual in watch.settled:
                if rid in watch.held:
                    assert actual == Spend(), "a refused step spent nothing: its reservation is settled at zero"

        run_async(body())

    def test_a_settlement_it_never_reserved_is_harmless(self, policy_config: dict[str, Any], plugins: Any) -> None:
        async def body() -> None:
            kernel = self._kernel(policy_config, plugins)
            async with kernel:
                (policy,) = kernel.policies
                settle = getattr(policy, "settle", None)
                if settle is None:
                    pytest.skip("the policy does not reserve")
                session = await kernel.sessions.create()

                class _State:  # what a settle may look at: the session, the run, the run's data
                    run = None
                    data: dict[str, Any] = {}

                _State.session = session  # type: ignore[attr-defined]
                request = SpendRequest("model_call", Spend(1, 1, 0.0, 1), Spend(), _State())  # type: ignore[arg-type]
                try:
                    await settle(request, Spend(1, 1, 0.0, 1))
                except Exception as exc:
                    raise AssertionError(f"settling an unknown reservation raised {exc!r}") from exc

        run_async(body())
