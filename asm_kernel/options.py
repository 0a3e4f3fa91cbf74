"""Run options: one typed, frozen record, validated when a run is submitted.

Every way to start a run (``kernel.run``, ``stream_run``, ``runtime.submit_run``, the CLI)
builds a :class:`RunOptions` from its keyword arguments first, so a bad value
(``max_turns=0``, ``timeout=-5``, an unknown capability) is refused with a
:class:`~asm_kernel.errors.ValidationError` naming the option **before anything is stored**. A
queued run keeps its options with it (JSON in the run's metadata under :data:`OPTIONS_KEY`) and
executes the same way after a restart; what a run leaves unset comes from ``[run]`` in the config
when it executes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from attrs import field, frozen

from .context.settings import ContextOptions
from .errors import ValidationError
from .model import ToolSpec

__all__ = ["RunOptions", "OPTIONS_KEY", "OPTION_NAMES"]

#: Run metadata key under which a stored run keeps its options.
OPTIONS_KEY = "asm.options"


def _names(value: Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ValidationError(f"expected a list of names, got the string {value!r:.40}", hint='write ["name"]')
    out = tuple(value)
    for i, name in enumerate(out):
        if not isinstance(name, str) or not name:
            raise ValidationError(f"item {i} must be a non-empty string, got {name!r:.40}")
    return out


def _tools(value: Iterable[Any] | None) -> tuple[ToolSpec, ...]:
    if value is None:
        return ()
    out = []
    for i, tool in enumerate(value):
        if isinstance(tool, Mapping):
            try:
                tool = ToolSpec(**tool)
            except TypeError as exc:
                raise ValidationError(f"item {i} is not a tool spec: {exc}") from None
        if not isinstance(tool, ToolSpec) or not isinstance(tool.name, str) or not tool.name:
            raise ValidationError(f"item {i} must be a ToolSpec with a name, got {type(tool).__name__}")
        out.append(tool)
    return tuple(out)


def _schema(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(f"must be a JSON schema object, got {type(value).__name__}")
    return dict(value)


def _context(value: Any) -> ContextOptions | None:
    if value is None or isinstance(value, ContextOptions):
        return value
    try:
        return ContextOptions(value)
    except ValidationError as exc:
        where = f"{exc.path}: " if exc.path else ""
        raise ValidationError(f"{where}{exc.message}", hint=exc.hint) from None


def _int_at_least_one(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError(f"must be an integer >= 1, got {value!r:.40}")


def _positive_seconds(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0
    ):
        raise ValidationError(f"must be a positive number of seconds, got {value!r:.40}")


def _temperature(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
    ):
        raise ValidationError(f"must be a finite number >= 0, got {value!r:.40}")


def _optional_str(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"must be a string, got {type(value).__name__}")


@frozen
class RunOptions:
    """How one run executes. Unset (None/empty) fields fall back to ``[run]`` in the config.

    * ``system`` — the system prompt;
    * ``tools`` — tool specs the *caller* answers (beside the kernel's own tools);
    * ``max_tokens``, ``temperature`` — passed to the provider;
    * ``max_turns`` — model calls per run when tools are involved;
    * ``timeout`` — seconds for the whole run; on expiry it ends ``timed_out``;
    * ``response_schema`` — a JSON schema the answer must follow (``json_schema`` capability);
    * ``requires`` / ``prefers`` — capability names for negotiation;
    * ``exclude`` — provider names this run must not use;
    * ``context`` — ``[context]`` keys for this run's windows (``{"max_messages": 20}``), over the config's.
    """

    system: str | None = field(default=None, validator=_optional_str)
    tools: tuple[ToolSpec, ...] = field(default=(), converter=_tools)
    max_tokens: int | None = field(default=None, validator=_int_at_least_one)
    temperature: float | None = field(default=None, validator=_temperature)
    max_turns: int | None = field(default=None, validator=_int_at_least_one)
    timeout: float | None = field(default=None, validator=_positive_seconds)
    response_schema: dict[str, Any] | None = field(default=None, converter=_schema)
    requires: tuple[str, ...] = field(default=(), converter=_names)
    prefers: tuple[str, ...] = field(default=(), converter=_names)
    exclude: tuple[str, ...] = field(default=(), converter=_names)
    context: ContextOptions | None = field(default=None, converter=_context)

    @classmethod
    def build(cls, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> RunOptions:
        """Options from keyword arguments (None means unset), refusing unknown names and bad values."""
        given = {**dict(values or {}), **kwargs}
        unknown = sorted(set(given) - set(OPTION_NAMES))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], OPTION_NAMES, n=1)
            raise ValidationError(
                f"unknown run option {unknown[0]!r}",
                path=unknown[0],
                hint=f'did you mean "{close[0]}"?' if close else f"run options are: {', '.join(OPTION_NAMES)}",
            )
        present = {k: v for k, v in given.items() if v is not None}
        for name, value in present.items():
            try:
                cls(**{name: value})
            except ValidationError as exc:
                raise ValidationError(exc.message, path=name, hint=exc.hint) from None
            except (TypeError, ValueError) as exc:
                raise ValidationError(str(exc), path=name) from None
        return cls(**present)

    def over(self, base: RunOptions) -> RunOptions:
        """These options, with ``base`` filling in what these leave unset."""
        changes = {
            f.name: getattr(self, f.name) for f in attrs.fields(RunOptions) if getattr(self, f.name) not in (None, ())
        }
        return attrs.evolve(base, **changes)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe data of the set options (what a queued run stores)."""
        from .serialization import to_dict

        out: dict[str, Any] = {}
        for f in attrs.fields(RunOptions):
            value = getattr(self, f.name)
            if value in (None, ()):
                continue
            if isinstance(value, ContextOptions):
                if value.values:
                    out[f.name] = value.to_json()
                continue
            out[f.name] = (
                [to_dict(t) for t in value]
                if f.name == "tools"
                else (list(value) if isinstance(value, tuple) else value)
            )
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RunOptions:
        return cls.build(dict(data or {}))


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in attrs.fields(RunOptions))
