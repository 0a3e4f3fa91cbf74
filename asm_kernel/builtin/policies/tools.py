"""``use = "tools"``: which tools a model may call, by name (globs), per agent.

A call whose tool matches a ``deny`` glob is refused; so is one that matches no ``allow`` glob
(deny wins over allow). A refused call never runs: the model gets an error result saying why,
and the decision is a ``policy_decided`` event. Several entries with different ``agents`` give
each agent its own lists.
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

from ...model import Run, Session
from ...policy import Decision, ToolRequest
from .budget import matches

__all__ = ["ToolsSettings", "ToolsPolicy"]


@frozen
class ToolsSettings:
    """``[[policies]] use = "tools"``."""

    #: Globs of tool names that may be called (default: every tool).
    allow: list[str] = field(factory=lambda: ["*"])
    #: Globs of tool names that may never be called; deny wins over allow.
    deny: list[str] = field(factory=list)
    #: Only sessions of these agents (globs; empty: every agent).
    agents: list[str] = field(factory=list)


class ToolsPolicy:
    def __init__(self, name: str, settings: ToolsSettings) -> None:
        self.name = name
        self.settings = settings

    def __repr__(self) -> str:
        return f"ToolsPolicy({self.name!r})"

    async def check_run(self, *, session: Session, run: Run, history: Any) -> None:
        pass

    async def check_usage(self, *, session: Session, run: Run) -> None:
        pass

    async def check_tool(self, *, session: Session, run: Run, name: str, input: dict[str, Any]) -> None:
        pass  # decided in review_tool, which can say why without raising

    async def review_tool(self, request: ToolRequest) -> Decision | None:
        settings = self.settings
        if settings.agents and not matches(request.session.agent_id, settings.agents):
            return None
        name = request.call.name
        denied = next((p for p in settings.deny if matches(name, [p])), None)
        if denied is not None:
            return Decision("refuse", self.name, f"tool {name!r} is denied ({denied!r})", kind="tool")
        if not matches(name, settings.allow):
            return Decision("refuse", self.name, f"tool {name!r} is not allowed (allowed: {settings.allow})",
                            kind="tool")
        return Decision("allow", self.name, f"tool {name!r} is allowed", kind="tool")


def build(settings: ToolsSettings, context: Any) -> ToolsPolicy:
    return ToolsPolicy(context.name, settings)
