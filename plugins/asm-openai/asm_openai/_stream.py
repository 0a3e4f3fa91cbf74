"""What both wire APIs' stream readers share: SSE framing, JSON decoding, usage, the final message.

The provider reads the response body itself (``with_streaming_response``) instead of iterating
the SDK's stream object, because that object ends the same way whether the server sent
``data: [DONE]`` or the connection was cut after the last chunk; only the raw events tell a
complete Chat Completions stream from a truncated one.

Usage: OpenAI's ``prompt_tokens``/``input_tokens`` *include* cached tokens. asm prices
``input_tokens`` and ``cache_read_input_tokens`` separately and adds them for the total, so the
cached count is subtracted: ``input_tokens = prompt - cached``, ``cache_read_input_tokens =
cached``. ``output_tokens`` includes reasoning tokens (they are billed as output);
``reasoning_tokens`` reports that subset. A stream that reports no usage leaves it unknown
(None), never zero, so its cost is unknown too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from asm_kernel.errors import ProviderResponseError
from asm_kernel.model import ContentBlock, Message, MessageDone, ToolUseBlock, Usage
from asm_kernel.provider_kit import ProviderCall

__all__ = ["iter_sse", "decode", "chat_usage", "responses_usage", "parse_arguments", "final_message"]


async def iter_sse(lines: AsyncIterator[str]) -> AsyncGenerator[tuple[str | None, str], None]:
    """``(event, data)`` for each server-sent event in ``lines`` (comments and ids skipped).

    An event the body ends in the middle of is dropped, as the SSE standard says.
    """
    event: str | None = None
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value or None


def decode(call: ProviderCall, data: str) -> Any:
    """One event's JSON payload (a :class:`ProviderResponseError` when it is not JSON)."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise call.error(
            ProviderResponseError, f"malformed data in the response stream: not JSON ({exc.msg} at char {exc.pos})"
        ) from None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(data: Any, *, input_key: str, output_key: str, input_details: str, output_details: str) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = _int(data.get(input_key))
    cached = min(_int(_dict(data.get(input_details)).get("cached_tokens")), prompt)
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=_int(data.get(output_key)),
        cache_read_input_tokens=cached,
        reasoning_tokens=_int(_dict(data.get(output_details)).get("reasoning_tokens")),
    )


def chat_usage(data: Any) -> Usage | None:
    """A Chat Completions ``usage`` object, or None when the chunk has none."""
    return _usage(
        data,
        input_key="prompt_tokens",
        output_key="completion_tokens",
        input_details="prompt_tokens_details",
        output_details="completion_tokens_details",
    )


def responses_usage(data: Any) -> Usage | None:
    """A Responses API ``usage`` object, or None when the response has none."""
    return _usage(
        data,
        input_key="input_tokens",
        output_key="output_tokens",
        input_details="input_tokens_details",
        output_details="output_tokens_details",
    )


def parse_arguments(call: ProviderCall, name: str, raw: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object (a :class:`ProviderResponseError` otherwise)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise call.error(
            ProviderResponseError,
            f"the model called tool {name!r} with arguments that are not valid JSON ({exc.msg} at char {exc.pos})",
            hint="the tool call was not executed; retry the run or lower the temperature",
            tool=name,
        ) from None
    if not isinstance(value, dict):
        raise call.error(
            ProviderResponseError,
            f"the model called tool {name!r} with arguments that are a JSON {type(value).__name__}, not an object",
            tool=name,
        )
    return value


def final_message(
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
