"""LangGraph checkpointers: AsyncSqliteSaver (langgraph-checkpoint-sqlite, LangGraph's own
persistent saver, a file) beside asm_langgraph.AsmCheckpointSaver on each available asm store,
same graph and workloads, one run.

    pip install -e . -e plugins/asm-langgraph langgraph-checkpoint-sqlite aiosqlite
    python bench/bench_langgraph.py [--turns 300 --sessions 50 ...]

A turn is one invocation of a two-node chat graph (a user message in, an answer out): LangGraph
stores a checkpoint per step and the writes of each task. load-all reads the thread's whole
checkpoint history (``aget_state_history``); last-N lists its newest N checkpoints; the latest
state (``aget_state``, what a next turn loads) is timed as "latest".
"""

from __future__ import annotations

import asyncio
import operator
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict

sys.path.insert(0, str(Path(__file__).parent))

from _adapters import Table, arguments, asm_store, run, store_problem, workdir


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]


def chat_graph(saver: Any) -> Any:
    from langgraph.graph import START, StateGraph

    builder = StateGraph(Chat)
    builder.add_node("think", lambda s: {"messages": [f"thought about {len(s['messages'])} messages"]})
    builder.add_node("answer", lambda s: {"messages": [f"answer {len(s['messages'])}: ships tomorrow"]})
    builder.add_edge(START, "think")
    builder.add_edge("think", "answer")
    return builder.compile(checkpointer=saver)


def cfg(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


async def workloads(table: Table, variant: str, saver: Any, args: Any) -> None:
    graph = chat_graph(saver)

    async def append() -> None:
        for i in range(args.turns):
            await graph.ainvoke({"messages": [f"question {i}"]}, cfg("bench-append"))

    async def load_all() -> None:
        for _ in range(args.reads):
            history = [s async for s in graph.aget_state_history(cfg("bench-append"))]
            assert len(history) >= 3 * args.turns

    async def last_n() -> None:
        for _ in range(args.reads):
            listed = [t async for t in saver.alist(cfg("bench-append"), limit=args.last)]
            assert len(listed) == min(args.last, 3 * args.turns + 1)

    async def latest() -> None:
        for _ in range(args.reads):
            state = await graph.aget_state(cfg("bench-append"))
            assert len(state.values["messages"]) == 3 * args.turns

    acked: dict[int, int] = {}

    async def concurrent() -> int:
        async def one(k: int) -> int:  # how many of this thread's turns failed
            failed = 0
            for i in range(args.per_session):
                try:
                    await graph.ainvoke({"messages": [f"question {i}"]}, cfg(f"bench-c{k}"))
                    acked[k] = acked.get(k, 0) + 3  # a question, a thought, an answer
                except Exception:
                    failed += 1
            return failed

        return sum(await asyncio.gather(*(one(k) for k in range(args.sessions))))

    await table.time("append", variant, args.turns, append)
    await table.time("load-all", variant, args.reads, load_all, repeat=3)
    await table.time(f"last-{args.last}", variant, args.reads, last_n, repeat=3)
    await table.time("latest", variant, args.reads, latest, repeat=3)
    async def lost() -> int:
        missing = 0
        for k, n in acked.items():
            state = await graph.aget_state(cfg(f"bench-c{k}"))
            missing += max(0, n - len(state.values.get("messages", [])))
        return missing

    await table.time("concurrent", variant, args.sessions * args.per_session, concurrent, lost)


async def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    from asm_langgraph import AsmCheckpointSaver
    from asm_langgraph._view import forget
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from asm_kernel import Kernel

    table = Table(
        f"LangGraph checkpointers: {args.turns} turns on one thread, {args.reads} reads, "
        f"{args.sessions} threads x {args.per_session} turns concurrently"
    )
    base = workdir()
    async with AsyncSqliteSaver.from_conn_string(str(base / "checkpoints.sqlite")) as sqlite:
        await workloads(table, "AsyncSqliteSaver (file)", sqlite, args)
    async with AsyncSqliteSaver.from_conn_string(str(base / "checkpoints.sqlite")) as fresh:

        async def cold() -> None:
            assert await fresh.aget_tuple(cfg("bench-append")) is not None

        await table.time("cold latest", "AsyncSqliteSaver (file)", 1, cold)
    for name in args.stores.split(","):
        reason = store_problem(name)
        if reason is not None:
            table.skip(f"asm {name}", reason)
            continue
        async with asm_store(name, base) as store:
            kernel = await Kernel({"store": store}).start()
            try:
                saver = AsmCheckpointSaver(kernel)
                await workloads(table, f"AsmCheckpointSaver ({name})", saver, args)
                forget(kernel)  # no cached view: the thread is rebuilt from the store

                async def cold(saver: Any = saver) -> None:
                    assert await saver.aget_tuple(cfg("bench-append")) is not None

                await table.time("cold latest", f"AsmCheckpointSaver ({name})", 1, cold)
            finally:
                await kernel.close()
    table.print()


if __name__ == "__main__":
    run(main)
