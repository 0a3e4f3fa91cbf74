"""The ``tools`` stage: run the kernel's tools the model called, or hand the calls to the caller.

Every call is recorded as ``tool_call_started`` (with the model's response that asked for it)
and, once answered, ``tool_call_completed`` with its output, ``is_error``, source and duration.
Calls naming a tool the kernel does not have end the run with ``pending_tool_calls``: the caller
answers them with ``ToolResultBlock``s as the next run's input.

A round of kernel tool calls:

1. every policy reviews each call (:func:`asm_kernel.policy.review_tools`); a call one refuses
   is answered with an error result and never runs; if one needs a person's approval the whole
   round waits (:class:`~asm_kernel.approvals.ApprovalRequired`) before anything runs, so a
   person sees the round as the model asked for it;
2. the calls that may run reserve ``tool_calls`` in the budgets (``tool_round`` step);
3. they run **concurrently**, at most ``tool_calls.max_parallel`` at a time, each bounded by its
   tool's ``timeout`` (else ``tool_calls.timeout``), all cancelled if the run is;
4. results are stored **in call order** as each is ready. An exception or a timeout becomes an
   error result for the model plus ``error_occurred``; the run goes on. Output longer than
   ``tool_calls.max_output_chars`` is cut, with a note (unless ``keep_full_output``).

The round is one durable point: its events are written as they happen, for live subscribers,
and the round's last result commits them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen

from ..approvals import ApprovalRequired, tool_request
from ..errors import AsmError, PolicyError, ToolArgumentsError, ToolExecutionError, ToolTimeoutError
from ..events import EventType
from ..model import ToolUseBlock
from ..policy import Spend, Verdict, count, reserve, review_tools, settle
from ..resume import DENIED_KEY, REPLAYING_KEY
from ..tools.sources import source_of

if TYPE_CHECKING:
    from .state import RunState

__all__ = ["tools_stage", "run_tool", "cap_output"]


@frozen
class _Outcome:
    output: Any
    is_error: bool = False
    duration: float = 0.0
    error: AsmError | None = None
    denied: str | None = None


async def tools_stage(state: RunState) -> None:
    response = state.response
    calls = response.message.tool_uses if response is not None else ()
    if not calls:
        state.done = True
        return
    replaying = bool(state.data.pop(REPLAYING_KEY, False))
    kernel_tools = state.kernel.tools
    if not replaying:  # a continued round's calls were recorded before it waited
        await state.emit_many(
            [
                state.event(
                    EventType.TOOL_CALL_STARTED,
                    {
                        "tool_use_id": c.id,
                        "name": c.name,
                        "input": c.input,
                        "source": source_of(kernel_tools.get(c.name)),
                    },
                )
                for c in calls
            ],
            durable=False,
        )
    if any(c.name not in kernel_tools for c in calls):
        state.pending = calls
        state.done = True
        return  # the terminal unit makes the round durable
    denied: dict[str, tuple[str, str | None]] = state.data.get(DENIED_KEY, {}) if replaying else {}
    verdicts = {v.call.id: v for v in await review_tools(state, [c for c in calls if c.id not in denied])}
    waiting = [v for v in verdicts.values() if v.action == "approve" and v.decision is not None]
    if waiting:
        raise ApprovalRequired([tool_request(state, v.call, v.decision) for v in waiting if v.decision])
    runnable = [c for c in calls if c.id in verdicts and verdicts[c.id].action in ("allow", "warn")]
    spend = Spend(tool_calls=len(runnable))
    held = await reserve(state, "tool_round", spend) if runnable else []
    try:
        await _run_round(state, calls, verdicts, denied)
    finally:
        await settle(held, spend)
    count(state, tool_calls=len(runnable))


async def _run_round(
    state: RunState,
    calls: Sequence[ToolUseBlock],
    verdicts: dict[str, Verdict],
    denied: dict[str, tuple[str, str | None]],
) -> None:
    limit = asyncio.Semaphore(state.kernel.config.tool_calls.max_parallel)
    tasks: list[asyncio.Task[_Outcome]] = []
    for call in calls:
        if call.id in denied:
            who, why = denied[call.id]
            outcome = _Outcome(f"error: denied by {who}" + (f": {why}" if why else ""), True, denied=who)
            tasks.append(asyncio.ensure_future(_ready(outcome)))
        elif verdicts[call.id].action == "refuse":
            decision = verdicts[call.id].decision
            assert decision is not None
            text = f"error: policy {decision.policy!r} refused this call: {decision.reason}"
            tasks.append(asyncio.ensure_future(_ready(_Outcome(text, True, denied=decision.policy))))
        else:
            tasks.append(asyncio.create_task(_call(state, call, limit), name=f"asm-tool-{call.id}"))
    try:
        for i, (call, task) in enumerate(zip(calls, tasks, strict=True)):
            await _record(state, call, await task, durable=i == len(calls) - 1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ready(outcome: _Outcome) -> _Outcome:
    return outcome


async def _call(state: RunState, call: ToolUseBlock, limit: asyncio.Semaphore) -> _Outcome:
    tool = state.kernel.tools[call.name]
    timeout = getattr(tool, "timeout", None) or state.kernel.config.tool_calls.timeout
    async with limit:
        began = time.monotonic()
        try:
            async with asyncio.timeout(timeout) as scope:
                output = await tool(call.input)
        except TimeoutError:
            if not scope.expired():
                raise
            error: AsmError = ToolTimeoutError(
                f"tool {call.name!r} did not finish within {timeout:g} s",
                hint="give the tool a longer timeout, or tool_calls.timeout",
                tool=call.name,
                timeout=timeout,
            )
            return _Outcome(f"error: {error.message}", True, time.monotonic() - began, error)
        except (ToolArgumentsError, PolicyError) as exc:  # the model's mistake, or a refusal: no failure
            return _Outcome(f"error: {exc}", True, time.monotonic() - began)
        except AsmError as exc:
            return _Outcome(f"error: {exc}", True, time.monotonic() - began, exc)
        except Exception as exc:  # a tool's failure is the model's to handle, not the run's
            error = ToolExecutionError(f"tool {call.name!r} raised {type(exc).__name__}: {exc}", tool=call.name)
            return _Outcome(f"error: {type(exc).__name__}: {exc}", True, time.monotonic() - began, error)
        return _Outcome(output, False, time.monotonic() - began)


def cap_output(output: Any, limit: int) -> tuple[Any, int | None]:
    """``output`` cut to ``limit`` characters of text, and its full length when it was cut."""
    if isinstance(output, str):
        if len(output) <= limit:
            return output, None
        note = f"\n[output truncated: {len(output)} characters, the first {limit} shown]"
        return output[:limit] + note, len(output)
    if isinstance(output, list):
        total = sum(len(b.get("text", "")) for b in output if isinstance(b, dict) and b.get("type") == "text")
        if total <= limit:
            return output, None
        left, kept = limit, []
        for block in output:
            if isinstance(block, dict) and block.get("type") == "text":
                text = block.get("text", "")
                kept.append({**block, "text": text[: max(left, 0)]})
                left -= len(text)
            else:
                kept.append(block)
        kept.append({"type": "text", "text": f"[output truncated: {total} characters, the first {limit} shown]"})
        return kept, total
    return output, None


async def _record(state: RunState, call: ToolUseBlock, outcome: _Outcome, *, durable: bool) -> None:
    tool = state.kernel.tools.get(call.name)
    output = outcome.output
    if not isinstance(output, str | list):
        output = str(output)
    settings = state.kernel.config.tool_calls
    truncated = None
    if not settings.keep_full_output:
        output, truncated = cap_output(output, settings.max_output_chars)
    if outcome.error is not None:
        error = outcome.error.scrub()
        state.defer(
            EventType.ERROR_OCCURRED,
            {"error": error.to_dict(), "during": "tool", "tool_use_id": call.id, "name": call.name},
        )
        state.notify("asm_on_error", error=error, session=state.session, run=state.run, during="tool")
    payload: dict[str, Any] = {
        "tool_use_id": call.id,
        "name": call.name,
        "output": output,
        "is_error": outcome.is_error,
        "source": source_of(tool),
        "duration": round(outcome.duration, 6),
    }
    if truncated is not None:
        payload["truncated"] = truncated
    if outcome.denied is not None:
        payload["denied"] = outcome.denied
    await state.emit(EventType.TOOL_CALL_COMPLETED, payload, durable=durable)


async def run_tool(state: RunState, call: ToolUseBlock, *, durable: bool = True) -> None:
    """Run one kernel tool (after the policies' review) and record its result."""
    verdict = (await review_tools(state, [call]))[0]
    if verdict.action == "refuse" and verdict.decision is not None:
        text = f"error: policy {verdict.decision.policy!r} refused this call: {verdict.decision.reason}"
        await _record(state, call, _Outcome(text, True, denied=verdict.decision.policy), durable=durable)
        return
    await _record(state, call, await _call(state, call, asyncio.Semaphore(1)), durable=durable)
