"""Canary checks: a fake server echoes a secret back; nothing asm produced may contain it."""

from __future__ import annotations

import io
import json
import logging
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ...errors import AsmError
from ...secrets import RedactingFilter

__all__ = ["error_texts", "assert_no_secrets", "captured_logs"]


def error_texts(error: BaseException) -> list[str]:
    """Every rendering of ``error`` a user, a log or a store can see: ``str``, ``repr``, the
    formatted traceback with its chain and, for asm errors, ``to_dict()`` and every field."""
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, AsmError):
        texts += [json.dumps(error.to_dict(), default=str), error.message, error.hint or "", repr(error.details)]
        texts += [repr(getattr(error, name, None)) for name in ("request_id", "usage")]
    return texts


def assert_no_secrets(texts: Iterable[str], *secrets: str) -> None:
    """Fail, quoting the text, if any of ``secrets`` appears in any of ``texts``."""
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked into: {text[:2000]}"


@contextmanager
def captured_logs(*names: str, level: int = logging.DEBUG) -> Iterator[io.StringIO]:
    """What the loggers ``names`` write at ``level``, through a handler with a
    :class:`~asm_kernel.secrets.RedactingFilter` (as the CLI's handler has)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
        logger.addHandler(handler)
    try:
        yield out
    finally:
        for logger, previous in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(previous)
