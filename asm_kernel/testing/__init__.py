"""Testing helpers for asm and its plugins (opt-in: import what you need).

* :class:`StoreConformance`, :class:`ProviderConformance` and :class:`PolicyConformance`:
  contract suites every store, provider and policy runs unchanged;
* :class:`FaultyStore`: fault injection at the N-th write of any store;
* :func:`assert_record_and_log_agree`: the store contract's invariants for one session;
* :func:`run_async`: run a coroutine from a synchronous test;
* :mod:`asm_kernel.testing.fake_http`: the base of wire-faithful fake provider servers
  (:class:`FakeHTTPServer` and the responses it scripts);
* :mod:`asm_kernel.testing.backends`: the stores a suite can run its cases on here, fresh
  ``[store]`` tables on them, and a child process to kill -9 after its N-th acknowledged write.

pytest is needed only for the conformance suites; they are imported on first use, so the fake
servers and the fault injector work without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .fake_http import FakeHTTPServer, JsonResponse, RawResponse, RecordedRequest, SSEEvent, SSEResponse, Stall
from .faults import FaultMode, FaultyStore

if TYPE_CHECKING:
    from ._store_faults import assert_record_and_log_agree
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
    "FakeHTTPServer",
    "RecordedRequest",
    "JsonResponse",
    "SSEEvent",
    "SSEResponse",
    "RawResponse",
    "Stall",
]

_NEEDS_PYTEST = {
    "PolicyConformance": "policies",
    "ProviderConformance": "providers",
    "StoreConformance": "stores",
    "run_async": "stores",
    "assert_record_and_log_agree": "_store_faults",
}


def __getattr__(name: str) -> Any:
    module = _NEEDS_PYTEST.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
