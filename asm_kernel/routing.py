"""Capability negotiation and the routing plan of a run.

A run names capabilities it **requires** and ones it **prefers** (per call, or ``[run]`` in the
config). Each configured provider is negotiated against them and against what the stored
history needs (images need ``vision``, tool calls need ``tools``, reasoning blocks
``reasoning``):

* ``full`` — everything required and preferred is there, and the history fits;
* ``degraded`` — a preferred capability is missing, or the history must be downgraded for this
  target (see :func:`downgrade_history`); recorded as a ``capability_degraded`` event;
* ``rejected`` — a required capability is missing.

The router (a component, builtin ``capability``) orders the providers that were not rejected;
``asm_route_candidates`` hooks may then veto or reorder them. If none is left, the run fails with
a :class:`~asm_kernel.errors.CapabilityError` naming what is missing and who has it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from attrs import field, frozen

from .errors import CapabilityError, ValidationError
from .model import (
    Capability,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    Run,
    Session,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from .serialization import dumps

if TYPE_CHECKING:
    from .interfaces import Provider
    from .kernel import Kernel
    from .options import RunOptions

__all__ = [
    "Negotiation",
    "RouteContext",
    "RoutePlan",
    "check_capability_names",
    "history_needs",
    "negotiate",
    "downgrade_history",
    "plan_route",
]

Outcome = Literal["full", "degraded", "rejected"]


@frozen
class Negotiation:
    """How one provider fits one run."""

    provider: str
    outcome: Outcome
    missing_required: tuple[str, ...] = ()
    missing_preferred: tuple[str, ...] = ()
    history_downgrades: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "missing_required": list(self.missing_required),
            "missing_preferred": list(self.missing_preferred),
            "history_downgrades": list(self.history_downgrades),
        }


@frozen
class RouteContext:
    """What a router knows when it orders candidates."""

    session: Session
    run: Run
    requires: frozenset[str]
    prefers: frozenset[str]
    last_provider: str | None = None


@frozen
class RoutePlan:
    candidates: tuple[str, ...]
    negotiations: Mapping[str, Negotiation] = field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": list(self.candidates),
            "negotiation": {name: n.to_dict() for name, n in self.negotiations.items()},
        }


def known_capabilities(providers: Mapping[str, Provider]) -> set[str]:
    """The well-known names plus every name an installed provider declares."""
    names = {c.value for c in Capability}
    for provider in providers.values():
        names |= set(provider.capabilities)
    return names


def check_capability_names(names: Iterable[str], providers: Mapping[str, Provider], path: str) -> frozenset[str]:
    """Refuse unknown capability names, with a did-you-mean."""
    known = known_capabilities(providers)
    checked = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in known:
            close = difflib.get_close_matches(str(name), sorted(known), n=1)
            raise ValidationError(
                f"unknown capability {name!r}",
                path=f"{path}[{i}]",
                hint=f'did you mean "{close[0]}"?' if close else f"known capabilities: {', '.join(sorted(known))}",
            )
        checked.append(name)
    return frozenset(checked)


def block_needs(block: Any) -> str | None:
    """The capability a target needs to receive this content block unchanged, if any."""
    if isinstance(block, ImageBlock):
        return Capability.VISION
    if isinstance(block, ToolUseBlock | ToolResultBlock):
        return Capability.TOOLS
    if isinstance(block, ThinkingBlock | RedactedThinkingBlock):
        return Capability.REASONING
    return None


def history_needs(messages: Iterable[Message]) -> frozenset[str]:
    """Capabilities a target must have to receive this history unchanged."""
    return frozenset(need for m in messages for b in m.content if (need := block_needs(b)) is not None)


def negotiate(
    name: str, provider: Provider, requires: frozenset[str], prefers: frozenset[str], history: frozenset[str]
) -> Negotiation:
    caps = frozenset(provider.capabilities)
    missing_required = tuple(sorted(requires - caps))
    missing_preferred = tuple(sorted(prefers - caps))
    downgrades = tuple(sorted(history - caps))
    if missing_required:
        outcome: Outcome = "rejected"
    elif missing_preferred or downgrades:
        outcome = "degraded"
    else:
        outcome = "full"
    return Negotiation(name, outcome, missing_required, missing_preferred, downgrades)


def no_candidate_error(
    negotiations: Sequence[Negotiation], providers: Mapping[str, Provider], requires: frozenset[str], why: str = ""
) -> CapabilityError:
    missing = sorted({c for n in negotiations for c in n.missing_required})
    holders = {cap: sorted(name for name, p in providers.items() if cap in p.capabilities) for cap in missing}
    have = "; ".join(f"{cap}: {', '.join(names) or 'no configured provider'}" for cap, names in holders.items())
    lacks = "; ".join(f"{n.provider} lacks {', '.join(n.missing_required)}" for n in negotiations if n.missing_required)
    message = why or (
        f"no configured provider offers every required capability ({', '.join(sorted(requires))}): {lacks}"
    )
    return CapabilityError(
        message,
        hint=f"who has them: {have}" if have else "configure a provider that can serve this run",
        missing=",".join(missing),
    )


def downgrade_history(messages: Sequence[Message], missing: Iterable[str]) -> tuple[list[Message], dict[str, int]]:
    """The history rewritten for a target lacking ``missing`` capabilities, and what changed.

    * no ``vision``: an image becomes the text ``[image omitted]``;
    * no ``tools``: a tool call becomes ``[called tool NAME with INPUT]`` and its result
      ``[tool result: CONTENT]`` (plain text the model can still read);
    * no ``reasoning``: thinking blocks are dropped (they are only meaningful to their model).

    The stored log is never changed; only the request sent to this target is.
    """
    missing = set(missing)
    counts = {"images": 0, "tool_blocks": 0, "reasoning_blocks": 0}
    out: list[Message] = []
    for message in messages:
        blocks: list[Any] = []
        for block in message.content:
            if isinstance(block, ImageBlock) and Capability.VISION in missing:
                counts["images"] += 1
                blocks.append(TextBlock("[image omitted]"))
            elif isinstance(block, ToolUseBlock) and Capability.TOOLS in missing:
                counts["tool_blocks"] += 1
                blocks.append(TextBlock(f"[called tool {block.name} with {dumps(block.input)}]"))
            elif isinstance(block, ToolResultBlock) and Capability.TOOLS in missing:
                counts["tool_blocks"] += 1
                content = block.content if isinstance(block.content, str) else dumps(block.content)
                blocks.append(TextBlock(f"[tool result{' (error)' if block.is_error else ''}: {content}]"))
            elif isinstance(block, ThinkingBlock | RedactedThinkingBlock) and Capability.REASONING in missing:
                counts["reasoning_blocks"] += 1
            else:
                blocks.append(block)
        if blocks:
            out.append(Message(message.role, tuple(blocks)))
    return out, {k: v for k, v in counts.items() if v}


async def plan_route(
    kernel: Kernel,
    session: Session,
    run: Run,
    options: RunOptions,
    needs: frozenset[str],
    last_provider: str | None,
) -> RoutePlan:
    """Negotiate every eligible provider, let the router order them, then the hooks veto or reorder.

    ``options.requires``/``prefers`` default to ``[run]``; ``run.provider`` (asked for by name)
    is the only candidate; ``options.exclude`` removes providers.
    """
    providers = kernel.providers
    defaults = kernel.config.run
    requires = check_capability_names(options.requires or defaults.requires, providers, "requires")
    prefers = check_capability_names(options.prefers or defaults.prefers, providers, "prefers")
    exclude = tuple(options.exclude)
    for i, name in enumerate(exclude):
        if name not in providers:
            raise ValidationError(f"exclude names provider {name!r}, which is not configured", path=f"exclude[{i}]")
    if run.provider is not None and run.provider in exclude:
        raise ValidationError(
            f"provider {run.provider!r} is both requested and excluded",
            path="exclude",
            hint="drop it from exclude or ask for another provider",
        )
    names = [run.provider] if run.provider is not None else [n for n in providers if n not in exclude]
    negotiations = {n: negotiate(n, providers[n], requires, prefers, needs) for n in names}
    viable = [neg for neg in negotiations.values() if neg.outcome != "rejected"]
    if not viable:
        raise no_candidate_error(list(negotiations.values()), providers, requires)
    context = RouteContext(session, run, requires, prefers, last_provider)
    router = kernel.router
    ordered = list(router.select(viable, context)) if router is not None else [n.provider for n in viable]
    ordered = await kernel.plugins.chain(
        "asm_route_candidates", "candidates", candidates=ordered, session=session, run=run
    )
    if not isinstance(ordered, list) or any(
        n not in negotiations or negotiations[n].outcome == "rejected" for n in ordered
    ):
        raise ValidationError(
            f"the router or an asm_route_candidates hook returned {ordered!r}, which names a provider that "
            "cannot serve this run",
            hint=f"return a list drawn from {[n.provider for n in viable]}",
        )
    if not ordered:
        raise no_candidate_error(
            list(negotiations.values()),
            providers,
            requires,
            why="every candidate provider was vetoed by the router or a hook",
        )
    return RoutePlan(tuple(ordered), negotiations)
