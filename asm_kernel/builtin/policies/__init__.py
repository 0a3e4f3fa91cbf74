"""The builtin policies, registered like any plugin's: ``budget``, ``tools`` and ``approval``.

This module is the builtin plugin ``builtin.policies``: it registers the three policies, adds
the governance stages to the run pipeline (:mod:`.stages`: every policy's ``reserve``/``settle``
around the steps that spend) and clamps each provider request to what was reserved for it.
See docs/guides/tools-and-policies.md.
"""

from __future__ import annotations

from typing import Any

from ... import hookimpl
from .approval import ApprovalPolicy, ApprovalSettings
from .approval import build as build_approval
from .budget import BudgetPolicy, BudgetSettings
from .budget import build as build_budget
from .stages import clamp, install
from .tools import ToolsPolicy, ToolsSettings
from .tools import build as build_tools

__all__ = [
    "BudgetPolicy",
    "BudgetSettings",
    "ToolsPolicy",
    "ToolsSettings",
    "ApprovalPolicy",
    "ApprovalSettings",
]


@hookimpl
def asm_register_policies(register: Any) -> None:
    register("budget", build_budget, settings=BudgetSettings,
             description="token, cost, call, turn and time limits, reserved before each step")
    register("tools", build_tools, settings=ToolsSettings, description="allow/deny lists of tool names, per agent")
    register("approval", build_approval, settings=ApprovalSettings,
             description="a person approves tool calls (globs) and runs over a cost threshold")


@hookimpl
def asm_configure_pipeline(pipeline: Any, kernel: Any) -> None:
    install(pipeline, kernel)


@hookimpl(trylast=True)
async def asm_before_provider_request(request: Any, run: Any) -> Any:
    # Last, so it sees the request every other hook made: the provider is never asked for
    # more than was reserved. An on-demand compaction's summary call belongs to no run.
    if run is None:
        return None
    return await clamp(request, run.id)
