"""The CLI's stderr logging: one concise line per record, secrets redacted.

asm's own loggers (``asm.*``) show INFO by default, so a command says what it is doing when it
has to wait (the DuckDB store logs "store file ... is in use by ... (PID n); retrying" the
moment it finds the file held); ``--quiet`` keeps warnings and errors only, ``--verbose`` adds
debug messages. Other libraries' loggers show warnings and errors. Python warnings are logged
the same way instead of as a two-line source excerpt.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from ..secrets import install_log_filter
from .api import printable

__all__ = ["stderr_logging", "verbosity_of"]


def verbosity_of(argv: Sequence[str]) -> int:
    """-1 for ``--quiet``/``-q``, 1 for ``--verbose``/``-v``, else 0 (the last one given wins)."""
    level = 0
    for arg in argv:
        if arg == "--":
            break
        if arg in ("--quiet", "-q"):
            level = -1
        elif arg in ("--verbose", "-v"):
            level = 1
    return level


class _LineFormatter(logging.Formatter):
    def __init__(self, stream: Any, verbose: bool) -> None:
        super().__init__()
        self._stream = stream
        self._verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = f"{text}: {type(exc).__name__}: {exc}"
            if self._verbose:
                text = f"{text}\n{self.formatException(record.exc_info)}"
        return printable(f"asm: {text}", self._stream)


@contextlib.contextmanager
def stderr_logging(verbosity: int = 0) -> Iterator[logging.Handler]:
    """Log to the current ``sys.stderr`` for the duration of one command, then restore logging."""
    stream = sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_LineFormatter(stream, verbose=verbosity > 0))
    install_log_filter(handler)
    root, asm = logging.getLogger(), logging.getLogger("asm")
    saved = (root.level, asm.level)

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        asm.warning("%s", message)

    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    asm.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    try:
        # The command decides how warnings look: one line each, whatever filters the process
        # that called main() set (a test suite that turns warnings into errors, say).
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        asm.setLevel(saved[1])
