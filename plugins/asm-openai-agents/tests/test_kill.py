"""kill -9 a real child process mid-stream: every acknowledged turn survives, whole, in order."""

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
from store_configs import DSN, drop_schema, durable_problem

from asm_openai_agents import AsmSession

HERE = Path(__file__).parent
ACKS_BEFORE_KILL = 60


async def test_acknowledged_turns_survive_kill_9(tmp_path: Path) -> None:
    name, reason = durable_problem()
    if name is None:
        pytest.skip(reason)
    store: dict[str, str] = (
        {"use": "duckdb", "path": str(tmp_path / "kill.duckdb")}
        if name == "duckdb"
        else {"use": "postgres", "dsn": DSN, "schema": f"k_{uuid.uuid4().hex[:12]}"}
    )
    child = subprocess.Popen(
        [sys.executable, str(HERE / "kill_child.py"), json.dumps(store), "victim"],
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
        child.send_signal(signal.SIGKILL)  # mid-stream: the child is appending its next turn
    finally:
        child.kill()
        child.wait()
    assert acked + 1 >= ACKS_BEFORE_KILL, "the child stopped before it was killed"
    try:
        async with Kernel({"store": store}) as kernel:
            items = [i["content"] for i in await AsmSession("victim", kernel).get_items()]
    finally:
        if name == "postgres":
            drop_schema(store["schema"])
    turns = len(items) // 2
    assert len(items) % 2 == 0, "a turn was stored in part"
    assert turns >= acked + 1, f"acknowledged {acked + 1} turns, found {turns}"
    assert turns <= acked + 2  # at most the one in flight when the signal landed
    assert items == [f"{p}{n}" for n in range(turns) for p in ("q", "a")]
