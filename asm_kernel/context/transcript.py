"""Rebuild the conversation a model sees from a session's event log.

The log is the source of truth; the transcript is a projection of it:

* ``message_sent`` adds the run's input (role user);
* ``message_received`` adds the model's message (role assistant) with every block, thinking
  signatures included, so multi-turn reasoning replays unchanged;
* ``tool_call_completed`` adds a ``tool_result`` block (role user).

Consecutive messages of one role are merged, since providers require alternation. A tool call
that never got a result (a run that failed or was cancelled mid-tool) gets a synthetic error
result before the next message, so the transcript never carries an orphaned ``tool_use``.

:class:`TranscriptBuilder` is incremental: feed it the events after the last seq it saw.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..events import EventType
from ..model import ContentBlock, Event, Message, ToolResultBlock, ToolUseBlock
from ..routing import block_needs
from ..serialization import dumps, message_from_dict

__all__ = ["TranscriptBuilder", "build_transcript", "MISSING_RESULT"]

_MESSAGE_TYPES = frozenset({EventType.MESSAGE_SENT, EventType.MESSAGE_RECEIVED, EventType.TOOL_CALL_COMPLETED})

#: Content of the synthetic result given to a tool call that never got one.
MISSING_RESULT = "error: this tool call was not completed (the run ended before a result)"


class TranscriptBuilder:
    def __init__(self) -> None:
        self.last_seq = 0
        #: Roughly the memory the transcript holds (bytes of its messages' JSON), for caches.
        self.size = 256
        self._messages: list[Message] = []
        self._needs: set[str] = set()
        self._open_calls: dict[str, str] = {}  # tool_use_id -> name, awaiting a result

    def feed(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.seq and event.seq <= self.last_seq:
                continue
            self._apply(event)
            if event.seq:
                self.last_seq = event.seq

    def _apply(self, event: Event) -> None:
        kind = event.type
        if kind in _MESSAGE_TYPES:
            self.size += 128 + len(dumps(event.payload))
        if kind == EventType.MESSAGE_SENT:
            message = message_from_dict(event.payload["message"])
            answered = {b.tool_use_id for b in message.tool_results}
            for ident in answered:
                self._open_calls.pop(ident, None)
            self._close_open_calls()
            self._add(message)
        elif kind == EventType.MESSAGE_RECEIVED:
            message = message_from_dict(event.payload["message"])
            self._close_open_calls()
            self._add(message)
            for block in message.tool_uses:
                self._open_calls[block.id] = block.name
        elif kind == EventType.TOOL_CALL_COMPLETED:
            ident = event.payload["tool_use_id"]
            self._open_calls.pop(ident, None)
            self._add(
                Message(
                    "user",
                    (
                        ToolResultBlock(
                            ident,
                            event.payload.get("output", ""),
                            bool(event.payload.get("is_error", False)),
                        ),
                    ),
                )
            )

    def _close_open_calls(self) -> None:
        if not self._open_calls:
            return
        results = tuple(ToolResultBlock(ident, MISSING_RESULT, True) for ident in self._open_calls)
        self._open_calls.clear()
        self._add(Message("user", results))

    def _add(self, message: Message) -> None:
        for block in message.content:
            need = block_needs(block)
            if need is not None:
                self._needs.add(need)
        if self._messages and self._messages[-1].role == message.role:
            prev = self._messages[-1]
            blocks: tuple[ContentBlock, ...] = prev.content + message.content
            if message.role == "user":
                # Tool results must lead the user turn that answers the tool calls.
                blocks = tuple(b for b in blocks if isinstance(b, ToolResultBlock)) + tuple(
                    b for b in blocks if not isinstance(b, ToolResultBlock)
                )
            self._messages[-1] = Message(message.role, blocks)
        else:
            self._messages.append(message)

    @property
    def needs(self) -> frozenset[str]:
        """Capabilities a provider needs to receive this transcript unchanged (kept incrementally)."""
        return frozenset(self._needs)

    @property
    def pending_tool_calls(self) -> list[str]:
        """Ids of tool calls the model made that have no result yet."""
        return list(self._open_calls)

    def messages(self) -> list[Message]:
        """The transcript so far (open tool calls are left open: the caller may answer them)."""
        return list(self._messages)


def build_transcript(events: Iterable[Event]) -> list[Message]:
    builder = TranscriptBuilder()
    builder.feed(events)
    return builder.messages()


def tool_uses(messages: Iterable[Message]) -> list[ToolUseBlock]:
    return [b for m in messages for b in m.tool_uses]
