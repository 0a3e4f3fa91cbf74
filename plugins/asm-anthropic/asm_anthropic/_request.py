"""asm's :class:`ProviderRequest` → the Messages API request body."""

from __future__ import annotations

import json
from typing import Any

from asm_kernel.errors import InvalidRequestError
from asm_kernel.model import (
    ImageBlock,
    Message,
    ProviderRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

from .settings import AnthropicSettings

__all__ = ["build_params", "ALLOWED_OPTIONS"]

#: ``ProviderRequest.options`` keys passed through to the API unchanged (others are for other
#: providers and are ignored). ``anthropic`` may hold a dict of any extra body fields.
ALLOWED_OPTIONS = frozenset(
    {"stop_sequences", "top_p", "top_k", "tool_choice", "service_tier", "thinking", "output_config",
     "inference_geo", "speed"}
)
#: Body fields the SDK's ``messages.create`` has no keyword for (sent as ``extra_body``):
#: the sampling parameters, which newer models refuse with a 400 when set.
_BODY_ONLY = frozenset({"temperature", "top_p", "top_k"})


def _bad(message: str, provider: str, model: str, path: str) -> InvalidRequestError:
    return InvalidRequestError(message, provider=provider, model=model, path=path)


def _image(block: ImageBlock, provider: str, model: str, path: str) -> dict[str, Any]:
    if block.data:
        if not block.media_type:
            raise _bad("an inline image needs its media_type (image/png, image/jpeg, image/gif or image/webp)",
                       provider, model, path)
        return {"type": "image", "source": {"type": "base64", "media_type": block.media_type, "data": block.data}}
    if block.url:
        return {"type": "image", "source": {"type": "url", "url": block.url}}
    raise _bad("an image block has neither data nor url", provider, model, path)


def _tool_result_content(content: Any, provider: str, model: str, path: str) -> Any:
    if isinstance(content, str):
        return content
    items: list[Any] = []
    for i, item in enumerate(content):
        if isinstance(item, TextBlock):
            if item.text:
                items.append({"type": "text", "text": item.text})
        elif isinstance(item, ImageBlock):
            items.append(_image(item, provider, model, f"{path}[{i}]"))
        elif isinstance(item, dict) and isinstance(item.get("type"), str):
            if item["type"] == "image" and "source" not in item:
                block = ImageBlock(item.get("media_type", ""), item.get("data"), item.get("url"))
                items.append(_image(block, provider, model, f"{path}[{i}]"))
            elif item["type"] == "text" and not item.get("text"):
                continue
            else:
                items.append(item)
        elif isinstance(item, str):
            if item:
                items.append({"type": "text", "text": item})
        else:
            items.append({"type": "text", "text": json.dumps(item, default=str)})
    return items


def _foreign(opaque: str) -> bool:
    """Reasoning Anthropic cannot verify: unsigned, or tagged by another provider.

    Adapters that keep their own opaque reasoning in a signature prefix it with
    ``<provider>-reasoning:`` (asm-openai does); Anthropic's signatures are plain base64.
    """
    return not opaque or "-reasoning:" in opaque[:40]


def _block(block: Any, provider: str, model: str, path: str) -> dict[str, Any] | None:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text} if block.text else None
    if isinstance(block, ImageBlock):
        return _image(block, provider, model, path)
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
    if isinstance(block, ToolResultBlock):
        out: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.tool_use_id}
        content = _tool_result_content(block.content, provider, model, f"{path}.content")
        if content:
            out["content"] = content
        if block.is_error:
            out["is_error"] = True
        return out
    if isinstance(block, ThinkingBlock):
        if _foreign(block.signature):
            return None  # another provider's reasoning: only meaningful to the model that wrote it
        # Replayed unchanged: the signature lets the API verify the reasoning it produced.
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if isinstance(block, RedactedThinkingBlock):
        if _foreign(block.data):
            return None
        return {"type": "redacted_thinking", "data": block.data}
    raise _bad(f"unsupported content block {type(block).__name__}", provider, model, path)


def _messages(messages: tuple[Message, ...], provider: str, model: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role not in ("user", "assistant"):
            raise _bad(f"unsupported role {message.role!r}", provider, model, f"messages[{i}].role")
        blocks = [
            b for j, block in enumerate(message.content)
            if (b := _block(block, provider, model, f"messages[{i}].content[{j}]")) is not None
        ]
        if not blocks:
            continue  # the API refuses empty turns; an empty turn carries nothing
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)  # the API wants alternating roles
        else:
            out.append({"role": message.role, "content": blocks})
    if not out:
        raise _bad("the request has no message with content", provider, model, "messages")
    return out


def build_params(
    request: ProviderRequest,
    settings: AnthropicSettings,
    *,
    model: str,
    provider: str,
    max_output: int | None = None,
) -> dict[str, Any]:
    """The keyword arguments for ``client.messages.create`` (without ``stream``)."""
    cache = {"type": "ephemeral"} if settings.cache_ttl == "5m" else {"type": "ephemeral", "ttl": settings.cache_ttl}
    max_tokens = request.max_tokens if request.max_tokens is not None else settings.max_tokens
    if max_tokens < 1:
        raise _bad(f"max_tokens must be at least 1, got {max_tokens}", provider, model, "max_tokens")
    params: dict[str, Any] = {"model": model, "messages": _messages(request.messages, provider, model)}

    mode = settings.thinking_mode
    if mode == "enabled":
        budget = settings.thinking_budget or 1024
        if max_tokens <= budget:
            # Thinking tokens count toward max_tokens; the run's max_tokens is the answer's share.
            max_tokens += budget
        thinking: dict[str, Any] = {"type": "enabled", "budget_tokens": budget}
    elif mode in ("adaptive", "disabled"):
        thinking = {"type": mode}
    else:
        thinking = {}
    if thinking and settings.thinking_display and mode != "disabled":
        thinking["display"] = settings.thinking_display
    if thinking:
        params["thinking"] = thinking
    if max_output is not None:
        max_tokens = min(max_tokens, max_output)
    params["max_tokens"] = max_tokens

    if request.system:
        if settings.prompt_cache:
            params["system"] = [{"type": "text", "text": request.system, "cache_control": cache}]
        else:
            params["system"] = request.system
    if settings.prompt_cache:
        for message in reversed(params["messages"]):
            if message["role"] == "user":
                last = message["content"][-1]
                message["content"][-1] = {**last, "cache_control": cache}
                break
    if request.tools:
        tools = []
        for spec in request.tools:
            tool: dict[str, Any] = {"name": spec.name, "input_schema": dict(spec.input_schema)}
            if spec.description:
                tool["description"] = spec.description
            tools.append(tool)
        params["tools"] = tools
    extra_body: dict[str, Any] = {}
    if request.temperature is not None:
        extra_body["temperature"] = request.temperature
    output_config: dict[str, Any] = {}
    if settings.effort is not None:
        output_config["effort"] = settings.effort
    if request.response_schema is not None:
        output_config["format"] = {"type": "json_schema", "schema": dict(request.response_schema)}
    if output_config:
        params["output_config"] = output_config
    # Anthropic accepts only metadata.user_id; asm's own metadata (session, run ids) stays home.
    user_id = request.metadata.get("user_id") if request.metadata else None
    if isinstance(user_id, str) and user_id:
        params["metadata"] = {"user_id": user_id}
    for key, value in (request.options or {}).items():
        if key in _BODY_ONLY:
            extra_body[key] = value
        elif key in ALLOWED_OPTIONS:
            if key == "output_config" and isinstance(value, dict):
                params["output_config"] = {**params.get("output_config", {}), **value}
            else:
                params[key] = value
        elif key == "anthropic" and isinstance(value, dict):
            extra_body.update(value)
    if extra_body:
        params["extra_body"] = extra_body
    return params
