"""What a test scripts the fake Anthropic server to answer: content blocks, replies, HTTP errors."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Reply",
    "ErrorReply",
    "text_block",
    "tool_use_block",
    "thinking_block",
    "redacted_thinking_block",
    "sse",
]


# -- content helpers (Messages API block shapes) ------------------------------------------------


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: Mapping[str, Any] | None = None, id: str | None = None,
                   raw_json: str | None = None) -> dict[str, Any]:
    """A tool call; ``raw_json`` streams that text as the arguments instead (e.g. invalid JSON)."""
    block: dict[str, Any] = {"type": "tool_use", "id": id or f"toolu_fake{next(_ids):06d}", "name": name,
                             "input": dict(input or {})}
    if raw_json is not None:
        block["_raw_json"] = raw_json
    return block


def thinking_block(thinking: str, signature: str = "sig-fake") -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def redacted_thinking_block(data: str) -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def sse(event: str, data: Any) -> bytes:
    """One server-sent event as the API writes it."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


_ids = itertools.count(1)


# -- scripted replies ---------------------------------------------------------------------------


@dataclass
class Reply:
    """A successful answer, streamed (or as one JSON message when the request has no ``stream``).

    ``content`` holds Messages API blocks (see :func:`text_block` and friends). ``usage`` holds
    the final counts: ``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``,
    ``cache_read_input_tokens``; input and cache counts go in ``message_start``, the output
    count in ``message_delta`` (with all counts when ``full_delta_usage``).

    Faults, by stream event number (0 is ``message_start``; :meth:`events` lists them):
    ``error_at`` sends ``event: error`` with ``error`` in place of event N and ends the stream;
    ``drop_at`` aborts the connection before event N (no end of the chunked body);
    ``end_at`` ends the body cleanly before event N (a truncated stream);
    ``replace`` swaps event N for raw bytes (malformed SSE). ``raw`` replaces the whole body.
    ``delay`` waits between events, ``headers_delay`` before the response starts.
    """

    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 10, "output_tokens": 5})
    full_delta_usage: bool = False
    model: str | None = None
    id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk: int = 8
    ping: bool = True
    delay: float = 0.0
    headers_delay: float = 0.0
    error_at: int | None = None
    error: dict[str, Any] = field(default_factory=lambda: {"type": "overloaded_error", "message": "Overloaded"})
    drop_at: int | None = None
    end_at: int | None = None
    replace: dict[int, bytes] = field(default_factory=dict)
    raw: bytes | None = None

    def message(self, model: str) -> dict[str, Any]:
        """The complete message object (the non-streaming response body)."""
        content = [{k: v for k, v in b.items() if not k.startswith("_")} for b in self.content]
        return {
            "id": self.id or "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.model or model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self._usage(final=True),
        }

    def _usage(self, final: bool) -> dict[str, int]:
        usage = {
            "input_tokens": int(self.usage.get("input_tokens", 0)),
            "cache_creation_input_tokens": int(self.usage.get("cache_creation_input_tokens", 0)),
            "cache_read_input_tokens": int(self.usage.get("cache_read_input_tokens", 0)),
            "output_tokens": int(self.usage.get("output_tokens", 0)) if final else 1,
        }
        return usage

    def _chunks(self, text: str) -> list[str]:
        size = max(self.chunk, 1)
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]

    def events(self, model: str) -> list[tuple[str, dict[str, Any]]]:
        """The stream, as (event type, data) pairs, before faults are applied."""
        message = self.message(model)
        start = dict(message, content=[], stop_reason=None, stop_sequence=None, usage=self._usage(final=False))
        out: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(self.content):
            kind = block["type"]

            def delta(d: dict[str, Any], index: int = index) -> tuple[str, dict[str, Any]]:
                return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})

            first: dict[str, Any]
            if kind == "text":
                first = {"type": "text", "text": ""}
                deltas = [delta({"type": "text_delta", "text": c}) for c in self._chunks(block["text"])]
            elif kind == "tool_use":
                first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                raw = block.get("_raw_json")
                args = raw if raw is not None else json.dumps(block.get("input", {}))
                deltas = [delta({"type": "input_json_delta", "partial_json": ""})] + [
                    delta({"type": "input_json_delta", "partial_json": c}) for c in self._chunks(args) if c
                ]
            elif kind == "thinking":
                first = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [delta({"type": "thinking_delta", "thinking": c}) for c in self._chunks(block["thinking"])]
                deltas.append(delta({"type": "signature_delta", "signature": block.get("signature", "")}))
            else:  # redacted_thinking and anything else arrive whole in content_block_start
                first = {k: v for k, v in block.items() if not k.startswith("_")}
                deltas = []
            out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": first}))
            if index == 0 and self.ping:
                out.append(("ping", {"type": "ping"}))
            out.extend(deltas)
            out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        if not self.content and self.ping:
            out.append(("ping", {"type": "ping"}))
        final = self._usage(final=True)
        delta_usage = final if self.full_delta_usage else {"output_tokens": final["output_tokens"]}
        out.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
            "usage": delta_usage,
        }))
        out.append(("message_stop", {"type": "message_stop"}))
        return out


@dataclass
class ErrorReply:
    """An HTTP error: ``status`` with the API's error body and headers (``retry-after``...)."""

    status: int
    type: str = "api_error"
    message: str = "Internal server error"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # replaces the JSON error body when set
    headers_delay: float = 0.0
