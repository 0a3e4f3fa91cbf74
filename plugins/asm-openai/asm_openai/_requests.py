"""Build Chat Completions and Responses API request bodies from an asm :class:`ProviderRequest`.

Pure functions over plain data: no SDK import, so the mapping is cheap to test and to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from asm_kernel.errors import CapabilityError, ValidationError
from asm_kernel.model import (
    Capability,
    ContentBlock,
    ImageBlock,
    Message,
    ProviderRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

from .settings import OpenAISettings

__all__ = [
    "REASONING_SIGNATURE_PREFIX",
    "encode_reasoning",
    "decode_reasoning",
    "check_capabilities",
    "chat_params",
    "responses_params",
    "is_strict_schema",
]

#: ThinkingBlock.signature / RedactedThinkingBlock.data of a Responses reasoning item start with
#: this, followed by JSON ``{"id": ..., "encrypted_content": ...}``. Other adapters can tell an
#: OpenAI reasoning item from their own by it; this adapter drops thinking blocks without it.
REASONING_SIGNATURE_PREFIX = "openai-reasoning:"


def encode_reasoning(item_id: str | None, encrypted_content: str | None) -> str:
    data: dict[str, str] = {}
    if item_id:
        data["id"] = item_id
    if encrypted_content:
        data["encrypted_content"] = encrypted_content
    return REASONING_SIGNATURE_PREFIX + json.dumps(data, separators=(",", ":"))


def decode_reasoning(value: str) -> dict[str, str] | None:
    if not value.startswith(REASONING_SIGNATURE_PREFIX):
        return None
    try:
        data = json.loads(value[len(REASONING_SIGNATURE_PREFIX) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def check_capabilities(request: ProviderRequest, capabilities: frozenset[str], *, provider: str) -> None:
    """Refuse, before any network call, a request that needs what this provider was not declared to do."""
    needed: list[tuple[str, str]] = []
    if request.tools:
        needed.append((Capability.TOOLS, "the request offers tools"))
    if request.response_schema is not None:
        needed.append((Capability.JSON_SCHEMA, "the run asks for structured output (response_schema)"))
    if any(isinstance(b, ImageBlock) for m in request.messages for b in m.content):
        needed.append((Capability.VISION, "the transcript contains images"))
    for capability, why in needed:
        if capability not in capabilities:
            raise CapabilityError(
                f"provider {provider!r} does not declare the {capability!r} capability, but {why}",
                provider=provider,
                model=request.model,
                hint=f"add {capability!r} to providers[].capabilities if the server supports it, "
                "or route the run to a provider that does",
                capability=str(capability),
            )


# -- helpers ----------------------------------------------------------------------------------


def _image_url(block: ImageBlock, path: str) -> str:
    if block.url:
        return block.url
    if block.data:
        media_type = block.media_type or "image/png"
        return f"data:{media_type};base64,{block.data}"
    raise ValidationError("an image block has neither `url` nor `data`", path=path, hint="set one of them")


def _tool_output(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for item in content:
        if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
        elif isinstance(item, TextBlock):
            texts.append(item.text)
        else:
            return json.dumps(content, default=str, ensure_ascii=False)
    return "".join(texts)


def _arguments(block: ToolUseBlock) -> str:
    return json.dumps(block.input, ensure_ascii=False, separators=(",", ":"))


def is_strict_schema(schema: Any) -> bool:
    """True when ``schema`` meets OpenAI's strict structured-output rules.

    Every object closes ``additionalProperties`` and lists all its properties as required.
    Strict mode guarantees the shape; a schema that does not qualify is sent non-strict rather
    than refused by the server.
    """
    if isinstance(schema, list):
        return all(is_strict_schema(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if not isinstance(props, dict) or set(schema.get("required", [])) != set(props):
            return False
    for key in ("properties", "$defs", "definitions"):
        sub = schema.get(key)
        if isinstance(sub, dict) and not all(is_strict_schema(s) for s in sub.values()):
            return False
    for key in ("items", "anyOf", "allOf", "oneOf"):
        if key in schema and not is_strict_schema(schema[key]):
            return False
    return True


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"name", "schema", "strict"}`` from a bare JSON schema or OpenAI's own envelope."""
    if isinstance(schema.get("schema"), dict) and isinstance(schema.get("name"), str):
        body = schema["schema"]
        fmt = {"name": schema["name"], "schema": body, "strict": schema.get("strict", is_strict_schema(body))}
        if isinstance(schema.get("description"), str):
            fmt["description"] = schema["description"]
        return fmt
    return {"name": "response", "schema": schema, "strict": is_strict_schema(schema)}


def _max_tokens(request: ProviderRequest, settings: OpenAISettings) -> int | None:
    return request.max_tokens if request.max_tokens is not None else settings.max_tokens


def _extra(request: ProviderRequest) -> dict[str, Any]:
    extra = request.options.get("openai")
    return dict(extra) if isinstance(extra, dict) else {}


# -- Chat Completions -------------------------------------------------------------------------


def _chat_messages(request: ProviderRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for i, message in enumerate(request.messages):
        path = f"messages[{i}]"
        if message.role == "user":
            out.extend(_chat_user(message, path))
        else:
            out.append(_chat_assistant(message))
    return out


def _chat_user(message: Message, path: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        if isinstance(block, ToolResultBlock):
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": _tool_output(block.content)})
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, f"{path}.content[{j}]")}})
        # thinking or tool_use blocks in a user turn have no Chat Completions form: skipped
    if parts:
        out.append({"role": "user", "content": _chat_content(parts)})
    return out


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One text part as a plain string (what every compatible server accepts), else the parts.

    Several text blocks stay separate parts: joining them would run two turns' texts together
    (a failed run's question followed by the next one).
    """
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _chat_assistant(message: Message) -> dict[str, Any]:
    texts = [{"type": "text", "text": b.text} for b in message.content if isinstance(b, TextBlock) and b.text]
    calls = [
        {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": _arguments(b)}}
        for b in message.content
        if isinstance(b, ToolUseBlock)
    ]
    content: str | list[dict[str, Any]] | None = _chat_content(texts) if texts else ("" if not calls else None)
    entry: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        entry["tool_calls"] = calls
    return entry


def chat_params(request: ProviderRequest, settings: OpenAISettings, capabilities: frozenset[str]) -> dict[str, Any]:
    """Keyword arguments for ``client.chat.completions.create`` (always streaming)."""
    params: dict[str, Any] = {
        "model": request.model,
        "messages": _chat_messages(request),
        "stream": True,
    }
    if Capability.USAGE in capabilities:
        params["stream_options"] = {"include_usage": True}
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
            }
            for t in request.tools
        ]
    max_tokens = _max_tokens(request, settings)
    if max_tokens is not None:
        field = settings.max_tokens_field or ("max_completion_tokens" if settings.base_url is None else "max_tokens")
        params[field] = max_tokens
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.response_schema is not None:
        params["response_format"] = {"type": "json_schema", "json_schema": _schema_format(request.response_schema)}
    if settings.reasoning_effort is not None:
        params["reasoning_effort"] = settings.reasoning_effort
    if settings.store is not None:
        params["store"] = settings.store
    extra = _extra(request)
    if extra:
        params["extra_body"] = extra
    return params


# -- Responses --------------------------------------------------------------------------------


def _responses_input(request: ProviderRequest, settings: OpenAISettings) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        path = f"messages[{i}]"
        if message.role == "user":
            items.extend(_responses_user(message, path))
        else:
            items.extend(_responses_assistant(message.content, settings))
    return items


def _responses_user(message: Message, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        if isinstance(block, ToolResultBlock):
            items.append(
                {"type": "function_call_output", "call_id": block.tool_use_id, "output": _tool_output(block.content)}
            )
        elif isinstance(block, TextBlock):
            parts.append({"type": "input_text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(
                {"type": "input_image", "image_url": _image_url(block, f"{path}.content[{j}]"), "detail": "auto"}
            )
    if parts:
        items.append({"role": "user", "content": parts})
    return items


def _responses_assistant(blocks: Iterable[ContentBlock], settings: OpenAISettings) -> list[dict[str, Any]]:
    # One message item per text block, in order: joining blocks would run separate texts together.
    items: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            if block.text:
                items.append({"role": "assistant", "content": block.text})
        elif isinstance(block, ToolUseBlock):
            items.append(
                {"type": "function_call", "call_id": block.id, "name": block.name, "arguments": _arguments(block)}
            )
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            item = _reasoning_item(block, settings)
            if item is not None:
                items.append(item)
    return items


def _reasoning_item(block: ThinkingBlock | RedactedThinkingBlock, settings: OpenAISettings) -> dict[str, Any] | None:
    data = decode_reasoning(block.signature if isinstance(block, ThinkingBlock) else block.data)
    if data is None:
        return None  # another provider's reasoning, or chat-style reasoning text: not replayable here
    encrypted = data.get("encrypted_content")
    if not encrypted and settings.store is False:
        return None  # an unstored item can only be replayed with its encrypted content
    summary = (
        [{"type": "summary_text", "text": block.thinking}]
        if isinstance(block, ThinkingBlock) and block.thinking
        else []
    )
    item: dict[str, Any] = {"type": "reasoning", "summary": summary}
    if data.get("id"):
        item["id"] = data["id"]
    if encrypted:
        item["encrypted_content"] = encrypted
    return item


def responses_params(request: ProviderRequest, settings: OpenAISettings) -> dict[str, Any]:
    """Keyword arguments for ``client.responses.create`` (always streaming)."""
    params: dict[str, Any] = {
        "model": request.model,
        "input": _responses_input(request, settings),
        "stream": True,
    }
    if request.system:
        params["instructions"] = request.system
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.input_schema,
                "strict": is_strict_schema(t.input_schema),
            }
            for t in request.tools
        ]
    max_tokens = _max_tokens(request, settings)
    if max_tokens is not None:
        params["max_output_tokens"] = max_tokens
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.response_schema is not None:
        params["text"] = {"format": {"type": "json_schema", **_schema_format(request.response_schema)}}
    reasoning: dict[str, Any] = {}
    if settings.reasoning_effort is not None:
        reasoning["effort"] = settings.reasoning_effort
    if settings.reasoning_summary is not None:
        reasoning["summary"] = settings.reasoning_summary
    if reasoning:
        params["reasoning"] = reasoning
    if settings.include_encrypted_reasoning:
        params["include"] = ["reasoning.encrypted_content"]
    if settings.store is not None:
        params["store"] = settings.store
    extra = _extra(request)
    if extra:
        params["extra_body"] = extra
    return params
