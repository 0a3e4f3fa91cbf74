"""The Responses API: its stream events into asm's normalized stream.

A response is complete only at ``response.completed`` (or ``response.incomplete`` for
``max_output_tokens``/``content_filter``); a body that ends before its terminal event is a
truncated response (:class:`ProviderResponseError`). Usage comes with the terminal event,
``response.failed`` included, and is reported on the error when the response failed.
"""

from __future__ import annotations

from typing import Any

from asm_kernel.errors import ProviderError, ProviderResponseError
from asm_kernel.model import (
    ContentBlock,
    MessageDone,
    RedactedThinkingBlock,
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
from ._requests import encode_reasoning
from ._stream import decode, final_message, parse_arguments, responses_usage

__all__ = ["ResponsesAccumulator"]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


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

    def __init__(self, call: ProviderCall) -> None:
        self.call = call
        self.slots: list[_Slot] = []
        self.items: dict[int, dict[str, Any]] = {}  # output_index -> {"type", "slot", "parts": {...}}
        self.done = False
        self.stop_reason = "end_turn"
        self.model: str | None = None
        self.response_id: str | None = None
        self.last_sequence: int | None = None

    # helpers

    def _bad(self, message: str) -> ProviderError:
        return self.call.error(ProviderResponseError, message)

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

    def feed(self, name: str | None, data: str) -> list[StreamEvent]:
        """The stream events one server-sent event adds (the JSON ``type`` names it, not ``name``)."""
        if data.strip() == "[DONE]":
            return []  # not part of the Responses API, but compatible servers copy it from chat
        event = decode(self.call, data)
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
            slot.block = ToolUseBlock(call_id, name, parse_arguments(self.call, name, raw))
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
        self._usage(response)
        if self.call.usage is not None:
            out.append(UsageUpdate(self.call.usage))
        self.done = True
        return out

    def _usage(self, response: dict[str, Any]) -> None:
        usage = responses_usage(response.get("usage"))
        if usage is not None:
            self.call.usage = usage

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
            raise self.call.error(
                ProviderResponseError,
                f"the response ended incomplete ({reason or 'no reason given'})",
                hint="nothing partial is kept as an answer",
                reason=reason,
            )
        return out

    def _on_response_failed(self, event: dict[str, Any]) -> list[StreamEvent]:
        response = _dict(event.get("response"))
        self._usage(response)  # a failed response may still have been billed
        raise payload_error(self.call, response.get("error"), during="response.failed")

    def _on_error(self, event: dict[str, Any]) -> list[StreamEvent]:
        payload = event.get("error") if isinstance(event.get("error"), dict) else event
        raise payload_error(self.call, payload, during="error event inside the stream")

    def finish(self) -> MessageDone:
        """The final message, once the body has ended."""
        if not self.done:
            raise self.call.error(
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
        return final_message(blocks, self.stop_reason, refused, self.model, self.call.usage, self.response_id)
