"""Commands that run models: ``asm run`` and ``asm demo``, and how signals end them.

SIGINT (Ctrl-C) and SIGTERM cancel the command's coroutine, which unwinds through the kernel:
a run in progress is stored as ``run_cancelled`` and the store is closed before ``asm`` exits
(130 for SIGINT, 143 for SIGTERM), printing the session to continue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from attrs import evolve

from .api import CliContext
from .output import events_table

__all__ = ["Stopped", "run_async", "cmd_run", "cmd_demo", "DEMO_PROMPTS", "result_json", "report_result"]


class Stopped(Exception):
    """A signal stopped the command; ``session_id``/``run_id`` say what was cancelled, if known."""

    def __init__(self, signal_name: str, session_id: str | None = None, run_id: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.session_id = session_id
        self.run_id = run_id

    @property
    def exit_code(self) -> int:
        return 130 if self.signal_name == "SIGINT" else 143

    def line(self) -> str:
        word = "interrupted" if self.signal_name == "SIGINT" else "terminated"
        if self.session_id is None:
            return f"asm: {word}"
        run = f"run {self.run_id}" if self.run_id else "run"  # the id is known once an event was seen
        return f"asm: {word}: {run} cancelled {_continue(self.session_id)}"


def _continue(session_id: str) -> str:
    return f'(session {session_id}; continue with: asm run --session {session_id} "...")'


def run_async(coro: Any) -> Any:
    """Run a command's coroutine; SIGINT and SIGTERM cancel it cleanly and raise :class:`Stopped`."""

    async def main() -> Any:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
                loop.add_signal_handler(signal.SIGTERM, task.cancel, "SIGTERM")
        return await coro

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise Stopped("SIGTERM") from None
    except KeyboardInterrupt:  # asyncio.run cancelled the task on SIGINT and unwound it
        raise Stopped("SIGINT") from None


async def _stream_answer(
    kernel: Any,
    session_id: str,
    prompt: str,
    ctx: CliContext,
    options: dict[str, Any],
    echo: bool,
    seen: dict[str, str] | None = None,
) -> Any:
    from ..model import RunResult

    result = None
    async for item in kernel.sessions.stream_run(session_id, prompt, **options):
        if isinstance(item, RunResult):
            result = item
            continue
        if seen is not None and item.run_id:
            seen.setdefault("run", item.run_id)
        if echo and item.type == "message_streamed":
            ctx.out.write(item.payload["text"])
            ctx.out.flush()
    if echo:
        ctx.out.write("\n")
    return result


_STATUS_CODES = {"failed": "runtime.error", "timed_out": "runtime.timeout", "cancelled": "runtime.cancelled"}


def cmd_run(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..config.checks import check_run_defaults

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    options: dict[str, Any] = {}
    for key in ("provider", "model", "system", "max_tokens", "timeout"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    seen: dict[str, str] = {}
    remote = ctx.remote()
    if remote is not None:
        return report_result(_run_remote(remote, args, prompt, options, ctx, seen), ctx, json=args.json,
                             continue_hint=True)

    async def go() -> Any:
        async with ctx.kernel() as kernel:
            check_run_defaults(kernel.config.run, kernel.providers)
            session_id = args.session
            if session_id is None:
                session_id = (await kernel.sessions.create(agent_id=args.agent)).id
            else:
                await kernel.sessions.get(session_id)
            seen["session"] = session_id
            options["raise_on_error"] = False  # a failed run is reported below, with its ids
            return await _stream_answer(kernel, session_id, prompt, ctx, options, echo=not args.json, seen=seen)

    try:
        result = run_async(go())
    except Stopped as stop:
        raise Stopped(stop.signal_name, seen.get("session"), seen.get("run")) from None
    return report_result(result, ctx, json=args.json, continue_hint=True)


_RUN_FIELDS = ("provider", "model")
_TERMINAL = frozenset({"run_completed", "run_failed", "run_cancelled", "run_timed_out"})


def _run_remote(remote: Any, args: argparse.Namespace, prompt: str, options: dict[str, Any], ctx: CliContext,
                seen: dict[str, str]) -> Any:
    """``asm run`` through ``asm serve``: submit, stream the run's events over SSE, await its result.

    Ctrl-C or SIGTERM cancels the run on the server (stored as ``run_cancelled``), as it does
    when the command runs the session itself.
    """
    from ..errors import StorageError
    from ..model import RunResult
    from ..serialization import from_dict
    from .remote import ServerGone, quote

    body: dict[str, Any] = {"input": prompt, **{k: options[k] for k in _RUN_FIELDS if k in options}}
    run_options = {k: v for k, v in options.items() if k not in _RUN_FIELDS}
    if run_options:
        body["options"] = run_options
    after = 0
    if args.session is None:
        body["agent_id"] = args.agent
        run = remote.post("/v1/runs", {k: v for k, v in body.items() if v is not None})
    else:
        _, summary = remote.session(args.session)
        after = summary["last_seq"]
        run = remote.post(f"/v1/sessions/{quote(args.session)}/runs", body)
    seen["session"], seen["run"] = run["session_id"], run["id"]
    previous = _on_sigterm(_terminate)
    try:
        for event in remote.stream(run["session_id"], after=after, run_id=run["id"]):
            if event.type == "message_streamed" and not args.json:
                ctx.out.write(event.payload["text"])
                ctx.out.flush()
            if event.type in _TERMINAL:
                break
        if not args.json:
            ctx.out.write("\n")
        outcome = remote.get(f"/v1/runs/{run['id']}/await", timeout=30)
        while not outcome["done"]:  # the terminal event is stored with the record: rarely taken
            outcome = remote.get(f"/v1/runs/{run['id']}/await", timeout=30)
    except ServerGone:
        raise StorageError(
            f"the server at {remote.url} stopped before run {run['id']} ended",
            hint=f"see what was stored: asm events {run['session_id']}",
        ) from None
    except (KeyboardInterrupt, _Terminated) as stop:
        with contextlib.suppress(Exception):
            remote.post(f"/v1/runs/{run['id']}/cancel", {"reason": "interrupted"})
        name = "SIGINT" if isinstance(stop, KeyboardInterrupt) else "SIGTERM"
        raise Stopped(name, seen["session"], seen["run"]) from None
    finally:
        _on_sigterm(previous)
    return from_dict(outcome["result"], RunResult)


def _on_sigterm(handler: Any) -> Any:
    """Install ``handler`` for SIGTERM (main thread only); returns the previous one."""
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


class _Terminated(Exception):
    pass


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def result_json(result: Any) -> dict[str, Any]:
    """The documented ``--json`` object of a run's result (``asm run``, ``asm wait``)."""
    from ..serialization import to_dict

    return {
        "session_id": result.session_id,
        "run_id": result.run_id,
        "status": result.status.value,
        "output": result.output,
        "usage": to_dict(result.usage),
        "cost": result.cost,
        "provider": result.provider,
        "model": result.model,
        "stop_reason": result.stop_reason,
        "pending_tool_calls": [to_dict(c) for c in result.pending_tool_calls],
        "error": result.error,
        "approvals": [to_dict(a) for a in result.approvals],
    }


def report_result(result: Any, ctx: CliContext, *, json: bool, continue_hint: bool) -> int:
    """Print a finished run as ``asm run`` does; the exit code (1 unless it completed)."""
    status = result.status.value
    if json:
        ctx.json_out(result_json(result))
    if status == "completed":
        if not json and continue_hint:
            sid = result.session_id
            ctx.error(f'session {sid}  (continue with: asm run --session {sid} "...")')
        return 0
    if status == "awaiting_approval":
        for request in result.approvals:
            what = f"{request.name} {request.tool_use_id}" if request.tool_use_id else request.key
            ctx.error(f"asm: run {result.run_id} awaits approval of {what}: {request.reason}")
        ctx.error(f"asm: decide with: asm approve {result.run_id} [TOOL_USE_ID] [--deny --reason ...]; "
                  "a runtime or worker then continues the run")
        return 1
    error = result.error or {}
    detail = error.get("message") or status.replace("_", " ")
    if error.get("hint"):
        detail = f"{detail} ({error['hint']})"
    ctx.error(
        f"asm: error[{error.get('code') or _STATUS_CODES.get(status, 'runtime.error')}]: run {result.run_id} "
        f"{status}: {detail} {_continue(result.session_id)}"
    )
    return 1


DEMO_PROMPTS = [
    ("support", ["Hi! My order #1234 has not arrived yet.", "Can you check the shipping status?"]),
    ("research", ["Summarize the plot of Hamlet in one sentence."]),
    ("coding", ["Write a haiku about event sourcing."]),
]


def cmd_demo(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..config import ComponentConfig, RunDefaults

    cfg = ctx.config()
    echo = ComponentConfig(
        "echo", "echo", {"prefix": "(echo) ", "chunk_size": 6, "delay": 0.0 if args.fast else 0.02}, "providers[0]"
    )
    # The demo always answers with the offline echo provider, whatever the config names.
    kernel = ctx.kernel(evolve(cfg, providers=(echo,), router=None, run=RunDefaults(), tools=()))

    async def go() -> tuple[list[Any], Any]:
        shown = []
        async with kernel:
            for agent, prompts in DEMO_PROMPTS:
                session = await kernel.sessions.create(agent_id=agent, tags=["demo"])
                ctx.line(f"\n== session {session.id} (agent {agent})")
                for prompt in prompts:
                    ctx.line(f"you> {prompt}")
                    ctx.out.write("asm> ")
                    await _stream_answer(kernel, session.id, prompt, ctx, {}, echo=True)
                shown.append((session.id, await kernel.sessions.events(session.id)))
        return shown, kernel.store

    shown, store = run_async(go())
    session_id, events = shown[0]
    ctx.line(f"\n== the stored event log of session {session_id}")
    events_table(events, ctx.out)
    ctx.line(f"\n{len(shown)} sessions stored by {store!r}.")
    if type(store).__name__ != "MemoryStore":
        ctx.line(f"Look again: asm sessions list --tag demo; asm events {session_id}; asm sessions show {session_id}")
    return 0
