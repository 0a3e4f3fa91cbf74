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
    "text_weight",
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
    """What text costs before an estimator turns it into tokens.

    ``chars`` counts characters; ``extra`` the UTF-8 bytes beyond one per character (a CJK
    character has 2, an accented Latin letter 1: tokenizers split such text finely); ``punct``
    ASCII digits and punctuation (code and JSON tokenize densely); ``images`` images. They are
    summed over ranges of a transcript, and each estimator weighs them its own way.
    """

    chars: int = 0
    extra: int = 0
    punct: int = 0
    images: int = 0

    def __add__(self, other: Weight) -> Weight:
        return Weight(self.chars + other.chars, self.extra + other.extra, self.punct + other.punct,
                      self.images + other.images)

    def __sub__(self, other: Weight) -> Weight:
        return Weight(self.chars - other.chars, self.extra - other.extra, self.punct - other.punct,
                      self.images - other.images)


_KEEP_PUNCT = {c: None for c in range(128) if not (chr(c).isdigit() or (33 <= c < 127 and not chr(c).isalnum()))}


def text_weight(text: str) -> Weight:
    """The weight of a text (C-speed: one encode and one translate)."""
    extra = 0 if text.isascii() else len(text.encode("utf-8", "surrogatepass")) - len(text)
    return Weight(len(text), extra, len(text.translate(_KEEP_PUNCT)) - (0 if text.isascii() else _non_ascii(text)))


def _non_ascii(text: str) -> int:
    return len(text) - len(text.encode("ascii", "ignore"))


def _block_weight(block: ContentBlock) -> Weight:
    if isinstance(block, TextBlock):
        return text_weight(block.text)
    if isinstance(block, ThinkingBlock):
        return text_weight(block.thinking) + Weight(len(block.signature) // 4)
    if isinstance(block, RedactedThinkingBlock):
        return Weight(len(block.data) // 2)
    if isinstance(block, ToolUseBlock):
        return text_weight(block.name + dumps(block.input))
    if isinstance(block, ToolResultBlock):
        if isinstance(block.content, str):
            return text_weight(block.content)
        total = Weight()
        for item in block.content:
            if isinstance(item, ImageBlock) or (isinstance(item, dict) and item.get("type") == "image"):
                total += Weight(images=1)
            else:
                total += text_weight(item.text if isinstance(item, TextBlock) else dumps(item))
        return total
    if isinstance(block, ImageBlock):
        return Weight(images=1)
    return text_weight(dumps(block))  # pragma: no cover - every block type is listed above


def weigh(message: Message) -> Weight:
    """The weight of one message."""
    total = Weight()
    for block in message.content:
        total += _block_weight(block)
    return total


@frozen
class TokenEstimator:
    """Tokens from weights: ``ceil((chars + extra_weight*extra + punct_weight*punct) / chars_per_token)``
    plus fixed costs per message, image, request and tool.

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
    #: What each UTF-8 byte beyond the first of a character adds, in characters.
    extra_weight: float = 0.0
    #: What each ASCII digit or punctuation mark adds, in characters.
    punct_weight: float = 0.0

    def weighted(self, weight: Weight, messages: int) -> int:
        """Tokens of ``messages`` messages of total ``weight``."""
        chars = weight.chars + self.extra_weight * weight.extra + self.punct_weight * weight.punct
        return messages * self.message_overhead + math.ceil(chars / self.chars_per_token) + (
            weight.images * self.image_tokens
        )

    def text(self, text: str) -> int:
        return self.weighted(text_weight(text), 0)

    def message(self, message: Message) -> int:
        return self.weighted(weigh(message), 1)

    def messages(self, messages: Iterable[Message]) -> int:
        total = Weight()
        count = 0
        for message in messages:
            total += weigh(message)
            count += 1
        return self.weighted(total, count)

    def fixed(self, system: str | None, tools: Sequence[ToolSpec]) -> int:
        """The part of a request that is not messages: framing, system prompt, tool specs."""
        total = self.request_overhead + (self.text(system) if system else 0)
        for spec in tools:
            total += self.tool_overhead + self.text(spec.name + spec.description + dumps(spec.input_schema))
        return total

    def request(self, system: str | None, tools: Sequence[ToolSpec], messages: Iterable[Message]) -> int:
        return self.fixed(system, tools) + self.messages(messages)


#: The estimator of a provider that declares none: it errs high against both OpenAI's and Claude's
#: tokenizers on the recorded corpus (docs/guides/context.md has the table).
DEFAULT_ESTIMATOR = TokenEstimator(chars_per_token=3.4, extra_weight=2.5, punct_weight=1.5, request_overhead=3)


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
