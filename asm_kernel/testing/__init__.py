"""Testing helpers for asm and its plugins (opt-in: import what you need).

* :class:`StoreConformance` and :class:`ProviderConformance`: contract suites every store and
  provider runs unchanged;
* :func:`run_async`: run a coroutine from a synchronous test.

pytest is needed only when you use this package.
"""

from __future__ import annotations

from .providers import ProviderConformance
from .stores import StoreConformance, run_async

__all__ = ["StoreConformance", "ProviderConformance", "run_async"]
