"""Child process of test_kill.py: runs a counting graph turn after turn until it is killed.

Prints ``ACK <n>`` (flushed) once turn ``n`` returned, i.e. its checkpoints were acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import operator
import sys
from typing import Annotated, Any, TypedDict

from asm_kernel import Kernel
from langgraph.graph import START, StateGraph

from asm_langgraph import AsmCheckpointSaver


class State(TypedDict):
    turns: Annotated[list[int], operator.add]


def counting_graph(saver: AsmCheckpointSaver) -> Any:
    builder = StateGraph(State)
    builder.add_node("count", lambda s: {"turns": [len(s["turns"])]})
    builder.add_edge(START, "count")
    return builder.compile(checkpointer=saver)


async def main(store: dict[str, object]) -> None:
    async with Kernel({"store": store}) as kernel:
        graph = counting_graph(AsmCheckpointSaver(kernel))
        n = 0
        while True:
            await graph.ainvoke({"turns": []}, {"configurable": {"thread_id": "victim"}})
            print(f"ACK {n}", flush=True)
            n += 1


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
