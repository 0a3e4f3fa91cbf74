"""Checks of the config that need the built components (``asm config check`` and ``asm run``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, ValidationError
from .records import RunDefaults

__all__ = ["check_run_defaults"]


def check_run_defaults(run: RunDefaults, providers: Mapping[str, Any]) -> None:
    """Refuse ``[run]`` capability names no configured provider or the vocabulary knows.

    Raises a :class:`ConfigError` at ``run.requires[i]``/``run.prefers[i]`` with a did-you-mean.
    """
    from ..routing import check_capability_names

    for key in ("requires", "prefers"):
        try:
            check_capability_names(getattr(run, key), providers, f"run.{key}")
        except ValidationError as exc:
            raise ConfigError(exc.message, path=exc.path, hint=exc.hint) from None
