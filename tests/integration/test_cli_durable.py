"""The CLI across separate processes on the default DuckDB store: what one command stores, the
next one reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def asm(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM")}
    env["ASM_HOME"] = str(tmp_path / "home")

    def call(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "asm_kernel.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"asm {' '.join(args)} failed: {proc.stderr}")
        return proc

    call.env = env  # type: ignore[attr-defined]
    return call


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_default_store_is_duckdb_in_asm_home(asm, tmp_path: Path) -> None:
    first = json.loads(asm("run", "remember the number 7", "--json").stdout)
    assert (tmp_path / "home" / "sessions.duckdb").is_file()
    sid = first["session_id"]
    second = json.loads(asm("run", "--session", sid, "what was it?", "--json").stdout)
    assert second["session_id"] == sid and second["status"] == "completed"
    events = jsonl(asm("events", sid, "--json").stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert {"seq", "type", "run_id", "timestamp", "payload"} <= set(e)
    sent = [e["payload"]["message"]["content"][0]["text"] for e in events if e["type"] == "message_sent"]
    assert sent == ["remember the number 7", "what was it?"]
    after = jsonl(asm("events", sid, "--json", "--after", "5", "--type", "run_completed").stdout)
    assert [e["type"] for e in after] == ["run_completed", "run_completed"]
    listed = jsonl(asm("sessions", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [sid]
    shown = json.loads(asm("sessions", "show", sid, "--json").stdout)
    assert len(shown["runs"]) == 2 and shown["events"] == len(events)
    assert shown["usage"]["output_tokens"] > 0


def test_demo_stores_in_duckdb_and_can_be_inspected(asm) -> None:
    out = asm("demo", "--fast").stdout
    assert "DuckDBStore" in out
    demo = jsonl(asm("sessions", "list", "--tag", "demo", "--json").stdout)
    assert len(demo) == 3
    table = asm("events", demo[0]["id"]).stdout
    assert "run_completed" in table


def test_events_follow_prints_new_events_as_they_arrive(asm, tmp_path: Path) -> None:
    sid = json.loads(asm("run", "first", "--json").stdout)["session_id"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "asm_kernel.cli", "events", sid, "--json", "--follow", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=asm.env,
    )
    try:
        seen: list[dict[str, Any]] = []
        assert follower.stdout is not None
        while not any(e["type"] == "run_completed" for e in seen):
            seen.append(json.loads(follower.stdout.readline()))
        asm("run", "--session", sid, "second", "--json")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            event = json.loads(follower.stdout.readline())
            seen.append(event)
            if event["type"] == "run_completed" and event["payload"]["output"] == "second":
                break
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))  # no gap, no duplicate
        assert seen[-1]["payload"]["output"] == "second"
    finally:
        follower.kill()
        follower.communicate()  # reaps it and closes its pipes
