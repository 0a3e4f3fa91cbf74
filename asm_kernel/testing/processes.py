"""Helpers for tests that start ``asm`` as a real process and signal it."""

from __future__ import annotations

import signal

__all__ = ["default_signals"]


def default_signals() -> None:
    """A ``preexec_fn`` giving the child the default SIGINT and SIGTERM actions.

    A non-interactive shell starts background commands (a CI script's ``cmd &``) with SIGINT
    ignored, and everything they start inherits that. Python then installs no
    ``KeyboardInterrupt`` handler, so ``asm`` rightly ignores Ctrl-C, and a test that
    interrupts its child would wait for it forever. Pass this to :class:`subprocess.Popen` so
    the child sees a terminal's signals, whatever the test runner inherited.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
