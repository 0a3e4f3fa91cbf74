"""``use = "approval"``: a person approves tool calls (by glob) and runs past a cost threshold.

* ``tools`` — a call of a tool matching one of these globs waits for a person. The whole tool
  round waits (nothing of it runs before the decision); the run is ``awaiting_approval`` with
  one ``approval_requested`` per such call. Granted calls run when the run continues; denied
  ones answer the model with an error result.
* ``cost_over`` — before a model call, if the run's cost so far plus the call's worst case
  would pass this many dollars (or the price is unknown), the run waits for a person; once
  granted it is not asked again. Denied, the run fails (``policy.approval_denied``).

``timeout`` is the seconds a person has; a request nobody decided in time is denied.
"""

from __future__ import annotations

import math
from typing import Any

from attrs import field, frozen

from ...model import Run, Session
from ...policy import Decision, SpendRequest, ToolRequest
from .budget import matches

__all__ = ["ApprovalSettings", "ApprovalPolicy"]


def _optional_positive(instance: Any, attribute: Any, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a number > 0, got {value}")


@frozen
class ApprovalSettings:
    """``[[policies]] use = "approval"``."""

    #: Globs of tool names whose calls need a person's approval.
    tools: list[str] = field(factory=list)
    #: US dollars: a run whose cost would pass this needs approval before that model call.
    cost_over: float | None = field(default=None, validator=_optional_positive)
    #: Only sessions of these agents (globs; empty: every agent).
    agents: list[str] = field(factory=list)
    #: Seconds a person has to decide; then the request is denied (None: no limit).
    timeout: float | None = field(default=86_400.0, validator=_optional_positive)

    def __attrs_post_init__(self) -> None:
        if not self.tools and self.cost_over is None:
            raise ValueError("an approval policy needs tools (globs) or cost_over (dollars)")


class ApprovalPolicy:
    def __init__(self, name: str, settings: ApprovalSettings) -> None:
        self.name = name
        self.settings = settings

    def __repr__(self) -> str:
        return f"ApprovalPolicy({self.name!r})"

    def _applies(self, session: Session) -> bool:
        return not self.settings.agents or matches(session.agent_id, self.settings.agents)

    async def check_run(self, *, session: Session, run: Run, history: Any) -> None:
        pass

    async def check_usage(self, *, session: Session, run: Run) -> None:
        pass

    async def check_tool(self, *, session: Session, run: Run, name: str, input: dict[str, Any]) -> None:
        pass

    async def review_tool(self, request: ToolRequest) -> Decision | None:
        call = request.call
        if not self._applies(request.session) or not matches(call.name, self.settings.tools):
            return None
        key = f"tool:{call.id}"
        if key in request.approved:
            return Decision("allow", self.name, f"a person approved this call of {call.name!r}", kind="tool")
        return Decision("approve", self.name, f"calls of {call.name!r} need a person's approval", approval=key,
                        timeout=self.settings.timeout, kind="tool")

    async def reserve(self, request: SpendRequest) -> Decision | None:
        threshold = self.settings.cost_over
        if threshold is None or request.step != "model_call" or not self._applies(request.session):
            return None
        key = f"cost:{self.name}"
        spent, worst = request.spent.cost_usd, request.spend.cost_usd
        if key in request.approved:
            return Decision("allow", self.name, f"a person approved going past ${threshold:g}", kind="cost")
        if spent is not None and worst is not None and spent + worst <= threshold:
            return None
        shown = "unknown" if spent is None or worst is None else f"${spent + worst:.4g}"
        return Decision(
            "approve", self.name, f"the run may cost {shown} with this call, over ${threshold:g}", kind="cost",
            limit="cost_over", limit_value=threshold, spend=spent, requested=worst, approval=key,
            timeout=self.settings.timeout,
        )

    async def settle(self, request: SpendRequest, actual: Any) -> None:
        pass  # a threshold reserves nothing


def build(settings: ApprovalSettings, context: Any) -> ApprovalPolicy:
    return ApprovalPolicy(context.name, settings)
