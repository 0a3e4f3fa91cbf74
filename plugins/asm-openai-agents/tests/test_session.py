"""AsmSession: the Session protocol, its events in the log, concurrency, usage, rebuilds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from agents import Agent, Runner, Usage
from agents.memory import Session, SessionSettings
from agents.memory.session import _session_accepts_wrapper
from agents.testing import ModelStep, ScriptedModel
from asm_kernel import Kernel
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.errors import StateError, ValidationError

from asm_openai_agents import ITEM_ADDED, ITEM_POPPED, SESSION_CLEARED, USAGE_RECORDED, AsmSession
from asm_openai_agents._view import views_for


def msg(text: str, role: str = "user") -> Any:
    return {"role": role, "content": text}


def texts(items: list[Any]) -> list[str]:
    return [item["content"] for item in items]


async def test_implements_the_session_protocol_with_the_context_wrapper(kernel: Kernel) -> None:
    session = AsmSession("s1", kernel)
    assert isinstance(session, Session)
    assert _session_accepts_wrapper(session)  # so the Runner hands it the run's usage
    assert session.session_settings == SessionSettings()


async def test_items_pops_and_clears_are_events_and_history_stays(kernel: Kernel) -> None:
    session = AsmSession("s1", kernel)
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items([msg("a"), msg("b", "assistant")])
    await session.add_items([msg("c")])
    assert texts(await session.get_items()) == ["a", "b", "c"]
    assert texts(await session.get_items(limit=2)) == ["b", "c"]
    assert await session.pop_item() == msg("c")
    assert texts(await session.get_items()) == ["a", "b"]
    await session.clear_session()
    assert await session.get_items() == []
    await session.add_items([msg("d")])
    assert texts(await session.get_items()) == ["d"]

    log = await kernel.sessions.events("s1")
    assert [e.type for e in log][1:] == [ITEM_ADDED] * 3 + [ITEM_POPPED, SESSION_CLEARED, ITEM_ADDED]
    assert [e.payload["item"]["content"] for e in log if e.type == ITEM_ADDED] == ["a", "b", "c", "d"]
    stored = await kernel.sessions.get("s1")
    assert stored.agent_id == "openai-agents" and stored.metadata["framework"] == "openai-agents"


async def test_limits_follow_the_sdk(kernel: Kernel) -> None:
    session = AsmSession("s1", kernel, session_settings={"limit": 2})
    await session.add_items([msg(str(i)) for i in range(5)])
    assert texts(await session.get_items()) == ["3", "4"]  # the settings' limit
    assert texts(await session.get_items(limit=3)) == ["2", "3", "4"]  # an explicit one wins
    assert await session.get_items(limit=0) == []
    assert len(await session.get_items(limit=-1)) == 5  # SQLite's LIMIT -1: everything
    assert len(await session.get_items(limit=50)) == 5


async def test_returned_items_are_copies(kernel: Kernel) -> None:
    session = AsmSession("s1", kernel)
    await session.add_items([msg("a")])
    (item,) = await session.get_items()
    item["content"] = "changed"
    assert texts(await session.get_items()) == ["a"]


async def test_a_turn_is_one_atomic_unit() -> None:
    units: list[Any] = []

    class Recording(MemoryStore):
        async def commit(self, unit: Any) -> Any:
            units.append(unit)
            return await super().commit(unit)

    async with Kernel({}, store=Recording()) as kernel:
        session = AsmSession("s1", kernel)
        await session.add_items([msg("a"), msg("b"), msg("c")])
        assert [len(u.events) for u in units] == [1, 3]  # session_created, then the turn


async def test_a_refused_turn_stores_nothing(kernel: Kernel) -> None:
    session = AsmSession("s1", kernel)
    await session.add_items([msg("a")])
    with pytest.raises(ValidationError):
        await session.add_items([msg("b"), {"role": "user", "content": float("nan")}])
    assert texts(await session.get_items()) == ["a"]
    with pytest.raises(ValidationError, match="items must be a list"):
        await session.add_items(msg("c"))  # type: ignore[arg-type]


async def test_concurrent_writers_lose_and_reorder_nothing(kernel: Kernel) -> None:
    async def writer(w: int) -> None:
        session = AsmSession("shared", kernel)  # a new object per writer, as per request in apps
        for i in range(20):
            await session.add_items([msg(f"{w}:{i}:a"), msg(f"{w}:{i}:b")])

    await asyncio.gather(*(writer(w) for w in range(10)))
    items = texts(await AsmSession("shared", kernel).get_items())
    assert len(items) == 400 and len(set(items)) == 400
    for w in range(10):
        mine = [t for t in items if t.startswith(f"{w}:")]
        assert mine == [f"{w}:{i}:{p}" for i in range(20) for p in "ab"]
    for first, second in zip(items[::2], items[1::2], strict=True):  # each turn stayed together
        assert first.endswith(":a") and second == first[:-1] + "b"


async def test_concurrent_pops_remove_distinct_items(kernel: Kernel) -> None:
    await AsmSession("s1", kernel).add_items([msg(str(i)) for i in range(30)])
    popped = await asyncio.gather(*(AsmSession("s1", kernel).pop_item() for _ in range(40)))
    found = sorted(int(p["content"]) for p in popped if p is not None)
    assert found == list(range(30))
    assert await AsmSession("s1", kernel).get_items() == []


async def test_pops_are_resolved_in_log_order_against_other_writers(kernel: Kernel) -> None:
    session = AsmSession("s1", kernel)
    await session.add_items([msg("a"), msg("b")])
    other = AsmSession("s1", kernel)
    results = await asyncio.gather(other.add_items([msg("c")]), session.pop_item())
    remaining = texts(await session.get_items())
    # Whichever the store sequenced first, the pop removed the newest item visible at its seq.
    assert (results[1], remaining) in ((msg("c"), ["a", "b"]), (msg("b"), ["a", "c"]))


async def test_view_is_rebuilt_from_the_log(make_kernel: Callable[..., Kernel]) -> None:
    async with make_kernel() as kernel:
        session = AsmSession("s1", kernel)
        await session.add_items([msg("old")])
        await session.clear_session()
        await session.add_items([msg(str(i)) for i in range(5)])
        await session.pop_item()
        await session.record_usage(Usage(requests=1, input_tokens=3, output_tokens=4, total_tokens=7))
    async with make_kernel() as kernel:  # a new process on the same store
        if not kernel.store.capabilities.durable:
            pytest.skip("the memory store keeps nothing after its kernel closes")
        session = AsmSession("s1", kernel)
        assert texts(await session.get_items()) == ["0", "1", "2", "3"]
        assert (await session.usage())["total_tokens"] == 7


async def test_evicted_views_are_rebuilt(kernel: Kernel) -> None:
    views_for(kernel).max_bytes = 1  # every view but the newest is dropped after each write
    for s in range(5):
        await AsmSession(f"s{s}", kernel).add_items([msg(f"{s}-{i}") for i in range(3)])
    assert views_for(kernel).stats[0] == 1
    for s in range(5):
        assert texts(await AsmSession(f"s{s}", kernel).get_items(limit=2)) == [f"{s}-1", f"{s}-2"]


async def test_runner_usage_is_recorded(kernel: Kernel) -> None:
    usage = Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)
    model = ScriptedModel([ModelStep(output=[_text("hi there")], usage=usage)] * 2)
    agent = Agent(name="a", model=model)
    session = AsmSession("s1", kernel)
    result = await Runner.run(agent, "hello", session=session)
    assert result.final_output == "hi there"
    await Runner.run(agent, "again", session=session)
    await session.record_usage(result)  # already recorded through the wrapper: nothing to add
    items = await session.get_items()
    assert len(items) == 4 and items[0]["content"] == "hello" and items[2]["content"] == "again"
    assert items[1]["content"][0]["text"] == "hi there"
    totals = await session.usage()
    assert totals["requests"] == 2 and totals["total_tokens"] == 30
    log = await kernel.sessions.events("s1", types=[USAGE_RECORDED])
    assert [e.payload["total_tokens"] for e in log] == [15, 15]
    await session.clear_session()
    assert (await session.usage())["total_tokens"] == 30  # clearing history does not un-spend


async def test_cancelled_write_keeps_its_outcome() -> None:
    """Ported from the SDK's post-commit cancellation test: a cancelled caller gets
    CancelledError, and the write it started is stored exactly once."""
    entered, release = asyncio.Event(), asyncio.Event()

    class Pausing(MemoryStore):
        pause = False

        async def commit(self, unit: Any) -> Any:
            committed = await super().commit(unit)
            if self.pause:
                self.pause = False
                entered.set()
                await release.wait()
            return committed

    store = Pausing()
    async with Kernel({}, store=store) as kernel:
        session = AsmSession("s1", kernel)
        await session.add_items([msg("first")])
        store.pause = True
        task = asyncio.create_task(session.add_items([msg("once")]))
        await entered.wait()
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert texts(await session.get_items()) == ["first", "once"]


async def test_errors_say_what_and_how(kernel: Kernel) -> None:
    with pytest.raises(ValidationError, match="session_id"):
        AsmSession("", kernel)
    with pytest.raises(ValidationError, match=r"asm_kernel\.Kernel"):
        AsmSession("s1", object())  # type: ignore[arg-type]
    session = AsmSession("s1", kernel)
    await session.add_items([msg("a")])
    await kernel.sessions.cancel("s1")
    with pytest.raises(StateError, match="cancelled"):
        await session.add_items([msg("b")])
    assert texts(await session.get_items()) == ["a"]  # a final session is still readable


async def test_a_closed_kernel_is_refused(make_kernel: Callable[..., Kernel]) -> None:
    async with make_kernel() as kernel:
        session = AsmSession("s1", kernel)
    with pytest.raises(StateError, match="not started"):
        await session.get_items()


def _text(text: str) -> Any:
    from openai.types.responses import ResponseOutputMessage, ResponseOutputText

    return ResponseOutputMessage(
        id="msg_1",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )
