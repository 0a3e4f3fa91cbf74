"""Real LangGraph graphs on AsmCheckpointSaver: interrupts and resume, time travel, subgraphs,
parallel writers, a sync graph, rebuilds from the log and what the log holds."""

from __future__ import annotations

import asyncio
import operator
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest
from asm_kernel import Kernel, SyncKernel
from asm_kernel.errors import StateError, ValidationError
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from asm_langgraph import BLOB_PUT, CHECKPOINT_PUT, THREAD_DELETED, WRITES_PUT, AsmCheckpointSaver
from asm_langgraph._view import views_for


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def approval_graph(saver: AsmCheckpointSaver) -> Any:
    def draft(state: State) -> dict[str, Any]:
        return {"log": ["drafted"]}

    def review(state: State) -> dict[str, Any]:
        answer = interrupt({"question": "approve?", "seen": list(state["log"])})
        return {"log": [f"review:{answer}"]}

    def publish(state: State) -> dict[str, Any]:
        return {"log": ["published"]}

    builder = StateGraph(State)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=saver)


def cfg(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


async def test_interrupt_then_resume_in_a_new_process(make_kernel: Callable[..., Kernel]) -> None:
    async with make_kernel() as kernel:
        graph = approval_graph(AsmCheckpointSaver(kernel))
        first = await graph.ainvoke({"log": []}, cfg("t1"))
        assert first["__interrupt__"][0].value == {"question": "approve?", "seen": ["drafted"]}
        state = await graph.aget_state(cfg("t1"))
        assert state.next == ("review",)
        if not kernel.store.capabilities.durable:
            done = await graph.ainvoke(Command(resume="yes"), cfg("t1"))
            assert done["log"] == ["drafted", "review:yes", "published"]
            return
    async with make_kernel() as kernel:  # a process that never saw the thread resumes it
        graph = approval_graph(AsmCheckpointSaver(kernel))
        done = await graph.ainvoke(Command(resume="yes"), cfg("t1"))
        assert done["log"] == ["drafted", "review:yes", "published"]
        history = [s async for s in graph.aget_state_history(cfg("t1"))]
        assert [s.next for s in history][:2] == [(), ("publish",)]


async def test_time_travel_matches_langgraphs_own_saver(kernel: Kernel) -> None:
    """Forking from an old checkpoint, editing state and replaying give what InMemorySaver gives."""

    async def scenario(graph: Any) -> list[Any]:
        seen: list[Any] = []
        await graph.ainvoke({"log": []}, cfg("t1"))
        seen.append((await graph.ainvoke(Command(resume="no"), cfg("t1")))["log"])
        history = [s async for s in graph.aget_state_history(cfg("t1"))]
        seen.append([(s.next, s.values.get("log")) for s in history])
        before_review = next(s for s in history if s.next == ("review",))
        edited = await graph.aupdate_state(before_review.config, {"log": ["edited"]})
        seen.append((await graph.ainvoke(None, edited))["log"])
        seen.append((await graph.ainvoke(Command(resume="again"), cfg("t1")))["log"])
        seen.append([(s.next, s.values.get("log")) async for s in graph.aget_state_history(cfg("t1"))])
        return seen

    ours = await scenario(approval_graph(AsmCheckpointSaver(kernel)))
    theirs = await scenario(approval_graph(InMemorySaver()))  # type: ignore[arg-type]
    assert ours == theirs
    assert len(ours[-1]) > len(ours[1])  # the fork added checkpoints


async def test_subgraph_checkpoints_live_in_their_namespace(kernel: Kernel) -> None:
    def inner(state: State) -> dict[str, Any]:
        answer = interrupt("inner?")
        return {"log": [f"inner:{answer}"]}

    sub = StateGraph(State)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    outer = StateGraph(State)
    outer.add_node("sub", sub.compile())
    outer.add_edge(START, "sub")
    saver = AsmCheckpointSaver(kernel)
    graph = outer.compile(checkpointer=saver)
    await graph.ainvoke({"log": []}, cfg("t1"))
    namespaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist(cfg("t1") | {})}
    assert "" in namespaces and any(ns.startswith("sub:") for ns in namespaces)
    done = await graph.ainvoke(Command(resume="ok"), cfg("t1"))
    assert done["log"] == ["inner:ok"]


async def test_parallel_branches_and_threads_lose_nothing(kernel: Kernel) -> None:
    builder = StateGraph(State)
    for name in ("a", "b", "c"):
        builder.add_node(name, lambda s, n=name: {"log": [n]})
        builder.add_edge(START, name)
    builder.add_node("join", lambda s: {"log": ["join"]})
    builder.add_edge(["a", "b", "c"], "join")
    graph = builder.compile(checkpointer=AsmCheckpointSaver(kernel))
    results = await asyncio.gather(*(graph.ainvoke({"log": []}, cfg(f"t{i}")) for i in range(12)))
    for result in results:
        assert sorted(result["log"][:3]) == ["a", "b", "c"] and result["log"][3] == "join"
    for i in range(12):
        again = await graph.ainvoke({"log": ["more"]}, cfg(f"t{i}"))
        assert len(again["log"]) == 9


async def test_the_log_records_checkpoints_writes_and_deletion(kernel: Kernel) -> None:
    saver = AsmCheckpointSaver(kernel)
    graph = approval_graph(saver)
    await graph.ainvoke({"log": []}, cfg("t1"))
    log = await kernel.sessions.events(saver.session_id("t1"))
    types = {e.type for e in log}
    assert {CHECKPOINT_PUT, WRITES_PUT} <= types
    session = await kernel.sessions.get("langgraph:t1")
    assert session.agent_id == "langgraph" and session.metadata["thread_id"] == "t1"
    await saver.adelete_thread("t1")
    assert await saver.aget_tuple(cfg("t1")) is None
    assert len(await kernel.sessions.events("langgraph:t1")) == len(log) + 1  # history is kept
    assert (await kernel.sessions.events("langgraph:t1"))[-1].type == THREAD_DELETED
    await graph.ainvoke({"log": []}, cfg("t1"))  # the thread starts afresh after its deletion
    assert (await graph.aget_state(cfg("t1"))).values["log"] == ["drafted"]


async def test_evicted_views_are_rebuilt(kernel: Kernel) -> None:
    views_for(kernel).max_bytes = 1
    graph = approval_graph(AsmCheckpointSaver(kernel))
    for i in range(4):
        await graph.ainvoke({"log": []}, cfg(f"t{i}"))
    assert views_for(kernel).stats[0] == 1
    for i in range(4):
        done = await graph.ainvoke(Command(resume=str(i)), cfg(f"t{i}"))
        assert done["log"] == ["drafted", f"review:{i}", "published"]


def test_sync_graph_through_a_sync_kernel(store_config: dict[str, Any]) -> None:
    with SyncKernel({"store": store_config}) as kernel:
        graph = approval_graph(AsmCheckpointSaver(kernel))
        graph.invoke({"log": []}, cfg("t1"))
        done = graph.invoke(Command(resume="sync"), cfg("t1"))
        assert done["log"] == ["drafted", "review:sync", "published"]
        assert len(list(graph.get_state_history(cfg("t1")))) >= 4


async def test_sync_graph_from_another_thread(kernel: Kernel) -> None:
    graph = approval_graph(AsmCheckpointSaver(kernel))  # built on the kernel's loop
    outcome: list[Any] = []

    def work() -> None:
        graph.invoke({"log": []}, cfg("t1"))
        outcome.append(graph.invoke(Command(resume="thread"), cfg("t1")))

    worker = threading.Thread(target=work)
    worker.start()
    while worker.is_alive():
        await asyncio.sleep(0.01)  # the loop keeps running the saver's calls meanwhile
    assert outcome[0]["log"] == ["drafted", "review:thread", "published"]


async def test_errors_say_what_and_how(kernel: Kernel) -> None:
    saver = AsmCheckpointSaver(kernel)
    with pytest.raises(ValidationError, match="thread_id"):
        await saver.aget_tuple({"configurable": {}})
    with pytest.raises(StateError, match="event loop"):
        saver.get_tuple(cfg("t1"))  # on the kernel's own loop a blocking call would deadlock
    with pytest.raises(ValidationError, match="strategy"):
        await saver.aprune(["t1"], strategy="oldest")
    with pytest.raises(ValidationError, match="Kernel"):
        AsmCheckpointSaver(object())


async def test_large_channel_values_are_split_into_their_own_events(kernel: Kernel) -> None:
    saver = AsmCheckpointSaver(kernel)
    graph = approval_graph(saver)
    big = "x" * (2 * 2**20)  # 2 MiB, in the state and in the interrupt that shows it: two such
    # values in one event would pass the store's 4 MiB payload limit
    await graph.ainvoke({"log": [big]}, cfg("t1"))
    done = await graph.ainvoke(Command(resume="ok"), cfg("t1"))
    assert done["log"][0] == big and done["log"][-1] == "published"
    types = [e.type for e in await kernel.sessions.events(saver.session_id("t1"))]
    assert BLOB_PUT in types
