"""Context windows: what preparing one costs, and how far the estimators are from reported usage.

Part 1, one process and one run, memory store (so asm's own work is measured, not I/O): a
session of ``--events`` events (runs with streamed deltas, usage, tool rounds: what real runs
write) and

* ``full rebuild``     — the baseline: read the whole log and rebuild the transcript, as every
  turn did before the incremental cache (and as a cold cache still must once);
* ``window, cold``     — a fresh kernel: read the log once, cut the window (median of 3);
* ``window, warm``     — the next turn: read the one new run's events, cut the window (median of
  ``--turns``), with the budget cutting deep into the session and with everything fitting;
* ``cut only``         — the cut itself on an up-to-date transcript (no read).

Part 2, the estimator error table: each provider's estimator against the token counts recorded
for a corpus of requests (``bench/data/recorded_usage.jsonl``, see ``bench/usage_corpus.py``),
and, with ``--recorded FILE`` (an ``asm export`` of real runs), against the usage the provider
reported for each request asm prepared (``context_prepared`` → ``token_usage_updated``).

Usage: ``python bench/bench_context.py [--events 10000] [--turns 50] [--recorded export.jsonl]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asm_kernel import Kernel
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.context.tokens import DEFAULT_ESTIMATOR, TokenEstimator, Weight
from asm_kernel.context.transcript import build_transcript
from asm_kernel.context.window import Limits, cut_window
from asm_kernel.events import EventType
from asm_kernel.model import Event, Session
from asm_kernel.writes import WriteUnit

DATA = Path(__file__).parent / "data" / "recorded_usage.jsonl"


def run_events(session_id: str, i: int) -> list[Event]:
    """What one run writes: start, input, routing, the window, deltas, answer, usage, end."""
    run = f"run_{i}"

    def e(type_: str, payload: dict[str, Any]) -> Event:
        return Event(session_id=session_id, type=type_, payload=payload, run_id=run)

    text = f"question {i}: " + "please look at the figures and tell me what changed " * 3
    out = [
        e(EventType.RUN_STARTED, {"provider": "p", "model": "m"}),
        e(EventType.MESSAGE_SENT, {"message": {"role": "user", "content": [{"type": "text", "text": text}]}}),
        e(EventType.ROUTING_DECIDED, {"candidates": ["p"]}),
    ]
    answer = "the figures show a steady rise in the third quarter, driven by exports " * 2
    if i % 4 == 1:
        call = {"type": "tool_use", "id": f"t{i}", "name": "lookup", "input": {"q": "figures"}}
        out += [
            e(EventType.CONTEXT_PREPARED, {"provider": "p"}),
            e(EventType.MESSAGE_RECEIVED, {"message": {"role": "assistant", "content": [call]}, "provider": "p"}),
            e(EventType.TOKEN_USAGE_UPDATED, {"usage": None}),
            e(EventType.TOOL_CALL_STARTED, {"tool_use_id": f"t{i}", "name": "lookup"}),
            e(EventType.TOOL_CALL_COMPLETED, {"tool_use_id": f"t{i}", "name": "lookup", "output": "q3: +4%" * 40}),
        ]
    out.append(e(EventType.CONTEXT_PREPARED, {"provider": "p"}))
    out += [e(EventType.MESSAGE_STREAMED, {"text": answer[k : k + 16]}) for k in range(0, len(answer), 16)]
    out += [
        e(EventType.MESSAGE_RECEIVED, {"message": {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                                       "provider": "p"}),
        e(EventType.TOKEN_USAGE_UPDATED, {"usage": None}),
        e(EventType.RUN_COMPLETED, {"stop_reason": "end_turn"}),
    ]
    return out


async def fill(store: MemoryStore, session_id: str, n_events: int) -> int:
    await store.commit(WriteUnit(session_id, [Event(session_id=session_id, type=EventType.SESSION_CREATED)],
                                 new_session=Session(id=session_id)))
    runs, written, batch = 0, 1, []
    while written < n_events:
        events = run_events(session_id, runs)
        runs += 1
        batch += events
        written += len(events)
        if len(batch) > 5000:
            await store.commit(WriteUnit(session_id, batch))
            batch = []
    if batch:
        await store.commit(WriteUnit(session_id, batch))
    return runs


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.3f}"


async def part_one(n_events: int, turns: int) -> None:
    store = MemoryStore()
    await store.open()
    sid = "ses_bench"
    runs = await fill(store, sid, n_events)
    total = await store.last_seq(sid)
    now = datetime.now(UTC)
    deep = Limits(budget=20_000)  # cuts deep into the session
    roomy = Limits(budget=10_000_000)  # everything fits

    fulls = []
    for _ in range(3):
        t0 = time.perf_counter()
        messages = build_transcript(await store.read(sid))
        fulls.append(time.perf_counter() - t0)
    full = statistics.median(fulls)

    async def cold(limits: Limits) -> tuple[float, int]:
        kernel = Kernel({"store": {"use": "memory"}}, store=store)
        async with kernel:
            t = time.perf_counter()
            builder = await kernel.sessions.transcript_builder(sid)
            window = cut_window(builder, limits, DEFAULT_ESTIMATOR, fixed=50, now=now)
            return time.perf_counter() - t, len(window.messages)

    deeps = [await cold(deep) for _ in range(3)]
    roomies = [await cold(roomy) for _ in range(3)]
    cold_deep, sent_deep = statistics.median(t for t, _ in deeps), deeps[0][1]
    cold_roomy, sent_roomy = statistics.median(t for t, _ in roomies), roomies[0][1]

    kernel = Kernel({"store": {"use": "memory"}}, store=store)
    warm: dict[str, list[float]] = defaultdict(list)
    cut_only: dict[str, list[float]] = defaultdict(list)
    rebuild: list[float] = []
    async with kernel:
        await kernel.sessions.transcript_builder(sid)
        for turn in range(turns):
            await store.commit(WriteUnit(sid, run_events(sid, runs + turn)))
            for name, limits in (("deep", deep), ("roomy", roomy)):
                t = time.perf_counter()
                builder = await kernel.sessions.transcript_builder(sid)
                cut_window(builder, limits, DEFAULT_ESTIMATOR, fixed=50, now=now)
                warm[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                cut_window(builder, limits, DEFAULT_ESTIMATOR, fixed=50, now=now)
                cut_only[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            build_transcript(await store.read(sid))
            rebuild.append(time.perf_counter() - t)

    print(f"session: {total} events, {runs} runs, {len(messages)} messages in the transcript; "
          f"window budget 20,000 tokens sends {sent_deep} messages, a roomy one {sent_roomy}")
    print(f"{'what':44} {'ms':>9}")
    print(f"{'full rebuild (read all + transcript), med/3':44} {ms(full)}")
    print(f"{'full rebuild per turn, median':44} {ms(statistics.median(rebuild))}")
    print(f"{'window, cold (read all + cut), deep, med/3':44} {ms(cold_deep)}")
    print(f"{'window, cold (read all + cut), fits, med/3':44} {ms(cold_roomy)}")
    print(f"{'window, warm (read new + cut), deep, median':44} {ms(statistics.median(warm['deep']))}")
    print(f"{'window, warm (read new + cut), all fits, med':44} {ms(statistics.median(warm['roomy']))}")
    print(f"{'cut only, deep, median':44} {ms(statistics.median(cut_only['deep']))}")
    print(f"{'cut only, all fits, median':44} {ms(statistics.median(cut_only['roomy']))}")


def estimators() -> dict[str, TokenEstimator]:
    found = {"default": DEFAULT_ESTIMATOR}
    try:
        from asm_openai.provider import ESTIMATOR as openai
    except ImportError:
        pass
    else:
        found["openai"] = openai
    try:
        from asm_anthropic.provider import ESTIMATOR as anthropic
    except ImportError:
        pass
    else:
        found["anthropic"] = anthropic
    return found


def row(label: str, ratios: list[float]) -> str:
    low = sum(1 for r in ratios if r < 1) / len(ratios)
    return (f"{label:34} {len(ratios):4} {statistics.mean(ratios):6.2f} {min(ratios):6.2f} {max(ratios):6.2f} "
            f"{low:7.0%}")


def part_two(recorded: Path | None) -> None:
    records = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    found = estimators()
    print("\nestimate / recorded count (1.00 is exact; above 1 errs high); 'low' = share of requests under")
    print(f"{'estimator vs tokenizer, corpus':34} {'n':>4} {'mean':>6} {'min':>6} {'max':>6} {'low':>7}")
    pairs = [("openai", "openai"), ("anthropic", "claude"), ("default", "openai"), ("default", "claude")]
    for name, truth in pairs:
        if name not in found:
            continue
        estimator = found[name]
        by_kind: dict[str, list[float]] = defaultdict(list)
        for r in records:
            system = Weight(*r["system"])
            body = Weight()
            for shape in r["messages"]:
                body += Weight(*shape)
            estimate = (estimator.request_overhead + estimator.weighted(system, 0)
                        + estimator.weighted(body, len(r["messages"])))
            by_kind[r["kind"]].append(estimate / r[truth])
            by_kind["all"].append(estimate / r[truth])
        for kind, ratios in by_kind.items():
            print(row(f"{name} vs {truth}, {kind}", ratios))
    if recorded is None:
        return
    # An `asm export` of real runs: each prepared request against the usage reported for it.
    print("\nrecorded runs: context_prepared estimate / reported input tokens")
    pending: dict[str, dict[str, Any]] = {}
    ratios_by: dict[str, list[float]] = defaultdict(list)
    for line in recorded.read_text().splitlines():
        item = json.loads(line)
        if item.get("kind") != "event":
            continue
        event = item.get("event", item)
        payload, run = event.get("payload", {}), event.get("run_id")
        if event.get("type") == "context_prepared":
            pending[run] = payload
        elif event.get("type") == "token_usage_updated" and run in pending and payload.get("usage"):
            usage, prepared = payload["usage"], pending.pop(run)
            reported = sum(usage.get(k) or 0 for k in ("input_tokens", "cache_creation_input_tokens",
                                                      "cache_read_input_tokens"))
            if reported:
                key = f"{prepared.get('provider')} {prepared.get('model')}"
                ratios_by[key].append(prepared["estimated_tokens"] / reported)
    for key, ratios in sorted(ratios_by.items()):
        print(row(key, ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--recorded", type=Path, help="an `asm export` file of real runs")
    args = parser.parse_args()
    asyncio.run(part_one(args.events, args.turns))
    part_two(args.recorded)


if __name__ == "__main__":
    main()
