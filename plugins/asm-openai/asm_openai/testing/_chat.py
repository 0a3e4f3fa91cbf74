"""The Chat Completions wire format: ``chat.completion.chunk`` lines ending with ``data: [DONE]``."""

from __future__ import annotations

import json
import time
from typing import Any

from ._replies import Reasoning, Refusal, Reply, Text, ToolCall, new_id, pieces

__all__ = ["render_chat", "error_object"]


def render_chat(reply: Reply, body: dict[str, Any]) -> list[tuple[str | None, str]]:
    """The stream ``reply`` makes for a request ``body``, as (event name, data) pairs."""
    model = reply.model or str(body.get("model", "gpt-fake"))
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) and reply.include_usage
    base = {
        "id": f"chatcmpl-{new_id()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake0001",
    }
    events: list[tuple[str | None, str]] = []

    def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            data["usage"] = None
        events.append((None, json.dumps(data)))

    chunk({"role": "assistant", "content": "", "refusal": None})
    calls = 0
    for item in reply.output:
        if isinstance(item, Reasoning):
            for piece in pieces(item.summary, item.chunk_size):
                chunk({"reasoning_content": piece})
        elif isinstance(item, Text):
            for piece in pieces(item.text, item.chunk_size):
                chunk({"content": piece})
        elif isinstance(item, Refusal):
            for piece in pieces(item.text, item.chunk_size):
                chunk({"refusal": piece})
        elif isinstance(item, ToolCall):
            call_id = item.call_id or f"call_{new_id()}"
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": calls,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": item.name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in pieces(item.raw_arguments, item.chunk_size):
                chunk({"tool_calls": [{"index": calls, "function": {"arguments": piece}}]})
            calls += 1
    if reply.status == "failed":
        events.append((None, json.dumps({"error": error_object(reply.error)})))
        return events
    finish = reply.finish_reason
    if finish is None:
        if reply.status == "incomplete":
            finish = "length" if reply.incomplete_reason == "max_output_tokens" else "content_filter"
        else:
            finish = "tool_calls" if calls else "stop"
    chunk({}, finish)
    if include_usage:
        usage = {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        events.append((None, json.dumps({**base, "choices": [], "usage": usage})))
    events.append((None, "[DONE]"))
    return events


def error_object(error: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's error object, every field present."""
    return {
        "message": error.get("message", "error"),
        "type": error.get("type"),
        "param": error.get("param"),
        "code": error.get("code"),
    }
