"""How a window is cut: ``[context]`` in the config, overridden per run by ``context=``.

:class:`ContextSettings` is both: the config section structures into it (defaults filled in), and
a run's ``context={...}`` option is a :class:`ContextOptions` whose set fields replace the
config's (:func:`resolve`). Every limit that is set applies: the window is the newest turns that
satisfy all of them, plus the pinned turns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs
from attrs import field, frozen

from ..errors import ValidationError

__all__ = ["ContextSettings", "ContextOptions", "Strategy", "parse_age", "resolve", "STRATEGIES"]

Strategy = Literal["full", "window", "summarize"]
STRATEGIES: tuple[str, ...] = ("full", "window", "summarize")

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(value: float | int | str | None) -> float | None:
    """Seconds from a number of seconds or a duration like ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("max_age must be a number of seconds or a duration such as \"7d\", got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _AGE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f'max_age must be a number of seconds or a duration such as "30m" or "7d", got {value!r}')
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"max_age must be a positive duration, got {value!r}")
    return seconds


def _max_tokens(instance: Any, attribute: Any, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"max_tokens must be an integer of tokens or a fraction in (0, 1], got {value!r}")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"max_tokens must be an integer of at least 1 (tokens), got {value}")
    if isinstance(value, float) and not (0 < value <= 1):
        raise ValueError(
            f"max_tokens must be a fraction in (0, 1] of the model's window when it is a decimal, got {value}"
        )


def _optional_positive_int(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{attribute.name} must be an integer of at least 1, got {value!r}")


def _fraction(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not (0 < float(value) <= 1)
    ):
        raise ValueError(f"{attribute.name} must be a fraction in (0, 1], got {value!r}")


def _age(instance: Any, attribute: Any, value: Any) -> None:
    parse_age(value)


def _strategy(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and value not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {value!r}")


def _name(instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{attribute.name} must be a non-empty string")


@frozen
class ContextSettings:
    """``[context]``: how the window of each model call is cut. See docs/guides/context.md.

    * ``strategy`` — ``window`` (drop the oldest turns that do not fit), ``summarize`` (replace
      the oldest turns by a summary when the window reaches ``compact_at``, then drop what still
      does not fit) or ``full`` (send everything; the request is still checked before it is sent);
    * ``max_tokens`` — the window's budget: tokens (an integer) or a fraction of the model's context
      window after ``reserve_output`` (a decimal in (0, 1]); default the whole window;
    * ``max_messages`` — messages sent at most; ``max_age`` — leave out turns older than this
      (seconds, or ``"30m"``, ``"12h"``, ``"7d"``); the newest turn and pinned turns are always kept;
    * ``reserve_output`` — tokens kept free for the answer (default: the run's ``max_tokens``, else
      8,192 capped at the model's max output and a quarter of its window);
    * ``compact_at`` / ``compact_to`` — summarize when the transcript reaches this fraction of the
      budget, down to that fraction; ``keep_recent`` — newest turns never summarized;
    * ``summarizer`` / ``summary_model`` / ``summary_max_tokens`` / ``summary_prompt`` — who writes
      summaries (a configured provider; default the run's) and how;
    * ``exact_count`` — ask a provider that can count tokens exactly when the estimate says the
      transcript does not fit.
    """

    strategy: Strategy = field(default="window", validator=_strategy)
    max_tokens: int | float | None = field(default=None, validator=_max_tokens)
    max_messages: int | None = field(default=None, validator=_optional_positive_int)
    max_age: float | str | None = field(default=None, validator=_age)
    reserve_output: int | None = field(default=None, validator=_optional_positive_int)
    compact_at: float = field(default=0.8, validator=_fraction)
    compact_to: float = field(default=0.5, validator=_fraction)
    keep_recent: int = field(default=1, validator=_optional_positive_int)
    summarizer: str | None = field(default=None, validator=_name)
    summary_model: str | None = field(default=None, validator=_name)
    summary_max_tokens: int = field(default=1024, validator=_optional_positive_int)
    summary_prompt: str | None = None
    exact_count: bool = True

    def __attrs_post_init__(self) -> None:
        if self.compact_to > self.compact_at:
            raise ValueError(f"compact_to ({self.compact_to}) must not be above compact_at ({self.compact_at})")

    @property
    def age_seconds(self) -> float | None:
        return parse_age(self.max_age)


#: Field names a run's ``context=`` may set.
OPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in attrs.fields(ContextSettings))


def _options(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, ContextOptions):
        return dict(value.values)
    if not isinstance(value, Mapping):
        raise ValidationError(f"context must be a table of [context] keys, got {type(value).__name__}")
    unknown = sorted(set(value) - set(OPTION_FIELDS))
    if unknown:
        from ..config import did_you_mean

        raise ValidationError(f"unknown context option {unknown[0]!r}", path=unknown[0],
                              hint=did_you_mean(unknown[0], OPTION_FIELDS))
    present = {k: v for k, v in value.items() if v is not None}
    for key, item in present.items():
        try:
            attrs.evolve(ContextSettings(), **{key: item})
        except (ValueError, TypeError) as exc:
            raise ValidationError(str(exc), path=key) from None
    return present


@frozen
class ContextOptions:
    """A run's ``context=`` option: the ``[context]`` keys it sets (the others come from the config)."""

    values: dict[str, Any] = field(factory=dict, converter=_options)

    def to_json(self) -> dict[str, Any]:
        return dict(self.values)


def resolve(config: ContextSettings, options: ContextOptions | None) -> ContextSettings:
    """The config's settings with the run's set fields in their place (checked together)."""
    if options is None or not options.values:
        return config
    try:
        return attrs.evolve(config, **options.values)
    except (ValueError, TypeError) as exc:
        raise ValidationError(str(exc), path="context") from None
