"""Compaction: a summary of the oldest turn groups, written as an event, never a rewrite.

:func:`plan` picks how many leading groups to summarize (the oldest, whole groups, never the
newest ``keep_recent``); :func:`summarize` asks a provider for the summary (a real provider call:
its usage and cost are recorded); the caller appends ``context_compacted`` with the summary and
the replaced seq range. Later transcripts send the summary in place of the range; the events
stay in the log. A new compaction covers the previous summary too (it is part of the input), so
one summary is in force at a time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from attrs import frozen

from ..errors import ProviderResponseError, ValidationError
from ..model import (
    ImageBlock,
    Message,
    MessageDone,
    ProviderRequest,
    RedactedThinkingBlock,
    Session,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from ..serialization import to_dict
from .tokens import TokenEstimator
from .transcript import TranscriptBuilder

if TYPE_CHECKING:
    from ..interfaces import Provider
    from ..kernel import Kernel
    from ..model import Run

__all__ = ["SUMMARY_PROMPT", "Summarized", "plan", "render_for_summary", "summarize"]

#: The default instructions of the summarizing call (``[context] summary_prompt`` replaces them).
SUMMARY_PROMPT = (
    "You summarize a conversation between a user and an AI assistant so that the assistant can "
    "continue it without the original messages. Keep every fact, decision, name, number, file "
    "path, preference, open question and commitment; say which tools were called and what they "
    "returned. Be concise and write only the summary."
)
#: Characters of one tool result or text block kept in the summarizer's input.
MAX_BLOCK_CHARS = 4_000


@frozen
class Summarized:
    """The outcome of a summarizing call."""

    text: str
    provider: str
    model: str
    usage: Usage | None
    cost: float | None


def plan(
    builder: TranscriptBuilder,
    estimator: TokenEstimator,
    *,
    fixed: int,
    budget: int | None,
    target: float,
    keep_recent: int,
    summary_tokens: int,
    input_limit: int | None = None,
) -> int:
    """How many leading groups the compaction replaces (``through``); the current one if none.

    The oldest groups are summarized until the rest (with a summary of ``summary_tokens``) fits
    ``target`` times ``budget``; the newest ``keep_recent`` groups never are. ``input_limit`` caps the
    summarizer's input (tokens), so a huge backlog is compacted in several steps.
    """
    groups = builder.groups
    first = builder.summary.through if builder.summary is not None else 0
    last = len(groups) - keep_recent  # exclusive upper bound of what may be summarized
    if last <= first:
        return first
    entries = len(builder.entries)

    def rest(t: int) -> int:
        body = estimator.weighted(*builder.weight(groups[t].start, entries)) if t < len(groups) else 0
        return fixed + summary_tokens + body

    through = last
    if budget is not None:
        goal = int(budget * target)
        low, high = first + 1, last
        while low < high:
            mid = (low + high) // 2
            if rest(mid) <= goal:
                high = mid
            else:
                low = mid + 1
        through = low
    if input_limit is not None:
        while through > first + 1:
            if estimator.weighted(*builder.weight(groups[first].start, groups[through - 1].end)) + (
                summary_tokens
            ) <= input_limit:
                break
            through = first + (through - first) // 2
    return through


def _clip(text: str) -> str:
    if len(text) <= MAX_BLOCK_CHARS:
        return text
    return text[:MAX_BLOCK_CHARS] + f" [... {len(text) - MAX_BLOCK_CHARS} more characters]"


def render_for_summary(builder: TranscriptBuilder, through: int) -> str:
    """Groups ``[first, through)`` (and the summary in force) as plain text for the summarizer.

    Tool calls and results, images and reasoning are written out as text, so the summarizer
    needs no capability beyond text and no call/result pairing applies.
    """
    lines: list[str] = []
    if builder.summary is not None:
        lines.append("Summary of what came before:\n" + builder.summary.text)
    first = builder.summary.through if builder.summary is not None else 0
    for i in range(first, through):
        for entry in builder.group_entries(i):
            role = "User" if entry.message.role == "user" else "Assistant"
            for block in entry.message.content:
                if isinstance(block, TextBlock):
                    if block.text:
                        lines.append(f"{role}: {_clip(block.text)}")
                elif isinstance(block, ToolUseBlock):
                    lines.append(f"Assistant called tool {block.name} with {_clip(json.dumps(block.input))}")
                elif isinstance(block, ToolResultBlock):
                    content = block.content if isinstance(block.content, str) else json.dumps(to_dict(block)["content"])
                    lines.append(f"Tool result{' (error)' if block.is_error else ''}: {_clip(content)}")
                elif isinstance(block, ImageBlock):
                    lines.append(f"{role}: [an image]")
                elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
                    continue  # reasoning is the model's own scratch work: the answers carry it
    return "\n".join(lines)


async def summarize(
    kernel: Kernel,
    provider_name: str,
    model: str | None,
    text: str,
    *,
    prompt: str | None,
    max_tokens: int,
    session: Session,
    run: Run | None,
) -> Summarized:
    """One summarizing call to ``provider_name`` (no retries: the caller falls back to truncation)."""
    from ..pipeline.call import price_of

    provider: Provider | None = kernel.providers.get(provider_name)
    if provider is None:
        raise ValidationError(
            f"no provider named {provider_name!r} is configured to summarize",
            path="context.summarizer",
            hint=f"configured providers: {', '.join(sorted(kernel.providers))}",
        )
    model = model or provider.default_model
    request = ProviderRequest(
        model=model,
        messages=(Message.user(text),),
        system=prompt or SUMMARY_PROMPT,
        max_tokens=max_tokens,
        metadata={"session_id": session.id, "purpose": "compaction"},
    )
    request = await kernel.plugins.chain(
        "asm_before_provider_request", "request", request=request, session=session, run=run, provider=provider_name
    )
    done: MessageDone | None = None
    usage: Usage | None = None
    stream = provider.stream(request)
    try:
        async for item in stream:
            if isinstance(item, UsageUpdate):
                usage = item.usage
            elif isinstance(item, MessageDone):
                done = item
                break
    finally:
        aclose: Any = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if done is None or not done.message.text.strip():
        raise ProviderResponseError(
            f"provider {provider_name!r} gave no summary", provider=provider_name, model=model
        )
    usage = done.usage or usage
    answered = done.model or model
    cost = price_of(provider, answered, usage)
    if cost is None and answered != model:
        cost = price_of(provider, model, usage)
    return Summarized(done.message.text.strip(), provider_name, answered, usage, cost)



def payload(builder: TranscriptBuilder, through: int, result: Summarized, trigger: str) -> dict[str, Any]:
    """The ``context_compacted`` payload replacing groups ``[0, through)`` by ``result``."""
    first = builder.summary.start if builder.summary is not None else builder.groups[0].first_seq
    return {
        "summary": result.text,
        "replaced": {"from": first, "to": builder.groups[through - 1].last_seq},
        "groups": through,
        "provider": result.provider,
        "model": result.model,
        "usage": to_dict(result.usage) if result.usage is not None else None,
        "cost": result.cost,
        "trigger": trigger,
    }
