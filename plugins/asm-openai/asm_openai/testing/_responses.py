"""The Responses API wire format: ``event:``/``data:`` pairs from ``response.created`` to the terminal event."""

from __future__ import annotations

import json
import time
from typing import Any

from ._replies import Reasoning, Refusal, Reply, Text, ToolCall, new_id, pieces

__all__ = ["render_responses"]


def render_responses(reply: Reply, body: dict[str, Any]) -> list[tuple[str | None, str]]:
    """The stream ``reply`` makes for a request ``body``, as (event name, data) pairs."""
    model = reply.model or str(body.get("model", "gpt-fake"))
    include = body.get("include") or []
    want_encrypted = "reasoning.encrypted_content" in include
    response_id = f"resp_{new_id(32)}"
    created = int(time.time())
    events: list[tuple[str | None, str]] = []

    def emit(kind: str, **data: Any) -> None:
        events.append((kind, json.dumps({"type": kind, "sequence_number": len(events), **data})))

    def response(status: str, output: list[Any], usage: Any = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": {},
            **extra,
        }

    emit("response.created", response=response("in_progress", []))
    emit("response.in_progress", response=response("in_progress", []))
    done_items: list[dict[str, Any]] = []
    for index, item in enumerate(reply.output):
        if isinstance(item, Reasoning):
            item_id = f"rs_{new_id(32)}"
            added: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
            if want_encrypted:
                added["encrypted_content"] = None
            emit("response.output_item.added", output_index=index, item=added)
            summary: list[dict[str, Any]] = []
            if item.summary:
                emit(
                    "response.reasoning_summary_part.added",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
                for piece in pieces(item.summary, item.chunk_size):
                    emit(
                        "response.reasoning_summary_text.delta",
                        item_id=item_id,
                        output_index=index,
                        summary_index=0,
                        delta=piece,
                    )
                emit(
                    "response.reasoning_summary_text.done",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    text=item.summary,
                )
                emit(
                    "response.reasoning_summary_part.done",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    part={"type": "summary_text", "text": item.summary},
                )
                summary = [{"type": "summary_text", "text": item.summary}]
            final: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": summary}
            if want_encrypted:
                final["encrypted_content"] = item.encrypted_content or f"gAAAAA{new_id(32)}"
            emit("response.output_item.done", output_index=index, item=final)
            done_items.append(final)
        elif isinstance(item, Text | Refusal):
            item_id = f"msg_{new_id(32)}"
            refusal = isinstance(item, Refusal)
            emit(
                "response.output_item.added",
                output_index=index,
                item={
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                },
            )
            empty = (
                {"type": "refusal", "refusal": ""}
                if refusal
                else {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            )
            full = (
                {"type": "refusal", "refusal": item.text}
                if refusal
                else {"type": "output_text", "text": item.text, "annotations": [], "logprobs": []}
            )
            emit("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=empty)
            for piece in pieces(item.text, item.chunk_size):
                if refusal:
                    emit("response.refusal.delta", item_id=item_id, output_index=index, content_index=0, delta=piece)
                else:
                    emit(
                        "response.output_text.delta",
                        item_id=item_id,
                        output_index=index,
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                    )
            if refusal:
                emit("response.refusal.done", item_id=item_id, output_index=index, content_index=0, refusal=item.text)
            else:
                emit(
                    "response.output_text.done",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    text=item.text,
                    logprobs=[],
                )
            emit("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=full)
            final = {
                "id": item_id,
                "type": "message",
                "status": "completed",
                "content": [full],
                "role": "assistant",
            }
            emit("response.output_item.done", output_index=index, item=final)
            done_items.append(final)
        elif isinstance(item, ToolCall):
            item_id = f"fc_{new_id(32)}"
            call_id = item.call_id or f"call_{new_id()}"
            emit(
                "response.output_item.added",
                output_index=index,
                item={
                    "id": item_id,
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": call_id,
                    "name": item.name,
                },
            )
            for piece in pieces(item.raw_arguments, item.chunk_size):
                emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
            emit(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                name=item.name,
                arguments=item.raw_arguments,
            )
            final = {
                "id": item_id,
                "type": "function_call",
                "status": "completed",
                "arguments": item.raw_arguments,
                "call_id": call_id,
                "name": item.name,
            }
            emit("response.output_item.done", output_index=index, item=final)
            done_items.append(final)
    usage: dict[str, Any] | None = {
        "input_tokens": reply.input_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }
    if not reply.include_usage:
        usage = None
    if reply.status == "failed":
        emit(
            "response.failed",
            response=response(
                "failed",
                done_items,
                usage,
                error={"code": reply.error.get("code"), "message": reply.error.get("message")},
            ),
        )
    elif reply.status == "incomplete":
        emit(
            "response.incomplete",
            response=response("incomplete", done_items, usage, incomplete_details={"reason": reply.incomplete_reason}),
        )
    else:
        emit("response.completed", response=response("completed", done_items, usage))
    return events
