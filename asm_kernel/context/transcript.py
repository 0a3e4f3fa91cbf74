"""Rebuild the conversation a model sees from a session's event log, in turn groups.

The log is the source of truth; the transcript is a projection of it:

* ``message_sent`` adds the run's input (role user);
* ``message_received`` adds the model's message (role assistant) with every block, thinking
  signatures included, so multi-turn reasoning replays unchanged;
* ``tool_call_completed`` adds a ``tool_result`` block (role user);
* ``context_compacted`` replaces the turns it covers with its summary (the events stay);
* ``message_pinned`` pins (or unpins) the turn holding a seq: every window keeps it;
* ``context_prepared`` followed by the model call's ``token_usage_updated`` leaves an *anchor*:
  the exact size of a request, which the next window's count starts from.

Consecutive messages of one role are merged, since providers require alternation. A tool call
that never got a result (a run that failed or was cancelled mid-tool) gets a synthetic error
result before the next message, so the transcript never carries an orphaned ``tool_use``.

The unit of truncation is the **turn group**: a user's input (a ``message_sent`` without tool
results) and everything after it up to the next one — the assistant's messages with their
reasoning, its tool calls and their results. Dropping whole groups can never separate a call
from its result or reasoning from its turn, and every group starts with a user message, which
every provider accepts first.

:class:`TranscriptBuilder` is incremental: feed it the events after the last seq it saw.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from attrs import define, frozen

from ..events import EventType
from ..model import ContentBlock, Event, Message, TextBlock, ToolResultBlock, ToolUseBlock
from ..routing import block_needs
from ..serialization import dumps, message_from_dict
from .tokens import Weight, weigh

__all__ = ["TranscriptBuilder", "build_transcript", "MISSING_RESULT", "SUMMARY_HEADER", "Entry", "Group", "Summary"]

_MESSAGE_TYPES = frozenset({EventType.MESSAGE_SENT, EventType.MESSAGE_RECEIVED, EventType.TOOL_CALL_COMPLETED})

#: Content of the synthetic result given to a tool call that never got one.
MISSING_RESULT = "error: this tool call was not completed (the run ended before a result)"
#: What precedes a compaction's summary in the user message that replaces the range.
SUMMARY_HEADER = "[Summary of the earlier conversation (seq {start}-{end}), which is not shown]\n"


@frozen
class Entry:
    """One message as its event added it (before merging): its seq, time and size."""

    seq: int
    at: datetime
    message: Message
    weight: Weight


@define
class Group:
    """A turn group: entries ``[start, end)`` of the builder."""

    start: int
    end: int
    first_seq: int
    last_seq: int
    last_at: datetime
    #: Messages its entries form once merged (role changes + 1).
    messages: int
    #: It starts with a user input (always, except a log whose first message is not one).
    starts_user: bool
    ends_user: bool


@frozen
class Summary:
    """The compaction in force: ``through`` leading groups are replaced by ``message``."""

    seq: int
    text: str
    through: int
    start: int
    end: int
    message: Message


@frozen
class Anchor:
    """The reported size of an earlier request and what that request contained."""

    provider: str
    model: str
    digest: str
    included: tuple[tuple[int, int], ...]
    last_seq: int
    summary_seq: int | None
    reported: int
    estimated: int
    seq: int


def merge_into(out: list[Message], message: Message) -> int:
    """Append ``message`` to ``out``, merged into the last one if the role is the same.

    Within a merged user message tool results come first (they must lead the turn that answers
    the calls). Returns the index of the message it landed in.
    """
    if out and out[-1].role == message.role:
        blocks: tuple[ContentBlock, ...] = out[-1].content + message.content
        if message.role == "user":
            blocks = tuple(b for b in blocks if isinstance(b, ToolResultBlock)) + tuple(
                b for b in blocks if not isinstance(b, ToolResultBlock)
            )
        out[-1] = Message(message.role, blocks)
    else:
        out.append(message)
    return len(out) - 1


class TranscriptBuilder:
    """The transcript of one session, kept incrementally, with what windows need to be cut fast.

    Entry-level running sums (characters, images) make the size of any range O(1); groups are
    appended as inputs arrive; the merged transcript is extended in place (and rebuilt once
    when a compaction arrives).
    """

    def __init__(self) -> None:
        self.last_seq = 0
        #: Roughly the memory the transcript holds (bytes of its messages' JSON), for caches.
        self.size = 256
        self.entries: list[Entry] = []
        self.groups: list[Group] = []
        self.summary: Summary | None = None
        #: Seqs pinned by ``message_pinned``.
        self.pinned: set[int] = set()
        self.anchor: Anchor | None = None
        self._seqs: list[int] = []
        #: Running sums of the entries' weights: the size of any range is one subtraction.
        self._weights: list[Weight] = [Weight()]
        self._starts: list[int] = []
        self._last_ats: list[datetime] = []
        #: Running sum, over closed groups, of the messages each adds before a following group.
        self._msgs: list[int] = [0]
        self._merged: list[Message] = []
        #: Index in ``_merged`` of each entry (-1 for entries a summary replaces).
        self._where: list[int] = []
        self._needs: set[str] = set()
        self._open_calls: dict[str, str] = {}  # tool_use_id -> name, awaiting a result
        self._prepared: tuple[str | None, dict[str, Any]] | None = None
        self._answered_by: str | None = None

    def feed(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.seq and event.seq <= self.last_seq:
                continue
            self._apply(event)
            if event.seq:
                self.last_seq = event.seq

    # -- applying events ----------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        kind = event.type
        payload = event.payload
        if kind in _MESSAGE_TYPES:
            # The payload's JSON plus what an entry holds beside it (record, weights, running sums).
            self.size += 320 + len(dumps(payload))
        if kind == EventType.MESSAGE_SENT:
            message = self._answer(message_from_dict(payload["message"]))
            self._close_open_calls(event)
            self._add(event, message, is_input=not message.tool_results)
        elif kind == EventType.MESSAGE_RECEIVED:
            message = message_from_dict(payload["message"])
            self._close_open_calls(event)
            self._add(event, message)
            for block in message.tool_uses:
                self._open_calls[block.id] = block.name
            self._answered_by = payload.get("provider")
        elif kind == EventType.TOOL_CALL_COMPLETED:
            result = ToolResultBlock(payload["tool_use_id"], payload.get("output", ""), bool(payload.get("is_error")))
            self._add(event, self._answer(Message("user", (result,))))
        elif kind == EventType.CONTEXT_COMPACTED:
            self.size += 128 + len(payload.get("summary", ""))
            self._compact(event)
        elif kind == EventType.MESSAGE_PINNED:
            seq = payload.get("seq")
            if isinstance(seq, int):
                if payload.get("pinned", True):
                    self.pinned.add(seq)
                else:
                    self.pinned.discard(seq)
        elif kind == EventType.CONTEXT_PREPARED:
            self._prepared = (event.run_id, payload)
            self._answered_by = None
        elif kind == EventType.TOKEN_USAGE_UPDATED:
            self._anchor_from(event)

    def _answer(self, message: Message) -> Message:
        """``message`` with its tool results closing their calls; a result for no open call (a
        caller answering a call it had abandoned, a duplicate) becomes text: sent as a result it
        would be an orphan every provider refuses."""
        if not message.tool_results:
            return message
        blocks: list[ContentBlock] = []
        for block in message.content:
            if isinstance(block, ToolResultBlock) and self._open_calls.pop(block.tool_use_id, None) is None:
                content = block.content if isinstance(block.content, str) else dumps(block.content)
                block = TextBlock(f"[a result for tool call {block.tool_use_id}, no longer open]: {content}")
            blocks.append(block)
        return Message(message.role, tuple(blocks))

    def _close_open_calls(self, event: Event) -> None:
        if not self._open_calls:
            return
        results = tuple(ToolResultBlock(ident, MISSING_RESULT, True) for ident in self._open_calls)
        self._open_calls.clear()
        self._add(event, Message("user", results))

    def _add(self, event: Event, message: Message, *, is_input: bool = False) -> None:
        for block in message.content:
            need = block_needs(block)
            if need is not None:
                self._needs.add(need)
        weight = weigh(message)
        index = len(self.entries)
        entry = Entry(event.seq, event.timestamp, message, weight)
        self.entries.append(entry)
        self._seqs.append(event.seq)
        self._weights.append(self._weights[-1] + weight)
        last = self.groups[-1] if self.groups else None
        if last is None or (is_input and message.role == "user"):
            if last is not None:  # it is closed now: its share of a window's messages is final
                self._msgs.append(self._msgs[-1] + last.messages - (1 if last.ends_user else 0))
            user = message.role == "user"
            group = Group(index, index + 1, event.seq, event.seq, event.timestamp, 1, user and is_input, user)
            self.groups.append(group)
            self._starts.append(index)
            self._last_ats.append(event.timestamp)
        else:
            previous = self.entries[index - 1].message.role
            last.end = index + 1
            last.last_seq = event.seq
            last.last_at = event.timestamp
            self._last_ats[-1] = event.timestamp
            if message.role != previous:
                last.messages += 1
            last.ends_user = message.role == "user"
        self._where.append(merge_into(self._merged, message))

    def _compact(self, event: Event) -> None:
        replaced = event.payload.get("replaced") or {}
        end = replaced.get("to")
        if not isinstance(end, int) or not self.groups:
            return
        # Whole groups only: one that the range cuts through stays (never orphan a call).
        through = bisect.bisect_right([g.first_seq for g in self.groups], end)
        if through and self.groups[through - 1].last_seq > end:
            through -= 1
        # The newest group may still grow (tool results, the caller's answers): never replace it.
        through = min(through, len(self.groups) - 1)
        begin = replaced.get("from")
        start = begin if isinstance(begin, int) else self.groups[0].first_seq
        text = str(event.payload.get("summary", ""))
        message = Message("user", (TextBlock(SUMMARY_HEADER.format(start=start, end=end) + text),))
        self.summary = Summary(event.seq, text, through, start, end, message)
        self._rebuild()

    def _rebuild(self) -> None:
        """The merged transcript again, from the summary on (once per compaction)."""
        self._merged = []
        self._where = [-1] * len(self.entries)
        first = 0
        if self.summary is not None:
            merge_into(self._merged, self.summary.message)
            first = self.groups[self.summary.through].start if self.summary.through < len(self.groups) else len(
                self.entries
            )
        for i in range(first, len(self.entries)):
            self._where[i] = merge_into(self._merged, self.entries[i].message)

    def _anchor_from(self, event: Event) -> None:
        payload = event.payload
        if payload.get("failed_attempt") or payload.get("compaction"):
            return  # not the answer to the prepared request: wait for that one
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return
        run_id, window = prepared
        usage = payload.get("usage")
        if run_id != event.run_id or not isinstance(usage, dict) or self._answered_by != window.get("provider"):
            return
        reported = sum(int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens",
                                                          "cache_read_input_tokens"))
        if reported <= 0:
            return
        self.anchor = Anchor(
            provider=str(window.get("provider")),
            model=str(window.get("model")),
            digest=str(window.get("prompt_digest")),
            included=tuple((int(s["from"]), int(s["to"])) for s in window.get("included") or ()),
            last_seq=int(window.get("last_seq") or 0),
            summary_seq=window.get("summary_seq"),
            reported=reported,
            estimated=int(window.get("estimated_tokens") or 0),
            seq=event.seq,
        )

    # -- what windows read --------------------------------------------------------------------

    def weight(self, start: int, end: int) -> tuple[Weight, int]:
        """The weight and the number of entries ``[start, end)``."""
        return self._weights[end] - self._weights[start], end - start

    def group_of_seq(self, seq: int) -> int | None:
        """The index of the group holding the message recorded at ``seq`` (None if none does)."""
        i = bisect.bisect_left(self._seqs, seq)
        if i == len(self._seqs) or self._seqs[i] != seq:
            return None
        return bisect.bisect_right(self._starts, i) - 1

    def entry_after(self, seq: int) -> int:
        """The index of the first entry recorded after ``seq``."""
        return bisect.bisect_right(self._seqs, seq)

    def first_group_since(self, when: datetime) -> int:
        """The first group whose last message is not older than ``when``."""
        return bisect.bisect_left(self._last_ats, when)

    def messages_from(self, i: int) -> int:
        """Messages the groups from ``i`` to the newest form (merged, with nothing before them)."""
        newest = len(self.groups) - 1
        return self._msgs[newest] - self._msgs[i] + self.groups[newest].messages

    def group_messages(self, i: int) -> int:
        """Messages group ``i`` adds when a later group follows it."""
        g = self.groups[i]
        return g.messages - (1 if g.ends_user and i < len(self.groups) - 1 else 0)

    def suffix(self, i: int) -> list[Message]:
        """The merged messages of groups ``i`` to the newest, as if nothing came before them."""
        start = self.groups[i].start
        lead: list[Message] = []
        j = start
        while j < len(self.entries) and self.entries[j].message.role == "user":
            merge_into(lead, self.entries[j].message)
            j += 1
        if j == len(self.entries):
            return lead
        where = self._where[j]
        if where < 0:  # inside the summarized range (a pinned group): render it entry by entry
            rest: list[Message] = []
            for k in range(j, len(self.entries)):
                merge_into(rest, self.entries[k].message)
            return lead + rest
        return lead + self._merged[where:]

    def group_entries(self, i: int) -> list[Entry]:
        g = self.groups[i]
        return self.entries[g.start : g.end]

    @property
    def needs(self) -> frozenset[str]:
        """Capabilities a provider needs to receive this transcript unchanged (kept incrementally)."""
        return frozenset(self._needs)

    @property
    def pending_tool_calls(self) -> list[str]:
        """Ids of tool calls the model made that have no result yet."""
        return list(self._open_calls)

    def messages(self) -> list[Message]:
        """The transcript so far, with the summary in force in place of the range it replaces
        (open tool calls are left open: the caller may answer them)."""
        return list(self._merged)


def build_transcript(events: Iterable[Event]) -> list[Message]:
    builder = TranscriptBuilder()
    builder.feed(events)
    return builder.messages()


def tool_uses(messages: Iterable[Message]) -> list[ToolUseBlock]:
    return [b for m in messages for b in m.tool_uses]
