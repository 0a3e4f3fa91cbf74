"""``use = "scripted"``: a provider that plays a script, for tests, demos and fault drills.

A script is a list of *turns*; each call to ``stream`` plays the next turn (the last one repeats
when the script runs out, unless ``cycle = true``). A turn is a list of steps:

``{text = "..."}``                  stream text (split into ``chunk_size`` deltas)
``{thinking = "...", signature = "..."}``  a reasoning block
``{tool_use = {name = "x", input = {...}, id = "..."}}``  request a tool call
``{usage = {input_tokens = 10, output_tokens = 3}}``      report usage
``{delay = 0.5}``                   sleep (seconds)
``{error = "provider.rate_limited", message = "...", retry_after = 1.0}``  raise that error
``{stop_reason = "max_tokens"}``    the stop reason of the final message

Errors are given by their stable code (``asm_kernel.errors.error_codes()``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

from attrs import field, frozen

from .. import hookimpl
from ..context.tokens import estimate_messages, estimate_text
from ..errors import ConfigError, ProviderError, error_codes
from ..model import (
    ContentBlock,
    Message,
    MessageDone,
    ModelInfo,
    ProviderRequest,
    StreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    UsageUpdate,
    new_id,
)

_STEP_KEYS = {
    "text",
    "thinking",
    "signature",
    "tool_use",
    "usage",
    "delay",
    "error",
    "message",
    "retry_after",
    "stop_reason",
    "status",
}


@frozen
class ScriptedSettings:
    turns: list[list[dict[str, Any]]] = field(factory=list)
    model: str = "scripted-1"
    chunk_size: int = 16
    cycle: bool = False
    capabilities: list[str] = field(
        factory=lambda: ["streaming", "tools", "reasoning", "cancel", "system_prompt", "usage"]
    )
    context_window: int = 200_000


def _check_script(turns: Sequence[Any], path: str) -> None:
    if not isinstance(turns, Sequence) or isinstance(turns, str):
        raise ConfigError("turns must be a list of turns", path=path)
    codes = error_codes()
    for t, turn in enumerate(turns):
        if not isinstance(turn, Sequence) or isinstance(turn, str):
            raise ConfigError("each turn must be a list of steps", path=f"{path}[{t}]")
        for s, step in enumerate(turn):
            where = f"{path}[{t}][{s}]"
            if not isinstance(step, dict):
                raise ConfigError("each step must be a table", path=where)
            unknown = set(step) - _STEP_KEYS
            if unknown:
                raise ConfigError(
                    f"unknown step key {sorted(unknown)[0]!r}",
                    path=where,
                    hint=f"step keys: {', '.join(sorted(_STEP_KEYS))}",
                )
            if "error" in step:
                code = step["error"]
                if code not in codes or not issubclass(codes[code], ProviderError):
                    provider_codes = sorted(c for c, k in codes.items() if issubclass(k, ProviderError))
                    raise ConfigError(
                        f"unknown provider error code {code!r}",
                        path=f"{where}.error",
                        hint=f"use one of {', '.join(provider_codes)}",
                    )
            if "tool_use" in step and not isinstance(step["tool_use"], dict):
                raise ConfigError("tool_use must be a table with name and input", path=f"{where}.tool_use")


class ScriptedProvider:
    """Plays scripted turns; records every request it was given in :attr:`requests`."""

    def __init__(
        self,
        turns: Sequence[Sequence[dict[str, Any]]] | None = None,
        *,
        settings: ScriptedSettings | None = None,
        name: str = "scripted",
    ) -> None:
        if settings is None:
            settings = ScriptedSettings(turns=[list(t) for t in (turns or [])])
        _check_script(settings.turns, "turns")
        self.settings = settings
        self.name = name
        self.requests: list[ProviderRequest] = []
        self._turn = itertools.count()

    def __repr__(self) -> str:
        return f"ScriptedProvider(name={self.name!r}, turns={len(self.settings.turns)})"

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(self.settings.capabilities)

    @property
    def models(self) -> Sequence[ModelInfo]:
        return (ModelInfo(self.settings.model, self.settings.context_window, self.settings.context_window),)

    @property
    def default_model(self) -> str:
        return self.settings.model

    def _next_turn(self) -> Sequence[dict[str, Any]]:
        turns = self.settings.turns
        if not turns:
            return [{"text": "ok"}]
        i = next(self._turn)
        if self.settings.cycle:
            return turns[i % len(turns)]
        return turns[min(i, len(turns) - 1)]

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        blocks: list[ContentBlock] = []
        text_parts: list[str] = []
        usage: Usage | None = None
        stop_reason: str | None = None
        output_started = False
        for step in self._next_turn():
            if "delay" in step:
                await asyncio.sleep(float(step["delay"]))
            if "error" in step:
                cls = error_codes()[step["error"]]
                raise cls(
                    step.get("message", f"scripted {step['error']}"),
                    provider=self.name,
                    model=request.model,
                    status=step.get("status"),
                    retry_after=step.get("retry_after"),
                    output_started=output_started,
                )
            if "text" in step:
                text = str(step["text"])
                size = max(1, self.settings.chunk_size)
                for start in range(0, len(text), size):
                    output_started = True
                    yield TextDelta(text[start : start + size])
                text_parts.append(text)
            if "thinking" in step:
                if text_parts:
                    blocks.append(TextBlock("".join(text_parts)))
                    text_parts = []
                yield ThinkingDelta(str(step["thinking"]))
                blocks.append(ThinkingBlock(str(step["thinking"]), str(step.get("signature", ""))))
            if "tool_use" in step:
                if text_parts:
                    blocks.append(TextBlock("".join(text_parts)))
                    text_parts = []
                call = step["tool_use"]
                blocks.append(
                    ToolUseBlock(
                        str(call.get("id") or new_id("toolu_")), str(call["name"]), dict(call.get("input", {}))
                    )
                )
                stop_reason = stop_reason or "tool_use"
            if "usage" in step:
                usage = Usage(**step["usage"])
                yield UsageUpdate(usage)
            if "stop_reason" in step:
                stop_reason = str(step["stop_reason"])
        if text_parts:
            blocks.append(TextBlock("".join(text_parts)))
        message = Message("assistant", tuple(blocks))
        if usage is None:
            usage = Usage(
                input_tokens=estimate_messages(request.messages, request.system),
                output_tokens=estimate_text(message.text),
            )
            yield UsageUpdate(usage)
        yield MessageDone(message, stop_reason=stop_reason or "end_turn", model=request.model, usage=usage)

    async def aclose(self) -> None:
        return None


def build(settings: ScriptedSettings, context: Any) -> ScriptedProvider:
    _check_script(settings.turns, f"{context.path}.turns")
    return ScriptedProvider(settings=settings, name=context.name)


@hookimpl
def asm_register_providers(register: Any) -> None:
    register("scripted", build, settings=ScriptedSettings, description="plays a scripted list of turns")
