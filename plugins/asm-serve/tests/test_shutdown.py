"""Graceful shutdown: stop accepting, drain or cancel runs, close streams after their last events."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
from serve_helpers import ServerThread, sse_messages


def _follow(url: str, sid: str, out: list[tuple[str, dict[str, Any]]]) -> threading.Thread:
    """Read the session's stream in a thread until the server closes it."""

    def read() -> None:
        with httpx.Client(base_url=url, timeout=60) as client, \
                client.stream("GET", f"/v1/sessions/{sid}/events/stream") as response:
            for name, _, data in sse_messages(response.iter_lines()):
                out.append((name, json.loads(data)))
                if name == "close":
                    return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _start_long_run(client: httpx.Client, words: int) -> tuple[str, str]:
    sid = client.post("/v1/sessions", json={}).json()["id"]
    run = client.post(f"/v1/sessions/{sid}/runs", json={"input": " ".join(["word"] * words)}).json()
    for _ in range(500):
        if client.get(f"/v1/runs/{run['id']}").json()["status"] == "running":
            break
    return sid, run["id"]


def _wait_for(got: list[tuple[str, dict[str, Any]]], kind: str) -> None:
    for _ in range(500):
        if any(name == "message" and e["type"] == kind for name, e in got):
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"no {kind} event")


def test_drain_lets_runs_finish_and_streams_end_after_their_last_event() -> None:
    srv = ServerThread(serve={"on_shutdown": "drain", "shutdown_grace": 30})
    srv.start()
    got: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        sid, run_id = _start_long_run(client, 60)  # ~0.8 s of streaming
        reader = _follow(srv.url, sid, got)
        _wait_for(got, "message_streamed")
        srv.server.request_stop()
        for _ in range(500):  # an open keep-alive connection is answered 503 while the runs drain
            refused = client.get("/v1/sessions")
            if refused.status_code == 503:
                break
        assert refused.json()["code"] == "http.shutting_down" and refused.headers["retry-after"] == "1"
        assert client.get("/v1/health").status_code == 200
        assert client.get("/v1/ready").json()["code"] == "http.shutting_down"
    reader.join(60)
    srv.stop()
    names = [name for name, _ in got]
    assert names[-1] == "close" and got[-1][1]["reason"] == "shutdown"
    events = [e for name, e in got if name == "message"]
    assert events[-1]["type"] == "run_completed" and events[-1]["run_id"] == run_id
    assert got[-1][1]["last_event_id"] == events[-1]["seq"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_cancel_on_shutdown_records_the_cancel() -> None:
    srv = ServerThread(serve={"on_shutdown": "cancel"})
    srv.start()
    got: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        sid, _run_id = _start_long_run(client, 3000)  # far longer than the test
        reader = _follow(srv.url, sid, got)
        _wait_for(got, "message_streamed")
    srv.stop()
    reader.join(60)
    events = [e for name, e in got if name == "message"]
    assert events[-1]["type"] == "run_cancelled" and events[-1]["payload"]["reason"] == "shutdown"
    assert got[-1] == ("close", {"reason": "shutdown", "last_event_id": events[-1]["seq"], "error": None})


def test_a_drain_longer_than_the_grace_cancels_what_is_left() -> None:
    srv = ServerThread(serve={"on_shutdown": "drain", "shutdown_grace": 0.3})
    srv.start()
    got: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        sid, _ = _start_long_run(client, 3000)
        reader = _follow(srv.url, sid, got)
        _wait_for(got, "message_streamed")
    srv.stop()
    reader.join(60)
    assert [e["type"] for name, e in got if name == "message"][-1] == "run_cancelled"


def test_sigterm_stops_a_real_asm_serve(tmp_path: Path) -> None:
    (tmp_path / "asm.toml").write_text(
        '[store]\nuse = "memory"\n[[providers]]\nname = "echo"\nuse = "echo"\ndelay = 0.01\nchunk_size = 3\n'
        '[serve]\nport = 0\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM_")}
    env["ASM_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    url = None
    while url is None:
        line = proc.stderr.readline()
        assert line, "asm serve ended before it listened"
        lines.append(line)
        found = re.search(r"at (http://127\.0\.0\.1:\d+) ", line)
        url = found.group(1) if found else None
    assert any("no API keys configured" in line for line in [*lines, proc.stderr.readline()])
    got: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        sid, _run_id = _start_long_run(client, 80)
        reader = _follow(url, sid, got)
        _wait_for(got, "message_streamed")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    reader.join(30)
    assert proc.returncode == 0, err
    assert "stopping: no new requests; draining runs" in err and err.endswith("asm: serve stopped\n")
    assert got[-1][0] == "close" and got[-1][1]["reason"] == "shutdown"
    assert [e for name, e in got if name == "message"][-1]["type"] == "run_completed"
