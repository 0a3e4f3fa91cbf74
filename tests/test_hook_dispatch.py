"""How hooks are dispatched: through pluggy, isolated, async where they decide, traced on demand."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest

from asm_kernel import Kernel, RunStatus, hookimpl
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import PluginError, PluginLoadError, PolicyError


def kernel(*plugins: Any, **config: Any) -> Kernel:
    return Kernel(
        {"store": {"use": "memory"}, **config},
        providers={"s": ScriptedProvider([[{"text": "ok"}]])},
        plugins=list(plugins),
    )


async def test_async_decision_hooks_are_awaited_and_chained() -> None:
    class First:
        @hookimpl
        async def asm_before_provider_request(self, request):
            return attrs.evolve(request, system="from an async hook")

    class Second:
        @hookimpl
        def asm_before_provider_request(self, request):
            return attrs.evolve(request, system=request.system + " + a sync one")

    class Router:
        @hookimpl
        async def asm_route_candidates(self, candidates):
            return list(reversed(candidates))

    provider = ScriptedProvider([[{"text": "ok"}]])
    k = Kernel({"store": {"use": "memory"}}, providers={"s": provider}, plugins=[Second(), First(), Router()])
    async with k:
        await k.run_once("hi")
    # pluggy calls the most recently registered first: First, then Second sees its result.
    assert provider.requests[0].system == "from an async hook + a sync one"


async def test_a_decision_hook_may_stop_the_run() -> None:
    class Guard:
        @hookimpl
        async def asm_before_provider_request(self, request):
            raise PolicyError("no requests on Sundays")

    async with kernel(Guard()) as k:
        result = await k.run_once("hi", raise_on_error=False)
    assert result.status is RunStatus.FAILED and result.error["code"] == "policy.denied"


async def test_an_unexpected_exception_in_a_decision_hook_names_the_plugin() -> None:
    class Buggy:
        @hookimpl
        def asm_route_candidates(self, candidates):
            raise KeyError("oops")

    async with kernel(Buggy()) as k:
        with pytest.raises(PluginError) as info:
            await k.run_once("hi")
    assert info.value.details["plugin"] == "direct-0" and "KeyError" in info.value.message


def test_an_async_implementation_of_a_synchronous_hook_is_refused() -> None:
    class Silent:
        @hookimpl
        async def asm_run_finished(self, run, result):  # would never run
            pass

    with pytest.raises(PluginLoadError) as info:
        kernel(Silent())
    assert "asm_run_finished" in info.value.message and "async def" in info.value.message
    assert "asm_before_provider_request" in (info.value.hint or "")


def test_an_async_hook_module_from_config_is_quarantined_with_the_reason(tmp_path: Any, monkeypatch: Any) -> None:
    (tmp_path / "async_hooks.py").write_text(
        "from asm_kernel import hookimpl\n\n@hookimpl\nasync def asm_event_appended(event):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    k = Kernel({"store": {"use": "memory"}, "plugins": {"modules": ["async_hooks"]}})
    info = k.plugins.plugins["async_hooks"]
    assert info.status == "quarantined" and "async def" in (info.error or "")


async def test_lifecycle_hooks_are_isolated_through_pluggy() -> None:
    seen: list[tuple[str, str]] = []

    class Failing:
        @hookimpl
        def asm_run_finished(self, run):
            raise RuntimeError("audit sink down")

        @hookimpl
        def asm_on_error(self, error, during):
            seen.append(("failing plugin asked about itself", during))

    class Watcher:
        @hookimpl
        def asm_run_finished(self, run):
            seen.append(("watcher saw", run.status.value))

        @hookimpl
        def asm_on_error(self, error, run, during):
            seen.append((error.code, during))

    async with kernel(Watcher(), Failing()) as k:
        result = await k.run_once("hi")
    assert result.status is RunStatus.COMPLETED
    assert ("watcher saw", "completed") in seen
    assert ("plugin.error", "hook:asm_run_finished") in seen
    assert not any(who == "failing plugin asked about itself" for who, _ in seen)


async def test_the_default_store_is_whatever_the_first_plugin_names(recwarn: Any) -> None:
    made: list[Any] = []

    class Durable(MemoryStore):
        capabilities = attrs.evolve(
            MemoryStore.capabilities, durable=True, durability="safe", durability_modes=("safe",)
        )

    class StorePlugin:
        @hookimpl
        def asm_register_stores(self, register):
            register("vault", lambda settings, ctx: made.append(Durable()) or made[-1])

        @hookimpl
        def asm_default_store(self, kernel):
            return "vault"

    async with Kernel({"plugins": {"autoload": False}}, plugins=[StorePlugin()]) as k:
        assert k.store is made[0]
    assert not [w for w in recwarn if "kept in memory" in str(w.message)]
    # Without such a plugin the builtin answer (tried last) is the memory store, with a warning.
    with pytest.warns(UserWarning, match="kept in memory"):
        async with Kernel({"plugins": {"autoload": False}}) as k:
            assert type(k.store) is MemoryStore


async def test_trace_hooks_logs_every_call(monkeypatch: Any, caplog: Any) -> None:
    monkeypatch.setenv("ASM_TRACE_HOOKS", "1")
    caplog.set_level(logging.DEBUG, logger="asm.hooks")

    class Rewrites:
        @hookimpl
        async def asm_before_provider_request(self, request):
            return None

    async with kernel(Rewrites()) as k:
        await k.run_once("hi")
    traced = [r.getMessage() for r in caplog.records if r.name == "asm.hooks"]
    for hook in ("asm_kernel_started", "asm_run_started", "asm_event_appended", "asm_before_provider_request"):
        assert any(line.startswith(hook) for line in traced), hook
