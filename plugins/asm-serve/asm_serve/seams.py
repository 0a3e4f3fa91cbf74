"""Seams for features other components provide: tool-call approvals and the cost report.

**Approvals.** ``POST /v1/runs/{run_id}/approvals/{call_id}/approve`` (and ``/deny``) and
``GET /v1/sessions/{id}/approvals`` call an :class:`Approvals` object. The kernel does not have
one yet; when it gains ``kernel.approvals`` implementing this protocol, the routes use it as they
are. Until then they answer 501 ``http.not_implemented``, and the inspector hides its buttons
(``GET /v1/server`` says ``features.approvals: false``).

**Cost.** ``GET /v1/sessions/{id}/cost`` answers with ``kernel.cost.report(session_id)`` when the
kernel has a cost component with that method, else with :func:`builtin_cost_report`, computed
from the session's run records (each run's usage and its cost, which the kernel priced from the
provider's model prices).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from asm_kernel.model import Run, Usage
from asm_kernel.serialization import to_dict

__all__ = ["Approvals", "approvals_of", "cost_reporter_of", "builtin_cost_report"]


@runtime_checkable
class Approvals(Protocol):
    """What the approval routes need from the component that holds tool calls for approval."""

    async def pending(self, session_id: str) -> list[dict[str, Any]]:
        """Tool calls of the session waiting for a decision (JSON objects, each with ``run_id``
        and ``call_id``)."""

    async def decide(
        self, run_id: str, call_id: str, *, approve: bool, reason: str | None, actor: str
    ) -> dict[str, Any]:
        """Record the decision (``actor`` is the API key's name); returns it as a JSON object."""


class KernelApprovals:
    """The routes' :class:`Approvals` over the kernel's own (``kernel.approvals``).

    The kernel lists :class:`~asm_kernel.model.ApprovalRequest` records and decides by run and
    tool-use id (or approval id); the routes speak JSON with ``run_id`` and ``call_id``.
    """

    def __init__(self, approvals: Any) -> None:
        self._approvals = approvals

    async def pending(self, session_id: str) -> list[dict[str, Any]]:
        from asm_kernel.serialization import to_dict

        requests = await self._approvals.pending(session_id=session_id)
        return [{**to_dict(r), "call_id": r.tool_use_id or r.id} for r in requests]

    async def decide(
        self, run_id: str, call_id: str, *, approve: bool, reason: str | None, actor: str
    ) -> dict[str, Any]:
        run = await self._approvals.decide(run_id, call_id, approve=approve, by=actor, reason=reason)
        return {
            "run_id": run.id,
            "call_id": call_id,
            "approved": approve,
            "decided_by": actor,
            "reason": reason,
            "status": run.status.value,
        }


def approvals_of(kernel: Any) -> Approvals | None:
    found = getattr(kernel, "approvals", None)
    if found is None:
        return None
    if hasattr(found, "approve") and hasattr(found, "deny"):  # the kernel's approvals
        return KernelApprovals(found)
    return found if isinstance(found, Approvals) else None


def cost_reporter_of(kernel: Any) -> Any | None:
    found = getattr(kernel, "cost", None)
    return found if callable(getattr(found, "report", None)) else None


def builtin_cost_report(session_id: str, runs: Sequence[Run]) -> dict[str, Any]:
    """Usage and cost of a session's runs, in total and by provider and model."""
    groups: dict[tuple[str | None, str | None], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.provider, run.model)].append(run)
    total = sum((r.usage for r in runs), Usage())
    priced = [r.cost for r in runs if r.cost is not None]
    return {
        "session_id": session_id,
        "source": "runs",
        "runs": len(runs),
        "usage": to_dict(total),
        "cost": sum(priced) if priced else None,
        "unpriced_runs": sum(1 for r in runs if r.cost is None and r.usage.total_tokens),
        "by_model": [
            {
                "provider": provider,
                "model": model,
                "runs": len(group),
                "usage": to_dict(sum((r.usage for r in group), Usage())),
                "cost": sum(c for c in (r.cost for r in group) if c is not None)
                if any(r.cost is not None for r in group)
                else None,
            }
            for (provider, model), group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or ""))
        ],
    }
