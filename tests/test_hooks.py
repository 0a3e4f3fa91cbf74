"""Every hook in hookspecs is called by the kernel, with the documented arguments."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from asm_kernel import Kernel, hookimpl
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import RateLimitError
from asm_kernel.hookspecs import hook_names


def scripted(*turns: list[dict[str, Any]]) -> ScriptedProvider:
    return ScriptedProvider(list(turns))


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    @hookimpl
    def asm_kernel_started(self, kernel):
        self.calls.append(("asm_kernel_started", {"kernel": kernel}))

    @hookimpl
    def asm_kernel_stopping(self, kernel):
        self.calls.append(("asm_kernel_stopping", {"kernel": kernel}))

    @hookimpl
    def asm_session_transition(self, session, old_status, new_status):
        self.calls.append(("asm_session_transition", {"old": old_status, "new": new_status}))

    @hookimpl
    def asm_run_started(self, session, run):
        self.calls.append(("asm_run_started", {"run": run}))

    @hookimpl
    def asm_run_finished(self, session, run, result):
        self.calls.append(("asm_run_finished", {"run": run, "result": result}))

    @hookimpl
    def asm_run_awaiting_approval(self, session, run, approvals):
        self.calls.append(("asm_run_awaiting_approval", {"run": run, "approvals": approvals}))

    @hookimpl
    def asm_event_appended(self, event):
        self.calls.append(("asm_event_appended", {"event": event}))

    @hookimpl
    def asm_before_provider_request(self, request, session, run, provider):
        self.calls.append(("asm_before_provider_request", {"request": request, "provider": provider}))
        return attrs.evolve(request, system="rewritten by hook")

    @hookimpl
    def asm_route_candidates(self, candidates, session, run):
        self.calls.append(("asm_route_candidates", {"candidates": list(candidates)}))

    @hookimpl
    def asm_after_provider_response(self, session, run, provider, message, usage):
        self.calls.append(("asm_after_provider_response", {"message": message, "usage": usage}))

    @hookimpl
    def asm_on_error(self, error, session, run, during):
        self.calls.append(("asm_on_error", {"error": error, "during": during}))

    @hookimpl
    def asm_configure_pipeline(self, pipeline, kernel):
        self.calls.append(("asm_configure_pipeline", {"stages": pipeline.names("run")}))

    @hookimpl
    def asm_default_store(self, kernel):
        self.calls.append(("asm_default_store", {}))
        return None  # no opinion: another plugin answers


async def test_lifecycle_hooks_fire_in_order() -> None:
    rec = Recorder()
    provider = scripted([{"text": "hello"}])
    config = {"store": {"use": "memory"}, "runtime": {"overlap_start": False}}
    kernel = Kernel(config, providers={"s": provider}, plugins=[rec], load_plugins=True)
    async with kernel:
        result = await kernel.run_once("hi")
        stored = await kernel.sessions.events(result.session_id)
    names = rec.names()
    assert names[0] == "asm_configure_pipeline" and names[-1] == "asm_kernel_stopping"
    order = [n for n in names if n not in ("asm_event_appended",)]
    assert order == [
        "asm_configure_pipeline",
        "asm_kernel_started",
        "asm_route_candidates",
        "asm_session_transition",  # created  } both in the run's start unit
        "asm_session_transition",  # activated }
        "asm_run_started",
        "asm_before_provider_request",
        "asm_after_provider_response",
        "asm_run_finished",
        "asm_kernel_stopping",
    ]
    transitions = [c for n, c in rec.calls if n == "asm_session_transition"]
    assert transitions[0]["old"] is None and transitions[1]["new"].value == "active"
    appended = [c["event"].seq for n, c in rec.calls if n == "asm_event_appended"]
    assert appended == [e.seq for e in stored]
    # The rewritten request is what the provider received.
    assert provider.requests[0].system == "rewritten by hook"
    finished = next(c for n, c in rec.calls if n == "asm_run_finished")
    assert finished["result"].output == "hello" and finished["run"].status.value == "completed"


async def test_an_overlapped_start_fires_run_started_once_stored_and_before_any_output() -> None:
    """With ``overlap_start`` (the default) the request may go out before the start is stored:
    ``asm_run_started`` fires when it is, and before any later event of the run is stored."""
    rec = Recorder()
    provider = scripted([{"text": "hello"}])
    kernel = Kernel({"store": {"use": "memory"}}, providers={"s": provider}, plugins=[rec], load_plugins=True)
    async with kernel:
        result = await kernel.run_once("hi")
    names = [n for n in rec.names() if n not in ("asm_configure_pipeline", "asm_kernel_started", "asm_kernel_stopping")]
    assert sorted(names) == sorted(
        ["asm_route_candidates", "asm_session_transition", "asm_session_transition", "asm_run_started",
         "asm_before_provider_request", "asm_after_provider_response", "asm_run_finished"]
        + ["asm_event_appended"] * names.count("asm_event_appended")
    )  # fmt: skip
    started = names.index("asm_run_started")
    appended = [c["event"] for n, c in rec.calls if n == "asm_event_appended"]
    start_events = [e for e in appended if e.type in ("session_created", "session_activated", "run_started",
                                                       "message_sent", "routing_decided")]  # fmt: skip
    assert [e.seq for e in start_events] == [1, 2, 3, 4, 5]
    later = [i for i, n in enumerate(names) if n == "asm_event_appended"][len(start_events):]
    assert later and all(i > started for i in later)  # nothing after the start is stored before it
    assert names.index("asm_run_finished") > started and result.status.value == "completed"


async def test_before_request_hooks_chain() -> None:
    class AddA:
        @hookimpl
        def asm_before_provider_request(self, request):
            return attrs.evolve(request, system=(request.system or "") + "A")

    class AddB:
        @hookimpl
        def asm_before_provider_request(self, request):
            return attrs.evolve(request, system=(request.system or "") + "B")

    class Leave:
        @hookimpl
        def asm_before_provider_request(self, request):
            return None

    provider = scripted([{"text": "x"}])
    async with Kernel({"store": {"use": "memory"}}, providers={"s": provider}, plugins=[AddA(), Leave(), AddB()]) as k:
        await k.run_once("hi")
    assert provider.requests[0].system in ("AB", "BA") and len(provider.requests[0].system) == 2


async def test_a_hook_returning_garbage_fails_the_run_clearly() -> None:
    class Bad:
        @hookimpl
        def asm_before_provider_request(self, request):
            return "not a request"

    async with Kernel({"store": {"use": "memory"}}, plugins=[Bad()]) as k:
        with pytest.raises(Exception, match="not a ProviderRequest"):
            await k.run_once("hi")


async def test_on_error_sees_provider_failures_and_failing_hooks() -> None:
    rec = Recorder()

    class Exploding:
        @hookimpl
        def asm_event_appended(self, event):
            raise RuntimeError("hook bug")

    provider = scripted([{"error": "provider.rate_limited", "retry_after": 3}])
    async with Kernel({"store": {"use": "memory"}}, providers={"s": provider}, plugins=[rec, Exploding()]) as k:
        with pytest.raises(RateLimitError):
            await k.run_once("hi")
    errors = [c for n, c in rec.calls if n == "asm_on_error"]
    durings = {c["during"] for c in errors}
    assert "run" in durings and "hook:asm_event_appended" in durings
    provider_error = next(c["error"] for c in errors if c["during"] == "run")
    assert isinstance(provider_error, RateLimitError) and provider_error.retry_after == 3


async def test_a_run_that_waits_for_approval_is_announced_not_finished() -> None:
    from asm_kernel import ToolSpec

    class Tool:
        spec = ToolSpec("wire_money")

        async def __call__(self, input):
            return "sent"

    rec = Recorder()
    provider = scripted([{"tool_use": {"id": "t1", "name": "wire_money", "input": {"usd": 10}}}])
    config = {"store": {"use": "memory"}, "policies": [{"use": "approval", "tools": ["wire_*"]}]}
    async with Kernel(config, providers={"s": provider}, plugins=[rec], tools=[Tool()]) as kernel:
        result = await kernel.run_once("pay the invoice")
    names = rec.names()
    assert "asm_run_awaiting_approval" in names and "asm_run_finished" not in names
    call = next(c for n, c in rec.calls if n == "asm_run_awaiting_approval")
    assert call["run"].status.value == "awaiting_approval" and call["run"].id == result.run_id
    assert [a.tool_use_id for a in call["approvals"]] == ["t1"]


def test_every_hookspec_is_exercised_by_these_tests() -> None:
    implemented = {n for n in dir(Recorder) if n.startswith("asm_")}
    lifecycle = {n for n in hook_names() if not n.startswith("asm_register_")}
    assert lifecycle == implemented
    # The register family is exercised through the builtins and test_plugins/test_cli.
    assert {n for n in hook_names() if n.startswith("asm_register_")} == {
        "asm_register_stores",
        "asm_register_providers",
        "asm_register_routers",
        "asm_register_policies",
        "asm_register_telemetry",
        "asm_register_tools",
        "asm_register_commands",
    }


async def test_register_family_contributes_every_component_kind() -> None:
    from asm_kernel import ToolSpec

    built: dict[str, Any] = {}

    class EverythingPlugin:
        @hookimpl
        def asm_register_stores(self, register):
            from asm_kernel.builtin.memory import MemoryStore

            register("mystore", lambda s, c: built.setdefault("store", MemoryStore()))

        @hookimpl
        def asm_register_routers(self, register):
            class Reverse:
                def select(self, candidates, context):
                    built["routed"] = [c.provider for c in candidates]
                    return [c.provider for c in reversed(candidates)]

            register("myrouter", lambda s, c: built.setdefault("router", Reverse()))

        @hookimpl
        def asm_register_policies(self, register):
            class Allow:
                async def check_run(self, **kw):
                    built.setdefault("checked_run", True)

                async def check_usage(self, **kw):
                    built.setdefault("checked_usage", True)

                async def check_tool(self, **kw):
                    built.setdefault("checked_tool", kw["name"])

            register("allow", lambda s, c: Allow())

        @hookimpl
        def asm_register_telemetry(self, register):
            class Sink:
                def __init__(self):
                    self.events = []

                def emit(self, event):
                    self.events.append(event)

                def close(self):
                    pass

            register("mysink", lambda s, c: built.setdefault("sink", Sink()))

        @hookimpl
        def asm_register_tools(self, register):
            class Upper:
                spec = ToolSpec("upper", "upper-case text", {"type": "object"})

                async def __call__(self, input):
                    return input["text"].upper()

            register("upper", lambda s, c: Upper())

    provider = scripted([{"tool_use": {"name": "upper", "input": {"text": "abc"}, "id": "t1"}}], [{"text": "done"}])
    cfg = {
        "store": {"use": "mystore"},
        "router": {"use": "myrouter"},
        "policies": [{"use": "allow"}],
        "telemetry": [{"use": "mysink"}],
        "tools": [{"use": "upper"}],
    }
    async with Kernel(cfg, providers={"s": provider}, plugins=[EverythingPlugin()]) as k:
        result = await k.run_once("go")
        assert k.store is built["store"] and k.router is built["router"]
    assert result.output == "done" and built["routed"] == ["s"]
    assert built["checked_run"] and built["checked_usage"] and built["checked_tool"] == "upper"
    assert [e.seq for e in built["sink"].events] == list(range(1, len(built["sink"].events) + 1))
    assert provider.requests[1].messages[-1].tool_results[0].content == "ABC"
