"""kill -9 a real child process mid-run: every acknowledged turn's checkpoint survives."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from asm_kernel import Kernel
from asm_kernel.testing.backends import FreshStores, durable_store, kill_after_acks
from kill_child import counting_graph

from asm_langgraph import AsmCheckpointSaver

HERE = Path(__file__).parent
ACKS_BEFORE_KILL = 40


async def test_acknowledged_checkpoints_survive_kill_9(tmp_path: Path) -> None:
    name, reason = durable_store()
    if name is None:
        pytest.skip(reason)
    stores = FreshStores(name, tmp_path, prefix="kill")
    store = stores()
    try:
        acked = kill_after_acks(
            [sys.executable, str(HERE / "kill_child.py"), json.dumps(store)],
            ACKS_BEFORE_KILL,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )
        assert acked + 1 >= ACKS_BEFORE_KILL, "the child stopped before it was killed"
        async with Kernel({"store": store}) as kernel:
            graph = counting_graph(AsmCheckpointSaver(kernel))
            state = await graph.aget_state({"configurable": {"thread_id": "victim"}})
            turns = state.values["turns"]
            # The next turn runs on from the recovered checkpoint.
            after = await graph.ainvoke({"turns": []}, {"configurable": {"thread_id": "victim"}})
    finally:
        stores.drop()
    assert turns == list(range(len(turns))), "the recovered state is not a prefix of the turns"
    assert len(turns) >= acked + 1, f"acknowledged {acked + 1} turns, recovered {len(turns)}"
    assert len(turns) <= acked + 2
    assert after["turns"] == [*turns, len(turns)]
