"""The vocabulary asm shares with providers: content blocks, messages, tools, usage, prices,
the request the kernel sends and the normalized stream a provider yields.

All ``@frozen`` attrs records. :mod:`asm_kernel.model` re-exports every name here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias

from attrs import field, frozen

__all__ = [
    "TextBlock",
    "ImageBlock",
    "ToolUseBlock",
    "ToolResultBlock",
    "ThinkingBlock",
    "RedactedThinkingBlock",
    "ContentBlock",
    "Message",
    "Usage",
    "Price",
    "ModelInfo",
    "Capability",
    "ToolSpec",
    "ProviderRequest",
    "TextDelta",
    "ThinkingDelta",
    "UsageUpdate",
    "MessageDone",
    "StreamEvent",
]


def _freeze_mapping(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


# Typed converters: attrs' mypy plugin cannot infer element types through a bare `tuple`.
def _blocks(value: Iterable[ContentBlock]) -> tuple[ContentBlock, ...]:
    return tuple(value)


def _messages(value: Iterable[Message]) -> tuple[Message, ...]:
    return tuple(value)


def _tool_specs(value: Iterable[ToolSpec]) -> tuple[ToolSpec, ...]:
    return tuple(value)


def _capabilities(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


# -- usage and prices -------------------------------------------------------------------------


@frozen
class Usage:
    """Token counts of one provider response, or a sum of several."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@frozen
class Price:
    """US dollars per million tokens, with where and when the numbers were taken from."""

    input: float
    output: float
    cache_write: float = 0.0
    cache_read: float = 0.0
    source: str = ""
    as_of: str = ""

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        ) / 1_000_000


class Capability(enum.StrEnum):
    """Well-known capability names. Plugins may declare others as plain strings."""

    STREAMING = "streaming"
    TOOLS = "tools"
    VISION = "vision"
    JSON_SCHEMA = "json_schema"
    REASONING = "reasoning"
    PROMPT_CACHE = "prompt_cache"
    CANCEL = "cancel"
    SYSTEM_PROMPT = "system_prompt"
    USAGE = "usage"


@frozen
class ModelInfo:
    name: str
    context_window: int
    max_output_tokens: int
    price: Price | None = None
    capabilities: frozenset[str] = field(factory=frozenset, converter=_capabilities)


# -- content ----------------------------------------------------------------------------------


@frozen
class TextBlock:
    text: str
    type: Literal["text"] = "text"


@frozen
class ImageBlock:
    """An image, inline (``data`` base64 with ``media_type``) or by ``url``."""

    media_type: str = ""
    data: str | None = None
    url: str | None = None
    type: Literal["image"] = "image"


@frozen
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any] = field(factory=dict)
    type: Literal["tool_use"] = "tool_use"


@frozen
class ToolResultBlock:
    tool_use_id: str
    content: str | list[Any] = ""
    is_error: bool = False
    type: Literal["tool_result"] = "tool_result"


@frozen
class ThinkingBlock:
    """Model reasoning. ``signature`` must be replayed unchanged on the next turn."""

    thinking: str
    signature: str = ""
    type: Literal["thinking"] = "thinking"


@frozen
class RedactedThinkingBlock:
    data: str
    type: Literal["redacted_thinking"] = "redacted_thinking"


ContentBlock: TypeAlias = (
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
)

Role: TypeAlias = Literal["user", "assistant"]


@frozen
class Message:
    role: Role
    content: tuple[ContentBlock, ...] = field(converter=_blocks)

    @classmethod
    def user(cls, text: str) -> Message:
        return cls("user", (TextBlock(text),))

    @classmethod
    def assistant(cls, text: str) -> Message:
        return cls("assistant", (TextBlock(text),))

    @property
    def text(self) -> str:
        """The concatenated text blocks: what a person would call the answer."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> tuple[ToolUseBlock, ...]:
        return tuple(b for b in self.content if isinstance(b, ToolUseBlock))

    @property
    def tool_results(self) -> tuple[ToolResultBlock, ...]:
        return tuple(b for b in self.content if isinstance(b, ToolResultBlock))


@frozen
class ToolSpec:
    """A tool the model may call: JSON schema for its input."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(factory=lambda: {"type": "object", "properties": {}})


# -- provider requests and normalized stream -------------------------------------------------


@frozen
class ProviderRequest:
    """What the kernel asks a provider for. Hooks may return an evolved copy."""

    model: str
    messages: tuple[Message, ...] = field(converter=_messages)
    system: str | None = None
    tools: tuple[ToolSpec, ...] = field(default=(), converter=_tool_specs)
    max_tokens: int | None = None
    temperature: float | None = None
    response_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(factory=dict, converter=_freeze_mapping)
    options: dict[str, Any] = field(factory=dict, converter=_freeze_mapping)


@frozen
class TextDelta:
    """A piece of answer text; ``index`` is the position of its block in the final message."""

    text: str
    index: int = 0


@frozen
class ThinkingDelta:
    text: str
    index: int = 0


@frozen
class UsageUpdate:
    """Cumulative usage of the response so far (providers report it more than once)."""

    usage: Usage


@frozen
class MessageDone:
    """The complete assistant message; always the last item a provider yields."""

    message: Message
    stop_reason: str = "end_turn"
    model: str | None = None
    usage: Usage | None = None
    response_id: str | None = None


StreamEvent: TypeAlias = TextDelta | ThinkingDelta | UsageUpdate | MessageDone
