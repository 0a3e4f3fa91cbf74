"""One streamed Messages API response, assembled from its raw events.

Events are mapped one by one (``messages.create(stream=True)``), so nothing is buffered beyond
the message being built and every malformed or truncated stream is classified exactly. Usage is
unknown until ``message_start`` and cumulative afterwards; it is kept on the call, so an error
raised after ``message_start`` (an ``event: error``, a cut) reports the tokens already billed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asm_kernel.errors import ProviderError, ProviderResponseError
from asm_kernel.model import (
    ContentBlock,
    Message,
    MessageDone,
    RedactedThinkingBlock,
    StreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from asm_kernel.provider_kit import ProviderCall

__all__ = ["MessageBuilder"]

log = logging.getLogger("asm.anthropic")


class MessageBuilder:
    """Accumulates one streamed message from raw Messages API events."""

    def __init__(self, call: ProviderCall, limit_chars: int) -> None:
        self.call = call
        self.limit_chars = limit_chars
        self.blocks: dict[int, dict[str, Any]] = {}
        self.started = False
        self.stopped = False
        self.stop_reason: str | None = None
        self.response_id: str | None = None
        self.model: str | None = None
        self.chars = 0

    def _error(self, message: str, hint: str | None = None) -> ProviderError:
        return self.call.error(
            ProviderResponseError,
            message,
            hint=hint or "the response was malformed; nothing partial is kept as an answer",
        )

    def _grow(self, n: int) -> None:
        self.chars += n
        if self.chars > self.limit_chars:
            raise self._error(
                f"the response exceeded max_response_chars ({self.limit_chars} characters); it was cut off",
                hint="raise max_response_chars in the provider's config if such answers are expected",
            )

    @staticmethod
    def _usage(raw: Any, base: Usage) -> Usage:
        def pick(name: str, old: int) -> int:
            value = getattr(raw, name, None)
            return int(value) if isinstance(value, int) else old

        details = getattr(raw, "output_tokens_details", None)
        thinking = getattr(details, "thinking_tokens", None)
        return Usage(
            input_tokens=pick("input_tokens", base.input_tokens),
            output_tokens=pick("output_tokens", base.output_tokens),
            cache_creation_input_tokens=pick("cache_creation_input_tokens", base.cache_creation_input_tokens),
            cache_read_input_tokens=pick("cache_read_input_tokens", base.cache_read_input_tokens),
            reasoning_tokens=int(thinking) if isinstance(thinking, int) else base.reasoning_tokens,
        )

    def apply(self, event: Any) -> list[StreamEvent]:
        """The stream events one SDK event adds."""
        kind = getattr(event, "type", None)
        if kind == "message_start":
            if self.started:
                raise self._error("the stream sent message_start twice")
            self.started = True
            message = event.message
            self.response_id = getattr(message, "id", None)
            self.model = getattr(message, "model", None)
            self.call.usage = first = self._usage(getattr(message, "usage", None), Usage())
            return [UsageUpdate(first)]
        if (
            kind
            in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop")
            and not self.started
        ):
            raise self._error(f"the stream sent {kind} before message_start")
        if self.stopped:
            raise self._error(f"the stream sent {kind} after message_stop")
        if kind == "content_block_start":
            index = int(event.index)
            if index in self.blocks:
                raise self._error(f"the stream started content block {index} twice")
            block = event.content_block
            btype = block.type
            if btype == "text":
                self.blocks[index] = {"type": "text", "text": ""}
                initial = getattr(block, "text", "") or ""
                if initial:
                    self.blocks[index]["text"] = initial
                    self._grow(len(initial))
                    return [TextDelta(initial, index)]
            elif btype == "tool_use":
                self.blocks[index] = {
                    "type": "tool_use",
                    "id": block.id,
                    "name": block.name,
                    "json": "",
                    "input": getattr(block, "input", None) or {},
                }
            elif btype == "thinking":
                initial = getattr(block, "thinking", "") or ""
                self.blocks[index] = {
                    "type": "thinking",
                    "thinking": initial,
                    "signature": getattr(block, "signature", "") or "",
                }
                if initial:
                    self._grow(len(initial))
                    return [ThinkingDelta(initial, index)]
            elif btype == "redacted_thinking":
                self.blocks[index] = {"type": "redacted_thinking", "data": block.data}
            else:
                log.warning("anthropic: ignoring content block of unsupported type %r", btype)
                self.blocks[index] = {"type": btype, "skip": True}
            return []
        if kind == "content_block_delta":
            index = int(event.index)
            block = self.blocks.get(index)
            if block is None or block.get("closed"):
                raise self._error(f"the stream sent a delta for content block {index}, which is not open")
            delta = event.delta
            dtype = delta.type
            if block.get("skip"):
                return []
            if dtype == "text_delta" and block["type"] == "text":
                block["text"] += delta.text
                self._grow(len(delta.text))
                return [TextDelta(delta.text, index)] if delta.text else []
            if dtype == "input_json_delta" and block["type"] == "tool_use":
                block["json"] += delta.partial_json
                self._grow(len(delta.partial_json))
                return []
            if dtype == "thinking_delta" and block["type"] == "thinking":
                block["thinking"] += delta.thinking
                self._grow(len(delta.thinking))
                return [ThinkingDelta(delta.thinking, index)] if delta.thinking else []
            if dtype == "signature_delta" and block["type"] == "thinking":
                block["signature"] += delta.signature
                return []
            if dtype == "citations_delta":
                return []
            raise self._error(f"the stream sent a {dtype} for a {block['type']} block")
        if kind == "content_block_stop":
            index = int(event.index)
            block = self.blocks.get(index)
            if block is None or block.get("closed"):
                raise self._error(f"the stream stopped content block {index}, which is not open")
            block["closed"] = True
            if block["type"] == "tool_use":
                raw = block["json"]
                if raw.strip():
                    try:
                        value = json.loads(raw)
                    except ValueError as exc:
                        raise self._error(
                            f"tool_use block {block['id']} ({block['name']}) has invalid JSON input: {exc}",
                            hint="the model produced malformed tool arguments; the call was not made",
                        ) from None
                else:
                    value = dict(block["input"])
                if not isinstance(value, dict):
                    raise self._error(
                        f"tool_use block {block['id']} ({block['name']}) input is a JSON "
                        f"{type(value).__name__}, not an object"
                    )
                block["input"] = value
            return []
        if kind == "message_delta":
            delta = event.delta
            reason = getattr(delta, "stop_reason", None)
            if reason:
                self.stop_reason = str(reason)
            reported = getattr(event, "usage", None)
            if reported is not None:
                self.call.usage = total = self._usage(reported, self.call.usage or Usage())
                return [UsageUpdate(total)]
            return []
        if kind == "message_stop":
            self.stopped = True
            return []
        return []  # unknown event types are ignored, as the API's versioning policy asks

    def finish(self) -> MessageDone:
        """The final message, once the stream has ended."""
        if not self.started:
            raise self._error("the stream ended before message_start: no message was received")
        if not self.stopped:
            raise self._error("the stream ended before message_stop: the response was truncated")
        open_blocks = [i for i, b in self.blocks.items() if not b.get("closed")]
        if open_blocks:
            raise self._error(f"content block(s) {open_blocks} were never stopped")
        if self.stop_reason is None:
            raise self._error("the stream ended without a stop_reason (no message_delta)")
        content: list[ContentBlock] = []
        for _, block in sorted(self.blocks.items()):
            btype = block["type"]
            if block.get("skip"):
                continue
            if btype == "text":
                if block["text"]:
                    content.append(TextBlock(block["text"]))
            elif btype == "tool_use":
                content.append(ToolUseBlock(block["id"], block["name"], block["input"]))
            elif btype == "thinking":
                content.append(ThinkingBlock(block["thinking"], block["signature"]))
            elif btype == "redacted_thinking":
                content.append(RedactedThinkingBlock(block["data"]))
        return MessageDone(
            Message("assistant", tuple(content)),
            stop_reason=self.stop_reason,
            model=self.model or self.call.model,
            usage=self.call.usage,
            response_id=self.response_id,
        )
