"""kill -9 a real child process mid-run: every acknowledged event and its state survive."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from asm_kernel import Kernel
from asm_kernel.testing.backends import FreshStores, durable_store, kill_after_acks

from asm_adk import AsmSessionService

HERE = Path(__file__).parent
ACKS_BEFORE_KILL = 40


async def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
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
            service = AsmSessionService(kernel)
            session = await service.get_session(app_name="app", user_id="u", session_id="victim")
            user_state = await service.get_user_state(app_name="app", user_id="u")
    finally:
        stores.drop()
    assert session is not None
    stored = [int(e.invocation_id) for e in session.events]
    assert stored == list(range(len(stored))), "events were lost or reordered"
    assert len(stored) >= acked + 1, f"acknowledged {acked + 1} events, found {len(stored)}"
    assert len(stored) <= acked + 2
    assert session.state["n"] == stored[-1]
    # The user scope holds every acknowledged delta (a delta written after the last ack is repaired on read).
    assert user_state["n"] == stored[-1]
