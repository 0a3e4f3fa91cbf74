"""Testing helpers for asm and its plugins (opt-in: import what you need).

* :class:`StoreConformance`, :class:`ProviderConformance` and :class:`PolicyConformance`:
  contract suites every store, provider and policy runs unchanged;
* :class:`FaultyStore`: fault injection at the N-th write of any store;
* :func:`assert_record_and_log_agree`: the store contract's invariants for one session;
* :func:`run_async`: run a coroutine from a synchronous test.

pytest is needed only when you use this package.
"""

from __future__ import annotations

from ._store_faults import assert_record_and_log_agree
from .faults import FaultMode, FaultyStore
from .policies import PolicyConformance
from .providers import ProviderConformance
from .stores import StoreConformance, run_async

__all__ = [
    "StoreConformance",
    "ProviderConformance",
    "PolicyConformance",
    "FaultyStore",
    "FaultMode",
    "assert_record_and_log_agree",
    "run_async",
]
