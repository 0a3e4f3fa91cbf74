"""Token estimation without a tokenizer, per provider and model.

A :class:`TokenEstimator` counts characters (text, reasoning, tool calls and results as JSON),
divides them by ``chars_per_token`` and adds a fixed cost per message, per image and per
request. It is used where a provider reports no usage (echo, scripted, some compatible servers)
and, before a request is sent, for the part of the window that no reported usage covers yet.
Its parameters are chosen so that it **errs high** for ordinary text and code: a window judged by
it fits. A provider may declare its own (``Provider.token_estimator(model)``); the measured error
of each is in ``docs/guides/context.md``.

The module-level functions use :data:`DEFAULT_ESTIMATOR` (about four characters a token, as the
echo and scripted providers report).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from attrs import frozen

from ..model import (
    ContentBlock,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from ..serialization import dumps

__all__ = [
    "TokenEstimator",
    "DEFAULT_ESTIMATOR",
    "Weight",
    "weigh",
    "estimate_text",
    "estimate_message",
    "estimate_messages",
]

#: Per-message framing overhead (role markers and separators) of the default estimator.
MESSAGE_OVERHEAD = 4
#: A flat estimate for an image; real costs depend on size and provider.
IMAGE_TOKENS = 1_000


@frozen
class Weight:
    """What a message costs before an estimator turns it into tokens: characters and images."""

    chars: int = 0
    images: int = 0


def _block_chars(block: ContentBlock) -> tuple[int, int]:
    if isinstance(block, TextBlock):
        return len(block.text), 0
    if isinstance(block, ThinkingBlock):
        return len(block.thinking) + len(block.signature) // 4, 0
    if isinstance(block, RedactedThinkingBlock):
        return len(block.data) // 2, 0
    if isinstance(block, ToolUseBlock):
        return len(block.name) + len(dumps(block.input)), 0
    if isinstance(block, ToolResultBlock):
        if isinstance(block.content, str):
            return len(block.content), 0
        chars = images = 0
        for item in block.content:
            if isinstance(item, ImageBlock) or (isinstance(item, dict) and item.get("type") == "image"):
                images += 1
            else:
                chars += len(item.text) if isinstance(item, TextBlock) else len(dumps(item))
        return chars, images
    if isinstance(block, ImageBlock):
        return 0, 1
    return len(dumps(block)), 0  # pragma: no cover - every block type is listed above


def weigh(message: Message) -> Weight:
    """The characters and images of one message."""
    chars = images = 0
    for block in message.content:
        c, i = _block_chars(block)
        chars += c
        images += i
    return Weight(chars, images)


@frozen
class TokenEstimator:
    """Tokens from characters: ``ceil(chars / chars_per_token)`` plus fixed costs.

    ``name`` says which provider or model family it is calibrated for (it appears in events).
    """

    name: str = "default"
    chars_per_token: float = 4.0
    message_overhead: int = MESSAGE_OVERHEAD
    image_tokens: int = IMAGE_TOKENS
    #: Framing of a whole request (reply priming, system wrapper).
    request_overhead: int = 0
    #: Per tool spec, besides its JSON (the provider's tool-use preamble).
    tool_overhead: int = 0

    def weighted(self, chars: int, images: int, messages: int) -> int:
        """Tokens of ``messages`` messages holding ``chars`` characters and ``images`` images."""
        return messages * self.message_overhead + math.ceil(chars / self.chars_per_token) + images * self.image_tokens

    def text(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def message(self, message: Message) -> int:
        w = weigh(message)
        return self.weighted(w.chars, w.images, 1)

    def messages(self, messages: Iterable[Message]) -> int:
        chars = images = count = 0
        for message in messages:
            w = weigh(message)
            chars += w.chars
            images += w.images
            count += 1
        return self.weighted(chars, images, count)

    def fixed(self, system: str | None, tools: Sequence[ToolSpec]) -> int:
        """The part of a request that is not messages: framing, system prompt, tool specs."""
        total = self.request_overhead + (self.text(system) if system else 0)
        for spec in tools:
            total += self.tool_overhead + self.text(spec.name + spec.description + dumps(spec.input_schema))
        return total

    def request(self, system: str | None, tools: Sequence[ToolSpec], messages: Iterable[Message]) -> int:
        return self.fixed(system, tools) + self.messages(messages)


#: The estimator of a provider that declares none: 3.5 characters a token (it errs high: see the guide).
DEFAULT_ESTIMATOR = TokenEstimator(chars_per_token=3.5)


def estimate_text(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_message(message: Message) -> int:
    """What the echo and scripted providers report for a message (block by block, rounded up)."""
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
