"""A separate process for the multi-process tests: ``python pg_worker.py '<json args>'``.

It opens its own store on the given schema, prints ``ready``, waits for a line on stdin (so all
workers start together), does its job and prints one JSON line with what it saw. Modes:

* ``append``: append batches (1-3 events) to each of ``sessions``, ``rounds`` times; report seqs;
* ``replay``: append ``events`` (ids fixed by the parent, the same in every worker); report seqs;
* ``expected``: append with ``expected_seq`` = the last seq read, until ``successes`` succeeded;
* ``claim``: claim, start and complete runs (``limit`` per claim, ``max_running`` per session)
  until no run is pending; report what it claimed;
* ``append_one``: append one event with id ``id`` to ``session``;
* ``hold``: claim ``run`` with a ``ttl`` lease and start it, report, then (on a second stdin line)
  append under the fence and report the outcome - the stale worker of the fencing test;
* ``stream``: append one event at a time to ``session`` forever, printing ``[id, seq]`` per
  acknowledgement (the parent kills it with SIGKILL);
* ``cancel``: one unit cancelling ``run`` with two events (the parent holds a lock it needs, then
  kills this process while it waits).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from asm_kernel.errors import AsmError, SeqConflictError
from asm_kernel.model import Event, Run, RunStatus
from asm_kernel.writes import RunWrite, WriteUnit

from asm_postgres import PostgresSettings, build
from asm_postgres.store import PostgresStore


class _Context:
    name = "store"
    path = "store"
    home = Path("/tmp")
    config_dir = Path("/tmp")


async def _line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _say(data: Any) -> None:
    sys.stdout.write((data if isinstance(data, str) else json.dumps(data)) + "\n")
    sys.stdout.flush()


async def _append(store: PostgresStore, args: dict[str, Any]) -> Any:
    w = args["worker"]
    seqs: dict[str, list[int]] = {s: [] for s in args["sessions"]}
    for i in range(args["rounds"]):
        for sid in args["sessions"]:
            batch = [Event(session_id=sid, type="n", payload={"w": w, "i": i, "j": j}) for j in range(1 + (i + w) % 3)]
            seqs[sid].extend(e.seq for e in await store.append(sid, batch))
    return seqs


async def _replay(store: PostgresStore, args: dict[str, Any]) -> Any:
    sid = args["session"]
    events = [Event(session_id=sid, type="note", id=e, payload={"n": n}) for n, e in enumerate(args["events"])]
    return [[e.id, e.seq] for e in await store.append(sid, events)]


async def _expected(store: PostgresStore, args: dict[str, Any]) -> Any:
    sid, done, conflicts, seqs = args["session"], 0, 0, []
    while done < args["successes"]:
        last = await store.last_seq(sid)
        try:
            event = Event(session_id=sid, type="n", payload={"w": args["worker"]})
            (e,) = await store.append(sid, [event], expected_seq=last)
        except SeqConflictError:
            conflicts += 1
            continue
        assert e.seq == last + 1
        seqs.append(e.seq)
        done += 1
    return {"seqs": seqs, "conflicts": conflicts}


async def _execute(store: PostgresStore, claimed: Run) -> None:
    sid = claimed.session_id
    start = RunWrite(claimed.transition(RunStatus.RUNNING), expect_status=RunStatus.PENDING,
                     expect_token=claimed.lease_token, lease_ttl=60)
    started = (await store.commit(WriteUnit(sid, [Event(session_id=sid, type="run_started", run_id=claimed.id)],
                                            runs=[start]))).run(claimed.id)
    await asyncio.sleep(0.002)
    done = RunWrite(started.transition(RunStatus.COMPLETED, lease_expires_at=None), expect_status=RunStatus.RUNNING)
    await store.commit(WriteUnit(sid, [Event(session_id=sid, type="run_completed", run_id=claimed.id)],
                                 runs=[done], fence=started.lease))


async def _claim(store: PostgresStore, args: dict[str, Any]) -> Any:
    claimed: list[str] = []
    running: set[asyncio.Task[None]] = set()
    while True:
        got = await store.claim_runs(args["owner"], limit=args["limit"], lease_ttl=60,
                                     max_running_per_session=args["max_running"])
        claimed.extend(r.id for r in got)
        for run in got:
            task = asyncio.create_task(_execute(store, run))
            running.add(task)
            task.add_done_callback(running.discard)
        if not got:
            if not running and not await store.list_runs(status=RunStatus.PENDING, limit=1):
                break
            await asyncio.sleep(0.005)
        else:
            await asyncio.sleep(0)
    return claimed


async def _hold(store: PostgresStore, args: dict[str, Any]) -> Any:
    (claimed,) = await store.claim_runs("stale-worker", limit=1, lease_ttl=args["ttl"])
    sid = claimed.session_id
    start = RunWrite(claimed.transition(RunStatus.RUNNING), expect_status=RunStatus.PENDING,
                     expect_token=claimed.lease_token, lease_ttl=args["ttl"])
    started = (await store.commit(WriteUnit(sid, runs=[start]))).run(claimed.id)
    _say({"token": started.lease_token})
    await _line()  # the parent took the run over meanwhile; this worker does not know it
    try:
        await store.append(sid, [Event(session_id=sid, type="late", run_id=started.id)], fence=started.lease)
    except AsmError as exc:
        return {"error": exc.code}
    return {"error": None}


async def _stream(store: PostgresStore, args: dict[str, Any]) -> Any:
    sid = args["session"]
    while True:
        (e,) = await store.append(sid, [Event(session_id=sid, type="n")])
        _say([e.id, e.seq])


async def _cancel(store: PostgresStore, args: dict[str, Any]) -> Any:
    sid = args["session"]
    run = await store.get_run(args["run"])
    events = [Event(session_id=sid, type="run_cancelled", run_id=run.id), Event(session_id=sid, type="note")]
    cancel = RunWrite(run.transition(RunStatus.CANCELLED), expect_status=RunStatus.PENDING)
    await store.commit(WriteUnit(sid, events, runs=[cancel]))
    return "cancelled"


async def main() -> None:
    args = json.loads(sys.argv[1])
    settings = PostgresSettings(
        dsn=os.environ.get("ASM_PG_DSN", args["dsn"]),
        schema=args["schema"],
        pool_max_size=4,
        application_name=args.get("application_name", "asm"),
    )
    store = build(settings, _Context())
    await store.open()
    try:
        _say("ready")
        await _line()
        job = {
            "append": _append,
            "replay": _replay,
            "expected": _expected,
            "claim": _claim,
            "hold": _hold,
            "stream": _stream,
            "cancel": _cancel,
        }
        if args["mode"] == "append_one":
            sid = args["session"]
            result: Any = [e.seq for e in await store.append(sid, [Event(session_id=sid, type="x", id=args["id"])])]
        else:
            result = await job[args["mode"]](store, args)
        _say(result)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
