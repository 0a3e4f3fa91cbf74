"""Turn Chat Completions chunks and Responses API events into asm's normalized stream.

Both accumulators take plain dicts (the SDK's parsed objects flattened by :func:`plain`), so a
malformed payload is met with a :class:`ProviderResponseError`, never an ``AttributeError``.
They yield :class:`TextDelta`, :class:`ThinkingDelta` and :class:`UsageUpdate` as data arrives
and build the final :class:`MessageDone` in :meth:`finish`.

Usage: OpenAI's ``prompt_tokens``/``input_tokens`` *include* cached tokens. asm prices
``input_tokens`` and ``cache_read_input_tokens`` separately and adds them for the total, so the
cached count is subtracted: ``input_tokens = prompt - cached``, ``cache_read_input_tokens =
cached``. ``output_tokens`` includes reasoning tokens (they are billed as output);
``reasoning_tokens`` reports that subset.
"""

from __future__ import annotations

import json
import uuid
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

from ._errors import ErrorContext, error_from_payload
from ._requests import encode_reasoning

__all__ = ["plain", "ChatAccumulator", "ResponsesAccumulator", "CHAT_STOP_REASONS"]

CHAT_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def plain(obj: Any) -> Any:
    """A parsed SDK object as plain JSON-like data, without pydantic's serializer (which warns
    on, and may mangle, the malformed values we want to report cleanly)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if hasattr(obj, "__pydantic_fields__") and hasattr(obj, "__dict__"):
        out = {k: plain(v) for k, v in vars(obj).items()}
        extra = getattr(obj, "__pydantic_extra__", None)
        if extra:
            out.update({k: plain(v) for k, v in extra.items()})
        return out
    return obj


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(data: Any, *, input_key: str, output_key: str, input_details: str, output_details: str) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = _int(data.get(input_key))
    cached = min(_int(_dict(data.get(input_details)).get("cached_tokens")), prompt)
    out_details = _dict(data.get(output_details))
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=_int(data.get(output_key)),
        cache_read_input_tokens=cached,
        reasoning_tokens=_int(out_details.get("reasoning_tokens")),
    )


def chat_usage(data: Any) -> Usage | None:
    return _usage(
        data,
        input_key="prompt_tokens",
        output_key="completion_tokens",
        input_details="prompt_tokens_details",
        output_details="completion_tokens_details",
    )


def responses_usage(data: Any) -> Usage | None:
    return _usage(
        data,
        input_key="input_tokens",
        output_key="output_tokens",
        input_details="input_tokens_details",
        output_details="output_tokens_details",
    )


def _parse_arguments(ctx: ErrorContext, name: str, raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ctx.make(
            ProviderResponseError,
            f"the model called tool {name!r} with arguments that are not valid JSON ({exc.msg} at char {exc.pos})",
            hint="the tool call was not executed; retry the run or lower the temperature",
            tool=name,
        ) from None
    if not isinstance(value, dict):
        raise ctx.make(
            ProviderResponseError,
            f"the model called tool {name!r} with arguments that are a JSON {type(value).__name__}, not an object",
            tool=name,
        )
    return value


# -- Chat Completions -------------------------------------------------------------------------


class ChatAccumulator:
    """Assembles one streamed chat completion (choice 0)."""

    def __init__(self, ctx: ErrorContext) -> None:
        self.ctx = ctx
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.refused = False
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.response_id: str | None = None

    def feed(self, chunk: Any) -> list[StreamEvent]:
        if not isinstance(chunk, dict):
            raise self.ctx.make(
                ProviderResponseError, f"a chat stream chunk is a JSON {type(chunk).__name__}, not an object"
            )
        if chunk.get("error") is not None:
            raise error_from_payload(self.ctx, chunk["error"], during="error inside the stream")
        out: list[StreamEvent] = []
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        choices = chunk.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise self.ctx.make(ProviderResponseError, "a chat stream chunk has `choices` that is not a list")
        for choice in choices:
            if not isinstance(choice, dict):
                raise self.ctx.make(ProviderResponseError, "a chat stream choice is not an object")
            if choice.get("index", 0) not in (0, None):
                continue
            out.extend(self._delta(choice.get("delta")))
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason
        usage = chat_usage(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
            out.append(UsageUpdate(usage))
        return out

    def _delta(self, delta: Any) -> list[StreamEvent]:
        if delta is None:
            return []
        if not isinstance(delta, dict):
            raise self.ctx.make(ProviderResponseError, "a chat stream delta is not an object")
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
                raise self.ctx.make(ProviderResponseError, "a chat stream delta has `tool_calls` that is not a list")
            for position, call in enumerate(calls):
                if not isinstance(call, dict):
                    raise self.ctx.make(ProviderResponseError, "a streamed tool call is not an object")
                index = call.get("index", position)
                if not isinstance(index, int):
                    raise self.ctx.make(ProviderResponseError, "a streamed tool call has a non-integer index")
                entry = self.calls.setdefault(index, {"id": None, "name": "", "arguments": []})
                if isinstance(call.get("id"), str) and call["id"]:
                    entry["id"] = call["id"]
                function = call.get("function") or {}
                if not isinstance(function, dict):
                    raise self.ctx.make(ProviderResponseError, "a streamed tool call's `function` is not an object")
                if isinstance(function.get("name"), str) and function["name"] and not entry["name"]:
                    entry["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    entry["arguments"].append(function["arguments"])
        return out

    def finish(self) -> MessageDone:
        if self.finish_reason is None:
            raise self.ctx.make(
                ProviderResponseError,
                "the chat stream ended before the model finished (no finish_reason): the response was truncated",
                hint="nothing partial is kept as an answer; the run can be retried",
            )
        blocks: list[ContentBlock] = []
        if self.reasoning:
            blocks.append(ThinkingBlock("".join(self.reasoning)))
        if self.text:
            blocks.append(TextBlock("".join(self.text)))
        for index in sorted(self.calls):
            entry = self.calls[index]
            if not entry["name"]:
                raise self.ctx.make(ProviderResponseError, f"streamed tool call #{index} has no function name")
            blocks.append(
                ToolUseBlock(
                    entry["id"] or f"call_{uuid.uuid4().hex[:24]}",
                    entry["name"],
                    _parse_arguments(self.ctx, entry["name"], "".join(entry["arguments"])),
                )
            )
        stop = CHAT_STOP_REASONS.get(self.finish_reason, self.finish_reason)
        return _final(blocks, stop, self.refused, self.model, self.usage, self.response_id)


def _final(
    blocks: list[ContentBlock],
    stop: str | None,
    refused: bool,
    model: str | None,
    usage: Usage | None,
    response_id: str | None,
) -> MessageDone:
    """The final message of either API; ``end_turn`` is refined by what the message holds."""
    if stop == "end_turn" and any(isinstance(b, ToolUseBlock) for b in blocks):
        stop = "tool_use"  # some compatible servers say "stop" after tool calls
    if stop == "end_turn" and refused:
        stop = "refusal"
    return MessageDone(
        Message("assistant", tuple(blocks)),
        stop_reason=stop or "end_turn",
        model=model,
        usage=usage,
        response_id=response_id,
    )


# -- Responses API ----------------------------------------------------------------------------


class _Slot:
    """One content block of the final message, in the order the stream opened them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "text" | "reasoning" | "call"
        self.parts: list[str] = []
        self.block: ContentBlock | None = None
        self.refusal = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ResponsesAccumulator:
    """Assembles one streamed Responses API response."""

    def __init__(self, ctx: ErrorContext) -> None:
        self.ctx = ctx
        self.slots: list[_Slot] = []
        self.items: dict[int, dict[str, Any]] = {}  # output_index -> {"type", "slot", "parts": {...}}
        self.done = False
        self.stop_reason = "end_turn"
        self.usage: Usage | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.last_sequence: int | None = None

    # helpers

    def _bad(self, message: str) -> ProviderError:
        return self.ctx.make(ProviderResponseError, message)

    def _index(self, event: dict[str, Any], key: str = "output_index") -> int:
        value = event.get(key, 0)
        if not isinstance(value, int):
            raise self._bad(f"{event.get('type')} event has a non-integer {key}")
        return value

    def _new_slot(self, kind: str) -> tuple[int, _Slot]:
        slot = _Slot(kind)
        self.slots.append(slot)
        return len(self.slots) - 1, slot

    def _item(self, output_index: int, kind: str = "message") -> dict[str, Any]:
        item = self.items.get(output_index)
        if item is None:
            item = self.items[output_index] = {"type": kind, "slot": None, "parts": {}, "id": None}
            if kind in ("reasoning", "function_call"):
                item["slot"] = self._new_slot("reasoning" if kind == "reasoning" else "call")[0]
        return item

    def _text_slot(self, output_index: int, content_index: int) -> int:
        item = self._item(output_index)
        parts = item["parts"]
        if content_index not in parts:
            parts[content_index] = self._new_slot("text")[0]
        return parts[content_index]

    def _meta(self, response: Any) -> None:
        if isinstance(response, dict):
            if isinstance(response.get("id"), str):
                self.response_id = response["id"]
            if isinstance(response.get("model"), str):
                self.model = response["model"]

    def _reconcile(
        self, slot_index: int, final: Any, delta_type: type[TextDelta] | type[ThinkingDelta]
    ) -> list[StreamEvent]:
        """A ``*.done`` carries the full text: stream any tail we did not see as deltas."""
        if not isinstance(final, str):
            return []
        slot = self.slots[slot_index]
        have = slot.text
        if final.startswith(have) and len(final) > len(have):
            tail = final[len(have) :]
            slot.parts.append(tail)
            return [delta_type(tail, slot_index)]
        return []

    # events

    def feed(self, event: Any) -> list[StreamEvent]:
        if not isinstance(event, dict):
            raise self._bad(f"a Responses stream event is a JSON {type(event).__name__}, not an object")
        kind = event.get("type")
        if not isinstance(kind, str):
            raise self._bad("a Responses stream event has no `type`")
        seq = event.get("sequence_number")
        if isinstance(seq, int):
            self.last_sequence = seq
        if self.done:
            return []  # nothing counts after the terminal event
        handler = getattr(self, "_on_" + kind.replace(".", "_"), None)
        if handler is None:
            return []  # events of features asm does not request (web search, audio, ...)
        return handler(event)

    def _on_response_created(self, event: dict[str, Any]) -> list[StreamEvent]:
        self._meta(event.get("response"))
        return []

    _on_response_in_progress = _on_response_created
    _on_response_queued = _on_response_created

    def _on_response_output_item_added(self, event: dict[str, Any]) -> list[StreamEvent]:
        item = event.get("item")
        if not isinstance(item, dict):
            raise self._bad("response.output_item.added has no item object")
        kind = item.get("type")
        state = self._item(self._index(event), kind if isinstance(kind, str) else "message")
        state["id"] = item.get("id")
        return []

    def _on_response_content_part_added(self, event: dict[str, Any]) -> list[StreamEvent]:
        index = self._text_slot(self._index(event), self._index(event, "content_index"))
        part = event.get("part")
        if isinstance(part, dict) and part.get("type") == "refusal":
            self.slots[index].refusal = True
        return []

    def _on_response_output_text_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise self._bad(f"{event['type']} has no text delta")
        index = self._text_slot(self._index(event), self._index(event, "content_index"))
        if not delta:
            return []
        self.slots[index].parts.append(delta)
        return [TextDelta(delta, index)]

    def _on_response_refusal_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        index = self._text_slot(self._index(event), self._index(event, "content_index"))
        self.slots[index].refusal = True
        return self._on_response_output_text_delta(event)

    def _on_response_output_text_done(self, event: dict[str, Any]) -> list[StreamEvent]:
        index = self._text_slot(self._index(event), self._index(event, "content_index"))
        return self._reconcile(index, event.get("text"), TextDelta)

    def _on_response_refusal_done(self, event: dict[str, Any]) -> list[StreamEvent]:
        index = self._text_slot(self._index(event), self._index(event, "content_index"))
        self.slots[index].refusal = True
        return self._reconcile(index, event.get("refusal"), TextDelta)

    def _reasoning_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise self._bad(f"{event['type']} has no text delta")
        state = self._item(self._index(event), "reasoning")
        if state["slot"] is None:
            raise self._bad(f"{event['type']} arrived for an output item that is not reasoning")
        slot = self.slots[state["slot"]]
        summary_index = event.get("summary_index", 0)
        previous = state.get("summary_index")
        if previous is not None and summary_index != previous and slot.parts:
            delta = "\n\n" + delta  # a new summary part
        state["summary_index"] = summary_index
        if not delta:
            return []
        slot.parts.append(delta)
        return [ThinkingDelta(delta, state["slot"])]

    _on_response_reasoning_summary_text_delta = _reasoning_delta
    _on_response_reasoning_text_delta = _reasoning_delta

    def _on_response_function_call_arguments_delta(self, event: dict[str, Any]) -> list[StreamEvent]:
        delta = event.get("delta")
        if not isinstance(delta, str):
            raise self._bad("response.function_call_arguments.delta has no string delta")
        state = self._item(self._index(event), "function_call")
        if state["slot"] is None:
            raise self._bad("function call arguments arrived for an output item that is not a function call")
        self.slots[state["slot"]].parts.append(delta)
        return []

    def _on_response_function_call_arguments_done(self, event: dict[str, Any]) -> list[StreamEvent]:
        state = self._item(self._index(event), "function_call")
        if state["slot"] is not None and isinstance(event.get("arguments"), str):
            self.slots[state["slot"]].parts[:] = [event["arguments"]]
        return []

    def _on_response_output_item_done(self, event: dict[str, Any]) -> list[StreamEvent]:
        item = event.get("item")
        if not isinstance(item, dict):
            raise self._bad("response.output_item.done has no item object")
        return self._finish_item(self._index(event), item)

    def _finish_item(self, output_index: int, item: dict[str, Any]) -> list[StreamEvent]:
        kind = item.get("type")
        out: list[StreamEvent] = []
        if kind == "function_call":
            state = self._item(output_index, "function_call")
            slot = self.slots[state["slot"]]
            name, call_id = item.get("name"), item.get("call_id")
            if not isinstance(name, str) or not name:
                raise self._bad("a function_call item has no name")
            if not isinstance(call_id, str) or not call_id:
                raise self._bad(f"the function_call item for {name!r} has no call_id")
            raw = _str(item.get("arguments"))
            if raw is None:
                raw = slot.text
            slot.block = ToolUseBlock(call_id, name, _parse_arguments(self.ctx, name, raw))
        elif kind == "reasoning":
            state = self._item(output_index, "reasoning")
            slot = self.slots[state["slot"]]
            texts = [t for s in _list(item.get("summary")) if (t := _str(_dict(s).get("text"))) is not None]
            if not slot.parts and texts:
                out.extend(self._reconcile(state["slot"], "\n\n".join(texts), ThinkingDelta))
            signature = encode_reasoning(_str(item.get("id")), _str(item.get("encrypted_content")))
            slot.block = ThinkingBlock(slot.text, signature) if slot.text else RedactedThinkingBlock(signature)
        elif kind == "message":
            for content_index, part in enumerate(_list(item.get("content"))):
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "output_text":
                    index = self._text_slot(output_index, content_index)
                    out.extend(self._reconcile(index, part.get("text"), TextDelta))
                elif part.get("type") == "refusal":
                    index = self._text_slot(output_index, content_index)
                    self.slots[index].refusal = True
                    out.extend(self._reconcile(index, part.get("refusal"), TextDelta))
        if output_index in self.items:
            self.items[output_index]["done"] = True
        return out

    def _terminal(self, event: dict[str, Any]) -> list[StreamEvent]:
        response = event.get("response")
        if not isinstance(response, dict):
            raise self._bad(f"{event['type']} has no response object")
        self._meta(response)
        out: list[StreamEvent] = []
        # Items the stream never finished (or never announced) are taken from the final output.
        for output_index, item in enumerate(_list(response.get("output"))):
            state = self.items.get(output_index)
            if isinstance(item, dict) and (state is None or not state.get("done")):
                if state is None and item.get("type") in ("reasoning", "function_call", "message"):
                    self._item(output_index, item["type"])
                out.extend(self._finish_item(output_index, item))
        usage = responses_usage(response.get("usage"))
        if usage is not None:
            self.usage = usage
            out.append(UsageUpdate(usage))
        self.done = True
        return out

    def _on_response_completed(self, event: dict[str, Any]) -> list[StreamEvent]:
        out = self._terminal(event)
        self.stop_reason = "end_turn"
        return out

    def _on_response_incomplete(self, event: dict[str, Any]) -> list[StreamEvent]:
        out = self._terminal(event)
        details = event["response"].get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if reason == "max_output_tokens":
            self.stop_reason = "max_tokens"
        elif reason == "content_filter":
            self.stop_reason = "refusal"
        else:
            raise self.ctx.make(
                ProviderResponseError,
                f"the response ended incomplete ({reason or 'no reason given'})",
                hint="nothing partial is kept as an answer",
                reason=reason,
            )
        return out

    def _on_response_failed(self, event: dict[str, Any]) -> list[StreamEvent]:
        response = event.get("response")
        error = response.get("error") if isinstance(response, dict) else None
        raise error_from_payload(self.ctx, error, during="response.failed")

    def _on_error(self, event: dict[str, Any]) -> list[StreamEvent]:
        payload = event.get("error") if isinstance(event.get("error"), dict) else event
        raise error_from_payload(self.ctx, payload, during="error event inside the stream")

    def finish(self) -> MessageDone:
        if not self.done:
            raise self.ctx.make(
                ProviderResponseError,
                "the Responses stream ended before response.completed: the response was truncated",
                hint="nothing partial is kept as an answer; the run can be retried",
                last_sequence_number=self.last_sequence,
            )
        blocks: list[ContentBlock] = []
        refused = False
        for index, slot in enumerate(self.slots):
            if slot.kind == "text":
                if slot.text:
                    blocks.append(TextBlock(slot.text))
                refused = refused or slot.refusal
            elif slot.block is not None:
                blocks.append(slot.block)
            elif slot.kind == "call":
                raise self._bad(f"a function call (block {index}) never completed")
        return _final(blocks, self.stop_reason, refused, self.model, self.usage, self.response_id)
