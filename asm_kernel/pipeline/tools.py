"""The ``tools`` stage: run the kernel's tools the model called, or hand the calls to the caller.

Every call is recorded as ``tool_call_started`` (stored with the model's response that asked for
it) and, once answered, ``tool_call_completed``. A tool round is one durable point: its events are
written as they happen, for live subscribers, and the round's last result commits them all. A tool that raises
gives the model an error result, never fails the run. Calls naming a tool the kernel does not
have end the run with ``pending_tool_calls``: the caller answers them with ``ToolResultBlock``s
as the next run's input.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import AsmError, ToolExecutionError
from ..events import EventType
from ..model import ToolUseBlock

if TYPE_CHECKING:
    from .state import RunState

__all__ = ["tools_stage", "run_tool"]


async def tools_stage(state: RunState) -> None:
    response = state.response
    calls = response.message.tool_uses if response is not None else ()
    if not calls:
        state.done = True
        return
    kernel_tools = state.kernel.tools
    await state.emit_many(
        [
            state.event(
                EventType.TOOL_CALL_STARTED,
                {"tool_use_id": c.id, "name": c.name, "input": c.input, "source": _source(kernel_tools.get(c.name))},
            )
            for c in calls
        ],
        durable=False,
    )
    if any(c.name not in kernel_tools for c in calls):
        state.pending = calls
        state.done = True
        return  # the terminal unit makes the round durable
    for i, call in enumerate(calls):
        await run_tool(state, call, durable=i == len(calls) - 1)


def _source(tool: Any) -> str:
    if tool is None:
        return "caller"
    return str(getattr(tool, "source", None) or type(tool).__module__.split(".")[0])


async def run_tool(state: RunState, call: ToolUseBlock, *, durable: bool = True) -> None:
    """Run one kernel tool (after the policies' ``check_tool``) and record its result."""
    tool = state.kernel.tools[call.name]
    is_error = False
    began = time.monotonic()
    try:
        for policy in state.kernel.policies:
            await policy.check_tool(session=state.session, run=state.run, name=call.name, input=call.input)
        output = await tool(call.input)
    except AsmError as exc:
        output, is_error = f"error: {exc}", True
    except Exception as exc:  # a tool's failure is the model's to handle, not the run's
        error = ToolExecutionError(f"tool {call.name!r} raised {type(exc).__name__}: {exc}", tool=call.name)
        state.notify("asm_on_error", error=error, session=state.session, run=state.run, during="tool")
        output, is_error = f"error: {type(exc).__name__}: {exc}", True
    if not isinstance(output, str | list):
        output = str(output)
    await state.emit(
        EventType.TOOL_CALL_COMPLETED,
        {
            "tool_use_id": call.id,
            "name": call.name,
            "output": output,
            "is_error": is_error,
            "source": _source(tool),
            "duration": round(time.monotonic() - began, 6),
        },
        durable=durable,
    )
