"""``use = "log"``: a telemetry sink that writes one line per stored event to Python logging.

Payloads are not logged by default (they hold conversation text); ``payloads = true`` adds them.
"""

from __future__ import annotations

import logging
from typing import Any

from attrs import frozen

from .. import hookimpl
from ..errors import ConfigError
from ..model import Event
from ..serialization import dumps

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


@frozen
class LogSettings:
    logger: str = "asm.events"
    level: str = "info"
    payloads: bool = False


class LogSink:
    def __init__(self, settings: LogSettings | None = None) -> None:
        self.settings = settings or LogSettings()
        self._logger = logging.getLogger(self.settings.logger)
        self._level = _LEVELS[self.settings.level]

    def emit(self, event: Event) -> None:
        if not self._logger.isEnabledFor(self._level):
            return
        extra = f" payload={dumps(event.payload)}" if self.settings.payloads else ""
        self._logger.log(
            self._level,
            "session=%s seq=%d run=%s type=%s%s",
            event.session_id,
            event.seq,
            event.run_id or "-",
            event.type,
            extra,
        )

    def close(self) -> None:
        return None


def build(settings: LogSettings, context: Any) -> LogSink:
    if settings.level not in _LEVELS:
        raise ConfigError(
            f"unknown level {settings.level!r}", path=f"{context.path}.level", hint=f"use one of {', '.join(_LEVELS)}"
        )
    return LogSink(settings)


@hookimpl
def asm_register_telemetry(register: Any) -> None:
    register("log", build, settings=LogSettings, description="one log line per stored event")
