"""A model turn's tool calls run concurrently (bounded), each with a timeout, results in call order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asm_kernel import Event, Kernel, RunStatus, ToolResultBlock, ToolSpec, hookimpl
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import ToolSourceError


def calls(*names: str) -> list[dict[str, Any]]:
    return [{"tool_use": {"id": f"t{i}", "name": n, "input": {"i": i}}} for i, n in enumerate(names)]


def kernel(provider: ScriptedProvider, tools: list[Any], store: Any = None, **config: Any) -> Kernel:
    return Kernel({"plugins": {"autoload": False}, **config}, store=store or MemoryStore(), providers={"s": provider},
                  tools=tools)


class Gate:
    """A tool that waits until ``needed`` calls are inside it at once: proves they overlap."""

    def __init__(self, name: str, needed: int) -> None:
        self.spec = ToolSpec(name)
        self.needed = needed
        self.inside = 0
        self.most = 0
        self.all_in = asyncio.Event()

    async def __call__(self, input: dict[str, Any]) -> str:
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside >= self.needed:
            self.all_in.set()
        await self.all_in.wait()
        await asyncio.sleep(0)
        self.inside -= 1
        return f"done {input['i']}"


async def test_calls_of_one_turn_run_at_once_and_are_stored_in_call_order() -> None:
    gate = Gate("gate", 3)
    provider = ScriptedProvider([calls("gate", "gate", "gate"), [{"text": "all done"}]])
    async with kernel(provider, [gate]) as k:
        result = await k.run_once("go")
        events = await k.sessions.events(result.session_id, types=["tool_call_completed"])
    assert result.output == "all done" and gate.most == 3
    assert [e.payload["tool_use_id"] for e in events] == ["t0", "t1", "t2"]
    assert [b.tool_use_id for b in provider.requests[1].messages[-1].content] == ["t0", "t1", "t2"]


async def test_max_parallel_bounds_how_many_run_at_once() -> None:
    class Counting:
        spec = ToolSpec("count")

        def __init__(self) -> None:
            self.inside = self.most = 0

        async def __call__(self, input: dict[str, Any]) -> str:
            self.inside += 1
            self.most = max(self.most, self.inside)
            for _ in range(5):
                await asyncio.sleep(0)
            self.inside -= 1
            return "ok"

    tool = Counting()
    provider = ScriptedProvider([calls(*["count"] * 5), [{"text": "done"}]])
    async with kernel(provider, [tool], tool_calls={"max_parallel": 2}) as k:
        await k.run_once("go")
    assert tool.most == 2


async def test_a_call_that_times_out_is_an_error_result_and_the_others_complete() -> None:
    class Hangs:
        spec = ToolSpec("hang")
        timeout = 0.05

        async def __call__(self, input: dict[str, Any]) -> str:
            await asyncio.Event().wait()
            return "never"

    class Quick:
        spec = ToolSpec("quick")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "quick answer"

    seen: list[Any] = []

    class Errors:
        @hookimpl
        def asm_on_error(self, error: Any, during: str) -> None:
            seen.append((error.code, during))

    provider = ScriptedProvider([calls("quick", "hang", "quick"), [{"text": "done"}]])
    k = Kernel({"plugins": {"autoload": False}}, store=MemoryStore(), providers={"s": provider},
               tools=[Hangs(), Quick()], plugins=[Errors()])
    async with k:
        result = await k.run_once("go")
        events = await k.sessions.events(result.session_id)
    assert result.status is RunStatus.COMPLETED
    done = [e.payload for e in events if e.type == "tool_call_completed"]
    assert [(d["tool_use_id"], d["is_error"]) for d in done] == [("t0", False), ("t1", True), ("t2", False)]
    assert "did not finish within 0.05 s" in done[1]["output"]
    errors = [e for e in events if e.type == "error_occurred"]
    assert len(errors) == 1 and errors[0].payload["error"]["code"] == "tool.timeout"
    assert errors[0].payload["during"] == "tool" and errors[0].payload["tool_use_id"] == "t1"
    kinds = [e.type for e in events]
    assert kinds.index("error_occurred") == kinds.index("tool_call_completed") + 1  # right before t1's result
    assert seen == [("tool.timeout", "tool")]
    assert provider.requests[1].messages[-1].content[1].is_error


async def test_an_exception_is_an_error_result_with_error_occurred() -> None:
    class Broken:
        spec = ToolSpec("broken")

        async def __call__(self, input: dict[str, Any]) -> str:
            raise RuntimeError("disk on fire")

    provider = ScriptedProvider([calls("broken"), [{"text": "sorry"}]])
    async with kernel(provider, [Broken()]) as k:
        result = await k.run_once("go")
        events = await k.sessions.events(result.session_id, types=["error_occurred", "tool_call_completed"])
    assert [e.type for e in events] == ["error_occurred", "tool_call_completed"]
    assert events[0].payload["error"]["code"] == "tool.execution_failed"
    assert events[1].payload["is_error"] and "RuntimeError: disk on fire" in events[1].payload["output"]


async def test_cancelling_the_run_cancels_its_running_tools() -> None:
    started = asyncio.Event()
    cancelled: list[str] = []

    class Slow:
        spec = ToolSpec("slow")

        async def __call__(self, input: dict[str, Any]) -> str:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(input["i"])
                raise
            return "never"

    provider = ScriptedProvider([calls("slow", "slow"), [{"text": "never"}]])
    async with kernel(provider, [Slow()]) as k:
        session = await k.sessions.create()
        task = asyncio.create_task(k.sessions.run(session.id, "go"))
        await started.wait()
        task.cancel("user pressed stop")
        with pytest.raises(asyncio.CancelledError):
            await task
        runs = await k.sessions.runs(session.id)
        events = await k.sessions.events(session.id)
    assert sorted(cancelled) == [0, 1]
    assert runs[0].status is RunStatus.CANCELLED and events[-1].type == "run_cancelled"
    assert not [e for e in events if e.type == "tool_call_completed"]


async def test_long_output_is_cut_in_the_event_unless_full_output_is_kept() -> None:
    class Big:
        spec = ToolSpec("big")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "x" * 100

    for keep, expected in ((False, 10), (True, 100)):
        provider = ScriptedProvider([calls("big"), [{"text": "ok"}]])
        cfg = {"tool_calls": {"max_output_chars": 10, "keep_full_output": keep}}
        async with kernel(provider, [Big()], **cfg) as k:
            result = await k.run_once("go")
            (event,) = await k.sessions.events(result.session_id, types=["tool_call_completed"])
        output = event.payload["output"]
        assert output.count("x") == expected
        if keep:
            assert "truncated" not in event.payload
        else:
            assert event.payload["truncated"] == 100 and "[output truncated: 100 characters" in output
        # The model sees what the log holds: its transcript is rebuilt from the events.
        assert provider.requests[1].messages[-1].content[0] == ToolResultBlock("t0", output)


async def test_a_parallel_round_is_still_one_durable_point() -> None:
    class Counting(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.durable: list[list[str]] = []

        async def commit(self, unit: Any) -> Any:
            if unit.durable:
                self.durable.append([e.type for e in unit.events])
            return await super().commit(unit)

    store = Counting()
    provider = ScriptedProvider([calls("gate", "gate", "gate"), [{"text": "done"}]])
    async with kernel(provider, [Gate("gate", 3)], store=store) as k:
        await k.run_once("go")
    assert len(store.durable) == 3  # start, the tool round, the outcome
    assert store.durable[1][-1] == "tool_call_completed"


async def test_events_carry_each_tools_source_and_duration() -> None:
    def clock() -> str:
        """What time is it."""
        return "noon"

    class Plugin:
        source = "myplugin"
        spec = ToolSpec("plugin_tool")

        async def __call__(self, input: dict[str, Any]) -> str:
            return "hi"

    provider = ScriptedProvider([calls("clock", "plugin_tool"), [{"text": "ok"}]])
    async with kernel(provider, [clock, Plugin()]) as k:
        result = await k.run_once("go")
        events = await k.sessions.events(result.session_id, types=["tool_call_started", "tool_call_completed"])
    sources = [(e.type, e.payload["source"]) for e in events]
    assert sources[0][1].startswith("function:test_tool_rounds.") and sources[1][1] == "myplugin"
    assert all(isinstance(e.payload["duration"], float) for e in events if e.type == "tool_call_completed")


class Source:
    """An in-process tool source: what an MCP server looks like to the kernel."""

    name = "inproc"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.state = "new"

    async def open(self) -> None:
        if self.fail:
            raise ConnectionRefusedError("nobody home")
        self.state = "open"

    async def list_tools(self) -> list[Any]:
        owner = self

        class Listed:
            spec = ToolSpec("listed")
            source = "inproc-server"

            async def __call__(self, input: dict[str, Any]) -> str:
                return f"served while {owner.state}"

        return [Listed()]

    async def aclose(self) -> None:
        self.state = "closed"


async def test_a_tool_source_is_opened_listed_and_closed_with_the_kernel() -> None:
    source = Source()
    provider = ScriptedProvider([calls("listed"), [{"text": "ok"}]])
    seen: list[Event] = []
    async with kernel(provider, [source]) as k:
        assert source.state == "open" and sorted(k.tools) == ["listed"]
        result = await k.run_once("go")
        seen = await k.sessions.events(result.session_id, types=["tool_call_completed"])
    assert source.state == "closed" and not k.tools
    assert seen[0].payload["output"] == "served while open" and seen[0].payload["source"] == "inproc-server"


async def test_a_source_that_cannot_open_is_a_typed_error_naming_it() -> None:
    store = MemoryStore()
    k = kernel(ScriptedProvider([[{"text": "x"}]]), [Source(fail=True)], store=store)
    with pytest.raises(ToolSourceError) as info:
        await k.start()
    assert info.value.details["source"] == "inproc" and info.value.path == "tools[0]"
    assert "nobody home" in str(info.value) and info.value.retryable
