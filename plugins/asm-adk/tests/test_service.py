"""AsmSessionService under ADK's Runner, in the log, under concurrency, after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest
from asm_kernel import Kernel
from asm_kernel.errors import ValidationError
from google.adk.agents import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.errors import StaleSessionError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.runners import Runner
from google.genai import types

from asm_adk import EVENT_APPENDED, SESSION_CREATED, SESSION_DELETED, AsmSessionService
from asm_adk._view import forget, session_key


class CountingAgent(BaseAgent):
    """A deterministic agent: answers with the turn number and keeps counters in every scope."""

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        turn = int(ctx.session.state.get("turns", 0)) + 1
        yield Event(
            author=self.name,
            invocation_id=ctx.invocation_id,
            content=types.Content(role="model", parts=[types.Part(text=f"turn {turn}")]),
            actions=EventActions(
                state_delta={
                    "turns": turn,
                    "user:visits": int(ctx.session.state.get("user:visits", 0)) + 1,
                    "app:last_user": ctx.session.user_id,
                    "temp:scratch": "not stored",
                }
            ),
        )


def said(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def run_turn(runner: Runner, user: str, session_id: str, text: str) -> list[str]:
    out = []
    async for event in runner.run_async(user_id=user, session_id=session_id, new_message=said(text)):
        if event.content and event.content.parts:
            out.append(event.content.parts[0].text or "")
    return out


async def test_a_runner_keeps_state_in_every_scope(make_kernel: Callable[..., Kernel]) -> None:
    async def check(service: AsmSessionService) -> None:
        s1 = await service.get_session(app_name="shop", user_id="ana", session_id="s1")
        assert s1 is not None and s1.state["turns"] == 2
        assert s1.state["user:visits"] == 3 and s1.state["app:last_user"] == "ana"
        assert "temp:scratch" not in s1.state
        assert [e.author for e in s1.events] == ["user", "counter", "user", "counter"]
        assert await service.get_user_state(app_name="shop", user_id="ana") == {"visits": 3}
        listed = (await service.list_sessions(app_name="shop", user_id="ana")).sessions
        assert [s.id for s in listed] == ["s1", "s2"]  # oldest update first

    async with make_kernel() as kernel:
        service = AsmSessionService(kernel)
        runner = Runner(agent=CountingAgent(name="counter"), app_name="shop", session_service=service)
        await service.create_session(app_name="shop", user_id="ana", session_id="s1")
        assert await run_turn(runner, "ana", "s1", "hi") == ["turn 1"]
        assert await run_turn(runner, "ana", "s1", "again") == ["turn 2"]
        await service.create_session(app_name="shop", user_id="ana", session_id="s2")
        assert await run_turn(runner, "ana", "s2", "new chat") == ["turn 1"]
        await check(service)
        durable = kernel.store.capabilities.durable
    if durable:
        async with make_kernel() as kernel:  # a process that never saw these sessions
            await check(AsmSessionService(kernel))


async def test_the_log_holds_every_event_and_deletion_is_a_tombstone(kernel: Kernel) -> None:
    service = AsmSessionService(kernel)
    session = await service.create_session(app_name="app", user_id="u", session_id="s", state={"k": 1})
    await service.append_event(session, Event(author="user", actions=EventActions(state_delta={"k": 2})))
    await service.delete_session(app_name="app", user_id="u", session_id="s")
    assert await service.get_session(app_name="app", user_id="u", session_id="s") is None
    assert (await service.list_sessions(app_name="app", user_id="u")).sessions == []
    again = await service.create_session(app_name="app", user_id="u", session_id="s")
    assert again.state == {} and again.events == []
    log = [e.type for e in await kernel.sessions.events(session_key("app", "u", "s"))]
    assert log == ["session_created", SESSION_CREATED, EVENT_APPENDED, SESSION_DELETED, SESSION_CREATED]
    record = await kernel.sessions.get(session_key("app", "u", "s"))
    assert record.agent_id == "adk" and record.metadata["app_name"] == "app"


async def test_names_never_collide_and_ids_are_trimmed(kernel: Kernel) -> None:
    service = AsmSessionService(kernel)
    await service.create_session(app_name="a:b", user_id="c", session_id="s", state={"who": 1})
    await service.create_session(app_name="a", user_id="b:c", session_id="s", state={"who": 2})
    assert (await service.get_session(app_name="a:b", user_id="c", session_id="s")).state == {"who": 1}
    assert (await service.get_session(app_name="a", user_id="b:c", session_id="s")).state == {"who": 2}
    padded = await service.create_session(app_name="app", user_id="u", session_id="  pad  ")
    assert padded.id == "pad"
    assert await service.get_session(app_name="app", user_id="u", session_id=" pad ") is not None


async def test_concurrent_writers_lose_and_reorder_nothing(kernel: Kernel) -> None:
    service = AsmSessionService(kernel)
    await service.create_session(app_name="app", user_id="u", session_id="busy")

    async def writer(w: int) -> None:
        for i in range(15):
            while True:  # what an ADK app does with a stale session: read it again, retry
                current = await service.get_session(app_name="app", user_id="u", session_id="busy")
                try:
                    await service.append_event(current, Event(author=f"w{w}", invocation_id=f"{w}:{i}"))
                    break
                except StaleSessionError:
                    continue

    await asyncio.gather(*(writer(w) for w in range(8)))
    final = await service.get_session(app_name="app", user_id="u", session_id="busy")
    ids = [e.invocation_id for e in final.events]
    assert len(ids) == 120 and len(set(ids)) == 120
    for w in range(8):
        assert [i for i in ids if i.startswith(f"{w}:")] == [f"{w}:{i}" for i in range(15)]


async def test_many_sessions_in_parallel(kernel: Kernel) -> None:
    service = AsmSessionService(kernel)

    async def chat(n: int) -> None:
        session = await service.create_session(app_name="app", user_id=f"u{n % 5}", session_id=f"s{n}")
        for i in range(10):
            await service.append_event(session, Event(author="user", actions=EventActions(state_delta={"i": i})))

    await asyncio.gather(*(chat(n) for n in range(30)))
    for n in range(30):
        got = await service.get_session(app_name="app", user_id=f"u{n % 5}", session_id=f"s{n}")
        assert len(got.events) == 10 and got.state == {"i": 9}
    assert len((await service.list_sessions(app_name="app")).sessions) == 30


async def test_a_crash_between_session_and_scope_writes_is_repaired(make_kernel: Callable[..., Kernel]) -> None:
    async with make_kernel() as kernel:
        service = AsmSessionService(kernel)
        session = await service.create_session(app_name="app", user_id="u", session_id="s")

        async def crash(*args: Any) -> None:
            raise RuntimeError("the process died here")

        service._write_scope = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await service.append_event(session, Event(author="user", actions=EventActions(state_delta={"user:n": 7})))
        assert await AsmSessionService(kernel).get_user_state(app_name="app", user_id="u") == {}  # lost so far
        if not kernel.store.capabilities.durable:
            fresh = AsmSessionService(kernel)
            forget(kernel)  # as after a restart: no view survives
            got = await fresh.get_session(app_name="app", user_id="u", session_id="s")
            assert got is not None and got.state["user:n"] == 7
            return
    async with make_kernel() as kernel:
        got = await AsmSessionService(kernel).get_session(app_name="app", user_id="u", session_id="s")
        assert got is not None and got.state["user:n"] == 7
        assert await AsmSessionService(kernel).get_user_state(app_name="app", user_id="u") == {"n": 7}


async def test_errors_say_what_and_how(kernel: Kernel) -> None:
    with pytest.raises(ValidationError, match="Kernel"):
        AsmSessionService(object())
    service = AsmSessionService(kernel)
    ghost = await service.create_session(app_name="app", user_id="u", session_id="s")
    await service.delete_session(app_name="app", user_id="u", session_id="s")
    with pytest.raises(ValueError, match="not found"):
        await service.append_event(ghost, Event(author="user"))


async def test_evicted_views_are_rebuilt(kernel: Kernel) -> None:
    service = AsmSessionService(kernel)
    views = service._views()
    views.max_bytes = 1  # every session view but the newest is dropped after each append
    for n in range(4):
        session = await service.create_session(app_name="app", user_id="u", session_id=f"s{n}")
        await service.append_event(session, Event(author="user", actions=EventActions(state_delta={"n": n})))
    assert views.stats[0] == 1
    for n in range(4):
        got = await service.get_session(app_name="app", user_id="u", session_id=f"s{n}")
        assert got is not None and len(got.events) == 1 and got.state == {"n": n}
