"""What a run accepts as its input, turned into the user :class:`~asm_kernel.model.Message`."""

from __future__ import annotations

from typing import Any

from .errors import ValidationError
from .model import ImageBlock, Message, TextBlock, ToolResultBlock

__all__ = ["coerce_input"]

_INPUT_BLOCKS = (TextBlock, ImageBlock, ToolResultBlock)


def coerce_input(value: Any, path: str = "input") -> Message:
    """Accept a string, a user :class:`Message`, a content block or a list of blocks."""
    if isinstance(value, Message):
        if value.role != "user":
            raise ValidationError(f"run input must be a user message, got role {value.role!r}", path=path)
        message = value
    elif isinstance(value, str):
        if not value.strip():
            raise ValidationError("run input is empty", path=path, hint="send some text or blocks")
        message = Message.user(value)
    elif isinstance(value, _INPUT_BLOCKS):
        message = Message("user", (value,))
    elif isinstance(value, list | tuple):
        for i, block in enumerate(value):
            if not isinstance(block, _INPUT_BLOCKS):
                raise ValidationError(
                    f"unsupported input block {type(block).__name__}",
                    path=f"{path}[{i}]",
                    hint="use TextBlock, ImageBlock or ToolResultBlock",
                )
        message = Message("user", tuple(value))
    else:
        raise ValidationError(
            f"run input must be a string, a Message or content blocks, got {type(value).__name__}",
            path=path,
        )
    if not message.content:
        raise ValidationError("run input is empty", path=path, hint="send some text or blocks")
    return message
