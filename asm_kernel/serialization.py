"""The one cattrs converter, and JSON at the edges.

Records stay attrs objects inside the kernel; they become plain dicts only when they cross an
edge: the store, the CLI's ``--json``, an event payload. Stored data that does not fit the model
raises :class:`~asm_kernel.errors.StoreCorruptError` / :class:`ValidationError` with the path.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

import cattrs

from .errors import ValidationError
from .model import (
    ContentBlock,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

__all__ = ["converter", "to_dict", "from_dict", "dumps", "loads", "message_from_dict"]

T = TypeVar("T")

_BLOCKS: dict[str, type] = {
    "text": TextBlock,
    "image": ImageBlock,
    "tool_use": ToolUseBlock,
    "tool_result": ToolResultBlock,
    "thinking": ThinkingBlock,
    "redacted_thinking": RedactedThinkingBlock,
}


@cache
def converter() -> cattrs.Converter:
    """Built on first use, not at import, so ``import asm_kernel`` stays cheap."""
    conv = cattrs.Converter(omit_if_default=False, forbid_extra_keys=False)
    conv.register_unstructure_hook(datetime, lambda d: d.isoformat())
    conv.register_structure_hook(datetime, lambda v, _: v if isinstance(v, datetime) else datetime.fromisoformat(v))
    conv.register_unstructure_hook(frozenset, lambda s: sorted(s))

    def structure_block(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise ValidationError(
                f"content block must be an object, got {type(value).__name__}",
                hint=f"use one of the block types {sorted(_BLOCKS)}",
            )
        kind = value.get("type")
        cls = _BLOCKS.get(kind)  # type: ignore[arg-type]
        if cls is None:
            raise ValidationError(
                f"unknown content block type {kind!r}",
                path="type",
                hint=f"expected one of {sorted(_BLOCKS)}",
            )
        return conv.structure(value, cls)

    conv.register_structure_hook(ContentBlock, structure_block)  # type: ignore[arg-type]

    def structure_tool_content(value: Any, _: Any) -> Any:
        if isinstance(value, str | list):
            return value
        raise ValidationError(f"tool result content must be a string or a list, got {type(value).__name__}")

    conv.register_structure_hook(str | list[Any], structure_tool_content)
    return conv


def to_dict(obj: Any) -> Any:
    """An attrs record (or a container of them) as JSON-ready Python data."""
    return converter().unstructure(obj)


def from_dict(data: Any, cls: type[T]) -> T:
    try:
        return converter().structure(data, cls)
    except ValidationError:
        raise
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(exc, cattrs.BaseValidationError) else str(exc)
        raise ValidationError(
            f"data does not fit {cls.__name__}: {detail}",
            hint="check the field names and types against the reference docs",
        ) from None


def message_from_dict(data: Any) -> Message:
    return from_dict(data, Message)


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "__attrs_attrs__"):
        return to_dict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """Compact, strict JSON (NaN and Infinity are refused); attrs records and datetimes converted."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_default, allow_nan=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)
