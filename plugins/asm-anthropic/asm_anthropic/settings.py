"""Settings of ``use = "anthropic"`` providers, validated by the kernel with path-precise errors.

This module is light (attrs and the kernel only) so the plugin can be discovered without
importing the anthropic SDK.
"""

from __future__ import annotations

from typing import Any, Literal

from attrs import field, frozen

from asm_kernel.config import Secret
from asm_kernel.provider_kit import url_repr

__all__ = ["AnthropicSettings", "ModelOverride", "DEFAULT_MODEL"]

#: The model used when the config names none: the current Sonnet (see docs/plugins/anthropic.md).
DEFAULT_MODEL = "claude-sonnet-5-5"


def _positive(instance: Any, attribute: Any, value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _budget(instance: Any, attribute: Any, value: int | None) -> None:
    if value is not None and value < 1024:
        raise ValueError(f"thinking_budget must be at least 1024 tokens (the API's minimum), got {value}")


@frozen
class ModelOverride:
    """``[providers.models.<name>]``: declare (or correct) a model's limits and prices.

    Prices are US dollars per million tokens. Use it for models newer than this plugin.
    """

    context_window: int = field(default=200_000, validator=_positive)
    max_output_tokens: int = field(default=8_192, validator=_positive)
    input_price: float | None = None
    output_price: float | None = None
    cache_write_price: float | None = None
    cache_read_price: float | None = None


@frozen
class AnthropicSettings:
    """Every key of a ``[[providers]]`` table with ``use = "anthropic"``.

    ``api_key`` unset means the ``ANTHROPIC_API_KEY`` environment variable; it is read when the
    first request is made, so a missing key fails the run (not the whole kernel) with an error
    that names both places to set it.
    """

    model: str = DEFAULT_MODEL
    api_key: Secret | None = None
    base_url: str | None = field(default=None, repr=url_repr)
    #: seconds to establish the TCP/TLS connection
    connect_timeout: float = field(default=10.0, validator=_positive)
    #: seconds of silence allowed between two stream events (pings count) or before the response
    read_timeout: float = field(default=120.0, validator=_positive)
    #: seconds for the whole response, first byte to message_stop (None: unbounded)
    total_timeout: float | None = field(default=600.0, validator=_positive)
    #: extra HTTP headers sent with every request (e.g. ``anthropic-beta``)
    headers: dict[str, str] = field(factory=dict, repr=lambda h: repr(dict.fromkeys(h, "********")))
    #: ``max_tokens`` when the run sets none (the Messages API requires one)
    max_tokens: int = field(default=4096, validator=_positive)
    #: mark the system prompt and the last user message with ``cache_control``
    prompt_cache: bool = False
    #: ``"5m"`` (default) or ``"1h"``: the cache breakpoints' time to live
    cache_ttl: Literal["5m", "1h"] = "5m"
    #: ``"default"`` sends no thinking config (the model's default), ``"adaptive"`` lets the model
    #: decide, ``"enabled"`` is manual extended thinking with ``thinking_budget``, ``"disabled"``
    thinking: Literal["default", "adaptive", "enabled", "disabled"] = "default"
    #: budget for ``thinking = "enabled"``; setting it alone implies ``thinking = "enabled"``
    thinking_budget: int | None = field(default=None, validator=_budget)
    #: ``"summarized"`` or ``"omitted"`` thinking text (the model's default when unset)
    thinking_display: Literal["summarized", "omitted"] | None = None
    #: ``output_config.effort`` for models that support it
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    #: a response longer than this many characters (text + thinking + tool input) is refused
    max_response_chars: int = field(default=4_000_000, validator=_positive)
    #: a response with more stream events than this is refused
    max_events: int = field(default=1_000_000, validator=_positive)
    #: limits and prices for models this plugin does not know, or corrections
    models: dict[str, ModelOverride] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.thinking == "enabled" and self.thinking_budget is None:
            raise ValueError('thinking = "enabled" needs thinking_budget (at least 1024)')
        if self.thinking_budget is not None and self.thinking not in ("default", "enabled"):
            raise ValueError(f'thinking_budget is only used with thinking = "enabled", not {self.thinking!r}')
        if not self.model:
            raise ValueError("model must not be empty")

    @property
    def thinking_mode(self) -> str:
        if self.thinking == "default" and self.thinking_budget is not None:
            return "enabled"
        return self.thinking
