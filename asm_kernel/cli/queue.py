"""The shared run queue from the shell: ``asm submit``, ``asm wait``, ``asm worker``.

``asm submit`` stores a run for a worker and prints its id; ``asm wait`` waits for a run by id,
opening the store only briefly each time it looks (so it works on a DuckDB file a worker holds
between looks, and on a shared store from any machine); ``asm worker`` is a long-running process
that claims queued runs and executes them until SIGTERM or Ctrl-C, then stops claiming, gives its
runs ``--grace`` seconds and hands them back (or cancels them, ``--on-stop cancel``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

from .api import CliContext
from .running import report_result, result_json, run_async

__all__ = ["cmd_submit", "cmd_wait", "cmd_worker"]


def cmd_submit(args: argparse.Namespace, ctx: CliContext) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    options: dict[str, Any] = {}
    for key in ("provider", "model", "system", "max_tokens", "timeout", "idempotency_key"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value

    async def go() -> Any:
        async with ctx.kernel() as kernel:
            session_id = args.session
            if session_id is None:
                session_id = (await kernel.sessions.create(agent_id=args.agent)).id
            else:
                await kernel.sessions.get(session_id)
            return await kernel.sessions.start_run(session_id, prompt, **_start_options(options))

    run = run_async(go())
    if args.json:
        ctx.json_out({"session_id": run.session_id, "run_id": run.id, "status": run.status.value})
    else:
        ctx.line(run.id)
        ctx.error(f"queued in session {run.session_id}; a worker runs it (asm worker); wait: asm wait {run.id}")
    return 0


def _start_options(options: dict[str, Any]) -> dict[str, Any]:
    run_fields: dict[str, Any] = {k: options.pop(k) for k in ("provider", "model", "idempotency_key") if k in options}
    return {**run_fields, "options": options}


def cmd_wait(args: argparse.Namespace, ctx: CliContext) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout

    async def look() -> Any:
        async with ctx.kernel(store_only=True) as kernel:
            return await kernel.sessions.get_run(args.run_id)

    while True:
        run = run_async(look())
        if run.status.terminal or run.status.value == "awaiting_approval":
            from ..pipeline.driver import result_of

            return report_result(result_of(run), ctx, json=args.json, continue_hint=False)
        if deadline is not None and time.monotonic() >= deadline:
            from ..errors import RunTimeoutError

            if args.json:
                ctx.json_out({**result_json(_result(run)), "status": run.status.value})
            raise RunTimeoutError(
                f"run {run.id} is still {run.status.value} after {args.timeout:g} s",
                hint=f"wait again: asm wait {run.id}",
                run_id=run.id,
            )
        time.sleep(args.interval)


def _result(run: Any) -> Any:
    from ..pipeline.driver import result_of

    return result_of(run)


def cmd_worker(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..kernel import Kernel

    async def go() -> Any:
        # A long-running process: it holds the store (no short-lived waiting) and its leases.
        kernel = Kernel(ctx.config())
        async with kernel:
            worker = kernel.runtime.worker(concurrency=args.concurrency, poll=args.poll, on_stop=args.on_stop)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                    loop.add_signal_handler(sig, stop.set)
            ctx.error(
                f"asm: worker {kernel.worker_id} claims runs from {kernel.store!r} "
                f"(concurrency {worker.concurrency}); SIGTERM or Ctrl-C stops it"
            )
            task = asyncio.create_task(worker.run())
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            await worker.stop(args.grace)
            waiter.cancel()
            stats = await task
            return kernel.worker_id, stats

    owner, stats = run_async(go())
    summary = {
        "worker_id": owner,
        "claimed": stats.claimed,
        "completed": stats.completed,
        "failed": stats.failed,
        "handed_back": stats.handed_back,
    }
    if args.json:
        ctx.json_out(summary)
    else:
        ctx.error(
            f"asm: worker {owner} stopped: {stats.claimed} claimed, {stats.completed} completed, "
            f"{stats.failed} failed, {stats.handed_back} handed back"
        )
    return 0
