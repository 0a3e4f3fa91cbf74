"""Token estimation without a tokenizer.

About four characters a token holds for English text with the tokenizers of the major
providers; it is used where a provider reports no usage (echo, scripted, some compatible
servers) and for budgeting before a request is sent. It errs high on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import (
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from ..serialization import dumps

__all__ = ["estimate_text", "estimate_message", "estimate_messages"]

#: Per-message framing overhead (role markers and separators).
MESSAGE_OVERHEAD = 4
#: A flat estimate for an image; real costs depend on size and provider.
IMAGE_TOKENS = 1_000


def estimate_text(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_message(message: Message) -> int:
    total = MESSAGE_OVERHEAD
    for block in message.content:
        if isinstance(block, TextBlock):
            total += estimate_text(block.text)
        elif isinstance(block, ThinkingBlock):
            total += estimate_text(block.thinking)
        elif isinstance(block, RedactedThinkingBlock):
            total += estimate_text(block.data) // 2
        elif isinstance(block, ToolUseBlock):
            total += estimate_text(block.name) + estimate_text(dumps(block.input))
        elif isinstance(block, ToolResultBlock):
            content = block.content if isinstance(block.content, str) else dumps(block.content)
            total += estimate_text(content)
        elif isinstance(block, ImageBlock):
            total += IMAGE_TOKENS
    return total


def estimate_messages(messages: Iterable[Message], system: str | None = None) -> int:
    return sum(estimate_message(m) for m in messages) + (estimate_text(system) if system else 0)
