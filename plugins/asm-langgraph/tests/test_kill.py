"""kill -9 a real child process mid-run: every acknowledged turn's checkpoint survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from asm_kernel import Kernel
from kill_child import counting_graph
from store_configs import DSN, drop_schema, durable_problem

from asm_langgraph import AsmCheckpointSaver

HERE = Path(__file__).parent
ACKS_BEFORE_KILL = 40


async def test_acknowledged_checkpoints_survive_kill_9(tmp_path: Path) -> None:
    name, reason = durable_problem()
    if name is None:
        pytest.skip(reason)
    store: dict[str, str] = (
        {"use": "duckdb", "path": str(tmp_path / "kill.duckdb")}
        if name == "duckdb"
        else {"use": "postgres", "dsn": DSN, "schema": f"k_{uuid.uuid4().hex[:12]}"}
    )
    child = subprocess.Popen(
        [sys.executable, str(HERE / "kill_child.py"), json.dumps(store)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    acked = -1
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked = int(line.split()[1])
            if acked + 1 >= ACKS_BEFORE_KILL:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert acked + 1 >= ACKS_BEFORE_KILL, "the child stopped before it was killed"
    try:
        async with Kernel({"store": store}) as kernel:
            graph = counting_graph(AsmCheckpointSaver(kernel))
            state = await graph.aget_state({"configurable": {"thread_id": "victim"}})
            turns = state.values["turns"]
            # The next turn runs on from the recovered checkpoint.
            after = await graph.ainvoke({"turns": []}, {"configurable": {"thread_id": "victim"}})
    finally:
        if name == "postgres":
            drop_schema(store["schema"])
    assert turns == list(range(len(turns))), "the recovered state is not a prefix of the turns"
    assert len(turns) >= acked + 1, f"acknowledged {acked + 1} turns, recovered {len(turns)}"
    assert len(turns) <= acked + 2
    assert after["turns"] == [*turns, len(turns)]
