"""A whole run end to end: the raw openai SDK beside asm on the memory and DuckDB stores.

    python bench/bench_e2e.py [--runs 200] [--deltas 20]

Every variant streams the same answer (``--deltas`` text deltas) from the same local fake
OpenAI server (``asm_openai.testing.FakeOpenAI``, real HTTP, the official SDK), one run at a
time, in one process:

* ``raw SDK``        ``AsyncOpenAI.chat.completions.create(stream=True)``, chunks consumed;
* ``asm memory``     ``kernel.run(session_id, ...)`` on the memory store;
* ``asm duckdb X``   the same on a DuckDB file in durability mode X (``fast`` is the default).

Printed: p50 / p90 ms per run, the difference to the raw SDK, the ratio to the memory store,
and DuckDB transactions per run (commits counted by the store). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "gpt-5.4-mini"


def _answer(deltas: int) -> str:
    return "".join(f"w{i:02d} " for i in range(deltas))  # 4 characters per delta


async def raw_sdk(base_url: str, runs: int) -> list[float]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    out: list[float] = []
    for i in range(runs + 5):
        t0 = time.perf_counter()
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"q{i}"}], stream=True
        )
        async for _chunk in stream:
            pass
        if i >= 5:  # warm-up
            out.append(time.perf_counter() - t0)
    await client.close()
    return out


async def with_asm(base_url: str, runs: int, store: dict[str, Any]) -> tuple[list[float], float | None]:
    from asm_kernel import Kernel

    config = {
        "store": store,
        "providers": [{"name": "gpt", "use": "openai", "api": "chat", "base_url": base_url, "api_key": "sk-bench",
                       "model": MODEL}],
    }  # fmt: skip
    async with Kernel(config) as kernel:
        session = await kernel.sessions.create()
        stats = getattr(kernel.store, "stats", None)
        out: list[float] = []
        commits0 = 0
        for i in range(runs + 5):
            if i == 5 and stats is not None:
                commits0 = stats.commits
            t0 = time.perf_counter()
            result = await kernel.run(session.id, f"q{i}")
            if i >= 5:
                out.append(time.perf_counter() - t0)
            assert result.status.value == "completed", result
        per_run = (stats.commits - commits0) / runs if stats is not None else None
    return out, per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--deltas", type=int, default=20)
    args = parser.parse_args()
    from asm_openai.testing import FakeOpenAI, Reply, Text

    rows: list[tuple[str, list[float], float | None]] = []
    with FakeOpenAI(default=Reply(output=[Text(_answer(args.deltas), chunk_size=4)])) as fake, \
            tempfile.TemporaryDirectory(prefix="asm-e2e-") as tmp:  # fmt: skip
        rows.append(("raw SDK", asyncio.run(raw_sdk(fake.base_url, args.runs)), None))
        lat, _ = asyncio.run(with_asm(fake.base_url, args.runs, {"use": "memory"}))
        rows.append(("asm memory", lat, None))
        for mode in ("fast", "safe"):
            store = {"use": "duckdb", "path": str(Path(tmp) / f"{mode}.duckdb"), "durability": mode}
            lat, per_run = asyncio.run(with_asm(fake.base_url, args.runs, store))
            rows.append((f"asm duckdb {mode}", lat, per_run))
    raw = statistics.median(rows[0][1]) * 1000
    memory = statistics.median(rows[1][1]) * 1000
    print(f"{args.runs} runs, {args.deltas} streamed deltas each, one at a time - python {sys.version.split()[0]}")
    header = f"{'variant':<18}{'p50 ms':>9}{'p90 ms':>9}{'vs raw ms':>11}{'x memory':>10}{'txn/run':>9}"
    print(header)
    print("-" * len(header))
    for label, lat, per_run in rows:
        p50 = statistics.median(lat) * 1000
        p90 = statistics.quantiles(lat, n=10)[8] * 1000
        txn = f"{per_run:.1f}" if per_run is not None else "-"
        print(f"{label:<18}{p50:>9.2f}{p90:>9.2f}{p50 - raw:>+11.2f}{p50 / memory:>10.2f}{txn:>9}")


if __name__ == "__main__":
    main()
