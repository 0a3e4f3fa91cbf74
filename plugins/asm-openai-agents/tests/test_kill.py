"""kill -9 a real child process mid-stream: every acknowledged turn survives, whole, in order."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from asm_kernel import Kernel
from asm_kernel.testing.backends import FreshStores, durable_store, kill_after_acks

from asm_openai_agents import AsmSession

HERE = Path(__file__).parent
ACKS_BEFORE_KILL = 60


async def test_acknowledged_turns_survive_kill_9(tmp_path: Path) -> None:
    name, reason = durable_store()
    if name is None:
        pytest.skip(reason)
    stores = FreshStores(name, tmp_path, prefix="kill")
    store = stores()
    try:
        acked = kill_after_acks(
            [sys.executable, str(HERE / "kill_child.py"), json.dumps(store), "victim"],
            ACKS_BEFORE_KILL,
            env={**os.environ, "PYTHONPATH": str(HERE.parent)},
        )
        assert acked + 1 >= ACKS_BEFORE_KILL, "the child stopped before it was killed"
        async with Kernel({"store": store}) as kernel:
            items = [i["content"] for i in await AsmSession("victim", kernel).get_items()]
    finally:
        stores.drop()
    turns = len(items) // 2
    assert len(items) % 2 == 0, "a turn was stored in part"
    assert turns >= acked + 1, f"acknowledged {acked + 1} turns, found {turns}"
    assert turns <= acked + 2  # at most the one in flight when the signal landed
    assert items == [f"{p}{n}" for n in range(turns) for p in ("q", "a")]
