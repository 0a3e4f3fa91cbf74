"""What a test scripts the fake OpenAI server to answer: output items, replies, HTTP errors."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Text", "Refusal", "ToolCall", "Reasoning", "OutputItem", "Reply", "HttpError", "pieces", "new_id"]


def pieces(text: str, size: int) -> list[str]:
    size = max(size, 1)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def new_id(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


@dataclass
class Text:
    """Assistant text, streamed ``chunk_size`` characters per delta."""

    text: str
    chunk_size: int = 4


@dataclass
class Refusal:
    """A refusal (``delta.refusal`` in chat, a ``refusal`` content part in Responses)."""

    text: str
    chunk_size: int = 8


@dataclass
class ToolCall:
    """A function call; ``arguments`` (a dict is JSON-encoded) streamed in pieces."""

    name: str
    arguments: str | dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    chunk_size: int = 6

    @property
    def raw_arguments(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reasoning:
    """A reasoning item: summary text (Responses) / ``reasoning_content`` deltas (chat).

    ``encrypted_content`` is sent only when the request asked for
    ``include: ["reasoning.encrypted_content"]``, as OpenAI does.
    """

    summary: str = ""
    encrypted_content: str | None = None
    chunk_size: int = 8


OutputItem = Text | Refusal | ToolCall | Reasoning


@dataclass
class Reply:
    """One scripted streaming response.

    * ``status``: ``"completed"``, ``"incomplete"`` (with ``incomplete_reason``) or ``"failed"``
      (with ``error``); for chat, incomplete means ``finish_reason`` ``length`` /
      ``content_filter`` and failed means an ``{"error": ...}`` chunk.
    * ``error_after=N``: after N stream events, send an error event (``error``) and end.
    * ``drop_after=N``: after N events, drop the connection without ending the HTTP body.
    * ``end_after=N``: after N events, end the body cleanly (a truncated stream).
    * ``delay``: seconds between events; ``pause_after``/``pause``: one long pause.
    * ``raw``: send these strings as the body verbatim (malformed streams).
    * ``include_usage``: chat sends its usage chunk (when the request asks for one) and the
      Responses terminal event (``response.failed`` included) carries usage; False is a server
      that reports none.
    """

    output: list[OutputItem] = field(default_factory=lambda: [Text("Hello!")])
    input_tokens: int = 12
    output_tokens: int = 8
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    include_usage: bool = True
    status: str = "completed"
    incomplete_reason: str = "max_output_tokens"
    finish_reason: str | None = None
    error: dict[str, Any] = field(
        default_factory=lambda: {
            "type": "server_error",
            "code": "server_error",
            "message": "The server had an error while processing your request.",
        }
    )
    error_after: int | None = None
    drop_after: int | None = None
    end_after: int | None = None
    delay: float = 0.0
    pause_after: int | None = None
    pause: float = 0.0
    first_byte_delay: float = 0.0
    raw: list[str] | None = None
    model: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpError:
    """A non-200 answer with OpenAI's error body (or ``body`` verbatim)."""

    status: int
    message: str = "error"
    type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
