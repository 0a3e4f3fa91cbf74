"""A bounded load test on loopback: 500 concurrent SSE subscribers while runs stream.

A real ``asm serve`` process (memory store, echo provider streaming in small pieces) and 500
streams from this process, 100 on each of 5 sessions, then 3 runs per session. Every subscriber
must receive every event of its session exactly once, in order. The server's memory is sampled
from /proc while it serves; the numbers are printed, and only the bound that matters is asserted
(no stream was cut off, no buffer held more than it may); nothing is asserted about time.
Bounded: 500 streams, 15 runs, and a 240 s ceiling on the whole exchange.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.load

SESSIONS = 5
PER_SESSION = 100
RUNS = 3
TEXT = "the quick brown fox jumps over the lazy dog " * 2


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


async def _subscriber(client: httpx.AsyncClient, sid: str, until_runs: int, ready: asyncio.Event,
                      connected: list[int]) -> list[int]:
    seqs: list[int] = []
    ended = 0
    async with client.stream("GET", f"/v1/sessions/{sid}/events/stream", params={"after": 1}) as response:
        assert response.status_code == 200
        connected.append(1)
        if len(connected) == SESSIONS * PER_SESSION:
            ready.set()
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data.append(line[6:])
            elif line == "" and data:
                event = json.loads("\n".join(data))
                data = []
                seqs.append(event["seq"])
                if event["type"] == "run_completed":
                    ended += 1
                    if ended == until_runs:
                        return seqs
    raise AssertionError(f"the stream of {sid} ended after {ended} runs")


async def _exchange(url: str, pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=SESSIONS * PER_SESSION + 20, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        sessions = [(await client.post("/v1/sessions", json={"agent_id": f"load-{i}"})).json()["id"]
                    for i in range(SESSIONS)]
        rss_idle = _rss_kib(pid)
        ready = asyncio.Event()
        connected: list[int] = []
        started = time.monotonic()
        tasks = [asyncio.create_task(_subscriber(client, sid, RUNS, ready, connected))
                 for sid in sessions for _ in range(PER_SESSION)]
        await asyncio.wait_for(ready.wait(), 120)
        connect_s = time.monotonic() - started
        rss_connected = _rss_kib(pid)
        peak = rss_connected
        run_ids = []
        for _ in range(RUNS):
            for sid in sessions:
                run = (await client.post(f"/v1/sessions/{sid}/runs", json={"input": TEXT})).json()
                run_ids.append(run["id"])
        sampling = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not sampling.is_set():
                peak = max(peak, _rss_kib(pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*tasks)
        sampling.set()
        await sampler
        streamed_s = time.monotonic() - started - connect_s
        metrics = (await client.get("/metrics")).text
        logs = {sid: (await client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000})).json()["items"]
                for sid in sessions}
    return {"sessions": sessions, "results": results, "logs": logs, "rss_idle": rss_idle,
            "rss_connected": rss_connected, "rss_peak": peak, "connect_s": connect_s, "streamed_s": streamed_s,
            "metrics": metrics, "runs": run_ids}


def test_500_subscribers_each_receive_every_event_exactly_once(
    tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "asm.toml").write_text(
        '[store]\nuse = "memory"\n'
        '[[providers]]\nname = "echo"\nuse = "echo"\nchunk_size = 4\ndelay = 0.005\n'
        '[serve]\nport = 0\naccess_log = false\nmax_streams = 1000\n'
        '[runtime]\nmax_queued_runs = 100\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASM_")}
    env["ASM_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([sys.executable, "-m", "asm_kernel.cli", "serve"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = proc.stderr.readline()
            assert line, "asm serve ended before it listened"
            found = re.search(r"at (http://127\.0\.0\.1:\d+) ", line)
            url = found.group(1) if found else None
        out = asyncio.run(asyncio.wait_for(_exchange(url, proc.pid), 240))
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    per_session = dict.fromkeys(out["sessions"], 0)
    delivered = 0
    for index, seqs in enumerate(out["results"]):
        sid = out["sessions"][index // PER_SESSION]
        expected = [e["seq"] for e in out["logs"][sid] if e["seq"] > 1]
        assert seqs == expected, f"subscriber {index} of {sid}: a gap, a duplicate or a reordering"
        per_session[sid] = len(expected)
        delivered += len(seqs)
    metrics = out["metrics"]
    assert _metric(metrics, "asm_sse_slow_consumers_total") == 0
    assert _metric(metrics, "asm_runs_finished_total{status=\"completed\"}") == SESSIONS * RUNS
    mib = 1024
    report = (
        f"load: {SESSIONS * PER_SESSION} SSE subscribers on {SESSIONS} sessions, {SESSIONS * RUNS} runs; "
        f"{sum(per_session.values())} events stored, {delivered} deliveries, each exactly once\n"
        f"load: connected in {out['connect_s']:.2f} s; runs streamed to every subscriber in {out['streamed_s']:.2f} s "
        f"({delivered / max(out['streamed_s'], 1e-9):,.0f} deliveries/s)\n"
        f"load: server RSS idle {out['rss_idle'] / mib:.1f} MiB, "
        f"with 500 streams {out['rss_connected'] / mib:.1f} MiB, "
        f"peak while streaming {out['rss_peak'] / mib:.1f} MiB "
        f"({(out['rss_connected'] - out['rss_idle']) / (SESSIONS * PER_SESSION):.1f} KiB per stream)"
    )
    (artifacts / "load.txt").write_text(report + "\n")
    with capsys.disabled():  # the numbers are for people: shown even when pytest captures output
        print("\n" + report)
    # Memory is bounded by the streams, not by the events: each stream buffers at most
    # serve.sse_buffer events, and here none fell behind. 256 MiB is far above what 500 streams
    # need; growth beyond it would mean buffering without bound.
    assert out["rss_peak"] - out["rss_idle"] < 256 * mib
