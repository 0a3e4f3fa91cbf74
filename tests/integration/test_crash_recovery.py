"""kill -9 a process in the middle of a run, then start again on the same DuckDB file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from asm_kernel import Kernel, RunStatus

CHILD = textwrap.dedent('''
    import asyncio, sys
    from asm_kernel import Kernel

    async def main(path):
        config = {
            "store": {"use": "duckdb", "path": path},
            "providers": [{"name": "slow", "use": "scripted",
                           "turns": [[{"text": "working on it "}, {"delay": 600}, {"text": "done"}]]}],
        }
        async with Kernel(config) as kernel:
            session = await kernel.sessions.create()
            running = await kernel.runtime.submit_run(session.id, "long task")
            queued = [await kernel.runtime.submit_run(session.id, f"queued {i}") for i in range(2)]
            while not [e for e in await kernel.sessions.events(session.id) if e.type == "message_streamed"]:
                await asyncio.sleep(0.01)
            print(session.id, running.run_id, *(h.run_id for h in queued), flush=True)
            await asyncio.sleep(600)

    asyncio.run(main(sys.argv[1]))
''')


async def test_killed_process_leaves_nothing_stuck(tmp_path: Path) -> None:
    path = tmp_path / "crash.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM")}
    env["ASM_HOME"] = str(tmp_path / "home")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        session_id, running_id, *queued_ids = child.stdout.readline().split()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()  # reaps it and closes its pipe

    config = {"store": {"use": "duckdb", "path": str(path)},
              "providers": [{"name": "slow", "use": "scripted", "turns": [[{"text": "resumed"}]]}]}
    async with Kernel(config) as kernel:
        report = await kernel.runtime.start()
        assert report.crashed == (running_id,)
        assert report.resumed == tuple(queued_ids)
        crashed = await kernel.sessions.get_run(running_id)
        assert crashed.status is RunStatus.FAILED and crashed.error["code"] == "runtime.crashed"
        results = [await kernel.runtime.await_run(r) for r in queued_ids]
        assert [r.status for r in results] == [RunStatus.COMPLETED] * 2
        events = await kernel.sessions.events(session_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    failed = [e for e in events if e.type == "run_failed"]
    assert failed[0].run_id == running_id and failed[0].payload["reason"] == "crashed"
    # What the dead process had streamed before it died is still there, acknowledged and kept.
    assert any(e.type == "message_streamed" and e.run_id == running_id for e in events)
