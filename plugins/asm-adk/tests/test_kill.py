"""kill -9 a real child process mid-run: every acknowledged event and its state survive."""

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

from asm_adk import AsmSessionService

HERE = Path(__file__).parent
ACKS_BEFORE_KILL = 40


async def test_acknowledged_events_survive_kill_9(tmp_path: Path) -> None:
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
            service = AsmSessionService(kernel)
            session = await service.get_session(app_name="app", user_id="u", session_id="victim")
            user_state = await service.get_user_state(app_name="app", user_id="u")
    finally:
        if name == "postgres":
            drop_schema(store["schema"])
    assert session is not None
    stored = [int(e.invocation_id) for e in session.events]
    assert stored == list(range(len(stored))), "events were lost or reordered"
    assert len(stored) >= acked + 1, f"acknowledged {acked + 1} events, found {len(stored)}"
    assert len(stored) <= acked + 2
    assert session.state["n"] == stored[-1]
    # The user scope holds every acknowledged delta (a delta written after the last ack is repaired on read).
    assert user_state["n"] == stored[-1]
