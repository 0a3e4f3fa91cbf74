"""Cutting the window of one model call from an incremental transcript.

The window is the newest turn groups that fit every limit, plus the pinned groups, after the
summary in force (if any). Groups are kept or dropped whole, newest first, so:

* a tool call is never sent without its result, nor a result without its call;
* reasoning blocks stay with the assistant message they belong to;
* the first message is a user turn (the summary, or a group's input).

Sizes come from the builder's running sums, so choosing the cut is a binary search (O(log n)
plus the pinned groups), and the messages of the cut are a slice of the merged transcript: a
window costs what it holds, not what the session holds.

Counting: when the provider reported the size of an earlier request whose window is a prefix of
this one (same target, system prompt and tools, nothing dropped since), the count is that exact
number plus an estimate of what was added (``anchored``); otherwise the estimator's count,
which errs high (``estimated``). An exact count from the provider (``exact``) is applied by the
caller (:mod:`asm_kernel.context.stage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from attrs import frozen

from ..errors import ContextWindowExceededError
from ..model import Message
from .tokens import TokenEstimator
from .transcript import Anchor, TranscriptBuilder

__all__ = ["Limits", "Window", "cut_window", "Span"]

Span = dict[str, Any]


@frozen
class Limits:
    """What one window must satisfy. ``budget`` counts the whole request (system and tools too)."""

    budget: int | None = None
    max_messages: int | None = None
    max_age: float | None = None
    #: False for the ``full`` strategy: nothing is dropped.
    truncate: bool = True


@frozen
class Window:
    """The messages of one model call and the record of how they were chosen."""

    messages: tuple[Message, ...]
    included: tuple[Span, ...]
    dropped: tuple[Span, ...]
    summarized: tuple[Span, ...]
    pinned: tuple[int, ...]
    #: The estimator's count of the request (fixed part + messages), by group sums.
    estimated: int
    #: The count the window was judged by.
    counted: int
    count: str
    anchor: Anchor | None
    budget: int | None
    last_seq: int
    summary_seq: int | None
    #: The first group of the newest contiguous part (for a cut forced again at the same place).
    start: int

    def record(self) -> dict[str, Any]:
        """The fields of ``context_prepared`` that describe the window."""
        return {
            "included": list(self.included),
            "dropped": list(self.dropped),
            "summarized": list(self.summarized),
            "pinned": list(self.pinned),
            "messages": len(self.messages),
            "last_seq": self.last_seq,
            "summary_seq": self.summary_seq,
            "estimated_tokens": self.estimated,
            "counted_tokens": self.counted,
            "count": self.count,
            "anchor": {"reported_tokens": self.anchor.reported, "seq": self.anchor.seq} if self.anchor else None,
        }


def _runs(low: int, high: int, skip: Sequence[int]) -> list[tuple[int, int]]:
    """The runs of consecutive groups in ``[low, high)`` without those in ``skip`` (sorted): O(len(skip))."""
    out = []
    start = low
    for p in skip:
        if p < low or p >= high:
            continue
        if p > start:
            out.append((start, p))
        start = p + 1
    if start < high:
        out.append((start, high))
    return out


def _kept_spans(builder: TranscriptBuilder, early: Sequence[int], cut: int) -> list[Span]:
    """Spans of the pinned groups ``early`` and of the groups from ``cut`` on, adjacent ones joined."""
    joined: list[tuple[int, int]] = []
    for a, b in [*((p, p + 1) for p in early), (cut, len(builder.groups))]:
        if joined and joined[-1][1] == a:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    return _run_spans(builder, joined)


def _run_spans(builder: TranscriptBuilder, runs: Sequence[tuple[int, int]]) -> list[Span]:
    groups = builder.groups
    spans: list[Span] = []
    for a, b in runs:
        spans.append({"from": groups[a].first_seq, "to": groups[b - 1].last_seq})
    return spans


def cut_window(
    builder: TranscriptBuilder,
    limits: Limits,
    estimator: TokenEstimator,
    *,
    fixed: int,
    now: datetime,
    target: tuple[str, str, str] | None = None,
    scale: float = 1.0,
    start: int | None = None,
) -> Window:
    """The window of the next call: see the module docstring.

    ``fixed`` is the estimated size of the request's non-message part (system prompt, tools);
    ``target`` is ``(provider, model, prompt digest)``, for the anchor; ``scale`` multiplies
    every estimate (after a context-length error showed the estimator ran low); ``start`` forces
    the cut at a group (used to count a larger window exactly). Raises
    :class:`~asm_kernel.errors.ContextWindowExceededError` when the newest group and the pinned
    groups alone exceed the budget.
    """
    groups = builder.groups
    newest = len(groups) - 1
    summary = builder.summary
    first = summary.through if summary is not None else 0
    if first > newest:  # everything is summarized (a manual compaction of the whole log)
        first = newest + 1

    def est(start_entry: int, end_entry: int) -> int:
        return estimator.weighted(*builder.weight(start_entry, end_entry))

    summary_tokens = estimator.message(summary.message) if summary is not None else 0
    pins = sorted(
        {g for seq in builder.pinned if (g := builder.group_of_seq(seq)) is not None and g < newest}
    )
    pin_tokens = {p: est(groups[p].start, groups[p].end) for p in pins}
    budget = limits.budget

    def outside(i: int) -> list[int]:
        return [p for p in pins if p < i]

    def tokens(i: int, with_summary: bool = True) -> int:
        body = est(groups[i].start, len(builder.entries)) if i <= newest else 0
        total = fixed + body + sum(pin_tokens[p] for p in outside(i)) + (summary_tokens if with_summary else 0)
        return int(total * scale + 0.999999)

    def messages(i: int) -> int:
        return builder.messages_from(i) + sum(builder.group_messages(p) for p in outside(i))

    keep_summary = summary is not None
    reason = None
    if newest < 0:
        cut = 0
    elif start is not None:
        cut = max(first, min(start, newest))
    elif not limits.truncate:
        cut = first
    else:
        cut = first
        if budget is not None:
            if tokens(newest) > budget and keep_summary:
                keep_summary = False  # the summary goes before the newest turn does
            if tokens(newest, keep_summary) > budget:
                required = tokens(newest, keep_summary)
                raise ContextWindowExceededError(
                    f"the newest turn{' and the pinned turns' if pins else ''} need about {required} tokens "
                    f"(system prompt and tools included), over the window's budget of {budget}",
                    hint="raise [context] max_tokens or reserve less output, unpin turns, or send a shorter input",
                    budget=budget,
                    required=required,
                )
            cut = _search(first, newest, lambda i: tokens(i, keep_summary) <= budget)
            reason = "max_tokens" if cut > first else None
        if limits.max_messages is not None:
            by_messages = _search(first, newest, lambda i: messages(i) <= limits.max_messages)  # type: ignore[operator]
            if by_messages > cut:
                cut, reason = by_messages, "max_messages"
        if limits.max_age is not None:
            by_age = min(max(builder.first_group_since(now - timedelta(seconds=limits.max_age)), first), newest)
            if by_age > cut:
                cut, reason = by_age, "max_age"
        while cut < newest and not groups[cut].starts_user:  # only a log's very first group can be one
            cut += 1
            reason = reason or "first_message"

    anchor = builder.anchor
    counted, count = None, "estimated"
    if anchor is not None and target is not None and newest >= 0 and scale == 1.0:
        use = _anchored(builder, anchor, target, cut, pins, keep_summary)
        if use is not None and start is None and limits.truncate and use < cut:
            # The exact count says more fits than the estimate allowed: keep the longer window.
            extra = est(builder.entry_after(anchor.included[-1][1]), len(builder.entries))
            fits = budget is None or anchor.reported + extra <= budget
            if fits and (limits.max_messages is None or messages(use) <= limits.max_messages):
                cut, reason = use, (reason if use > first else None)
        if use == cut:
            counted = anchor.reported + est(builder.entry_after(anchor.included[-1][1]), len(builder.entries))
            count = "anchored"
    estimated = tokens(cut, keep_summary) if newest >= 0 else fixed
    if (
        count == "anchored" and counted is not None and budget is not None and counted > budget
        and limits.truncate and start is None and estimated > 0
    ):
        # The provider counted more than the estimator did: cut again with estimates scaled to
        # its count (the anchor calibrates the estimator upward, never downward).
        return cut_window(builder, limits, estimator, fixed=fixed, now=now, target=None,
                          scale=counted / estimated * 1.02)
    early = [p for p in pins if p < cut]
    rendered = _render(builder, keep_summary, early, cut if newest >= 0 else None)
    # Spans from runs of groups: what a window records costs the pins, not the session's length.
    included = _kept_spans(builder, early, cut) if newest >= 0 else []
    dropped = _run_spans(builder, _runs(first, cut, pins)) if cut > first else []
    for span in dropped:
        span["reason"] = reason or "max_tokens"
    summarized: list[Span] = []
    if summary is not None:
        summarized = [{"from": summary.start, "to": summary.end, "by": summary.seq}]
        if not keep_summary:
            summarized[0]["dropped"] = True
    return Window(
        messages=tuple(rendered),
        included=tuple(included),
        dropped=tuple(dropped),
        summarized=tuple(summarized),
        pinned=tuple(sorted(s for s in builder.pinned if (g := builder.group_of_seq(s)) is not None
                            and (g in early or g >= cut))),
        estimated=estimated,
        counted=counted if counted is not None else estimated,
        count=count,
        anchor=anchor if count == "anchored" else None,
        budget=budget,
        last_seq=builder.last_seq,
        summary_seq=summary.seq if summary is not None and keep_summary else None,
        start=cut,
    )


def _search(low: int, high: int, fits: Any) -> int:
    """The smallest ``i`` in ``[low, high]`` with ``fits(i)`` (``fits`` is monotone; ``high`` fits)."""
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return low


def _anchored(
    builder: TranscriptBuilder, anchor: Anchor, target: tuple[str, str, str], cut: int, pins: list[int], summary: bool
) -> int | None:
    """The cut whose window extends the anchor's request (its groups, then only newer ones)."""
    if (anchor.provider, anchor.model, anchor.digest) != target or not anchor.included:
        return None
    if (builder.summary.seq if builder.summary is not None and summary else None) != anchor.summary_seq:
        return None
    start = builder.group_of_seq(anchor.included[-1][0])
    if start is None:
        return None
    limit = anchor.included[-1][1]
    spans = []
    for span in _kept_spans(builder, [p for p in pins if p < start], start):
        if span["from"] > limit:
            break
        spans.append((span["from"], min(span["to"], limit)))
    if tuple(spans) != anchor.included:
        return None
    return start


def _render(builder: TranscriptBuilder, summary: bool, pinned: Sequence[int], cut: int | None) -> list[Message]:
    from .transcript import merge_into

    out: list[Message] = []
    if summary and builder.summary is not None:
        merge_into(out, builder.summary.message)
    for p in pinned:
        for entry in builder.group_entries(p):
            merge_into(out, entry.message)
    if cut is None:
        return out
    rest = builder.suffix(cut)
    if rest:
        merge_into(out, rest[0])
        out.extend(rest[1:])
    return out
