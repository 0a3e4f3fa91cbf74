"""Chat Completions: ``chat.completion.chunk`` events into asm's normalized stream.

A stream is complete only when it ends with ``data: [DONE]`` after a chunk with a
``finish_reason``; anything less (the connection closed after the last chunk, say) is a
truncated response and fails with :class:`ProviderResponseError`. A complete stream without a
usage chunk (servers that ignore ``stream_options.include_usage``) ends with ``usage=None``.
"""

from __future__ import annotations

import uuid
from typing import Any

from asm_kernel.errors import ProviderError, ProviderResponseError
from asm_kernel.model import (
    ContentBlock,
    MessageDone,
    StreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    UsageUpdate,
)
from asm_kernel.provider_kit import ProviderCall

from ._errors import payload_error
from ._stream import chat_usage, decode, final_message, parse_arguments

__all__ = ["ChatAccumulator", "CHAT_STOP_REASONS"]

CHAT_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_TRUNCATED_HINT = "nothing partial is kept as an answer; the run can be retried"


class ChatAccumulator:
    """Assembles one streamed chat completion (choice 0)."""

    def __init__(self, call: ProviderCall) -> None:
        self.call = call
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.refused = False
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.done_marker = False
        self.model: str | None = None
        self.response_id: str | None = None

    def _bad(self, message: str) -> ProviderError:
        return self.call.error(ProviderResponseError, message)

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        """The stream events one server-sent event adds."""
        if self.done_marker:
            return []  # nothing counts after [DONE]
        if data.strip() == "[DONE]":
            self.done_marker = True
            return []
        chunk = decode(self.call, data)
        if not isinstance(chunk, dict):
            raise self._bad(f"a chat stream chunk is a JSON {type(chunk).__name__}, not an object")
        if chunk.get("error") is not None:
            raise payload_error(self.call, chunk["error"], during="error inside the stream")
        out: list[StreamEvent] = []
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        choices = chunk.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise self._bad("a chat stream chunk has `choices` that is not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise self._bad("a chat stream choice is not an object")
            if choice.get("index", 0) not in (0, None):
                continue
            out.extend(self._delta(choice.get("delta")))
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason
        usage = chat_usage(chunk.get("usage"))
        if usage is not None:
            self.call.usage = usage
            out.append(UsageUpdate(usage))
        return out

    def _delta(self, delta: Any) -> list[StreamEvent]:
        if delta is None:
            return []
        if not isinstance(delta, dict):
            raise self._bad("a chat stream delta is not an object")
        out: list[StreamEvent] = []
        for key in ("reasoning_content", "reasoning"):  # compatible servers (vLLM, Ollama, DeepSeek)
            value = delta.get(key)
            if isinstance(value, str) and value:
                self.reasoning.append(value)
                out.append(ThinkingDelta(value, 0))
                break
        text_index = 1 if self.reasoning else 0
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.text.append(content)
            out.append(TextDelta(content, text_index))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self.refused = True
            self.text.append(refusal)
            out.append(TextDelta(refusal, text_index))
        calls = delta.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise self._bad("a chat stream delta has `tool_calls` that is not a list")
            for position, call in enumerate(calls):
                self._tool_call_delta(position, call)
        return out

    def _tool_call_delta(self, position: int, call: Any) -> None:
        if not isinstance(call, dict):
            raise self._bad("a streamed tool call is not an object")
        index = call.get("index", position)
        if not isinstance(index, int):
            raise self._bad("a streamed tool call has a non-integer index")
        entry = self.calls.setdefault(index, {"id": None, "name": "", "arguments": []})
        if isinstance(call.get("id"), str) and call["id"]:
            entry["id"] = call["id"]
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise self._bad("a streamed tool call's `function` is not an object")
        if isinstance(function.get("name"), str) and function["name"] and not entry["name"]:
            entry["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            entry["arguments"].append(function["arguments"])

    def finish(self) -> MessageDone:
        """The final message, once the body has ended."""
        if self.finish_reason is None:
            raise self.call.error(
                ProviderResponseError,
                "the chat stream ended before the model finished (no finish_reason): the response was truncated",
                hint=_TRUNCATED_HINT,
            )
        if not self.done_marker:
            raise self.call.error(
                ProviderResponseError,
                "the chat stream ended without `data: [DONE]` after the last chunk: the response was truncated",
                hint=_TRUNCATED_HINT,
            )
        blocks: list[ContentBlock] = []
        if self.reasoning:
            blocks.append(ThinkingBlock("".join(self.reasoning)))
        if self.text:
            blocks.append(TextBlock("".join(self.text)))
        for index in sorted(self.calls):
            entry = self.calls[index]
            if not entry["name"]:
                raise self._bad(f"streamed tool call #{index} has no function name")
            blocks.append(
                ToolUseBlock(
                    entry["id"] or f"call_{uuid.uuid4().hex[:24]}",
                    entry["name"],
                    parse_arguments(self.call, entry["name"], "".join(entry["arguments"])),
                )
            )
        stop = CHAT_STOP_REASONS.get(self.finish_reason, self.finish_reason)
        return final_message(blocks, stop, self.refused, self.model, self.call.usage, self.response_id)
