"""The store conformance suite: every store runs these tests unchanged.

Subclass :class:`StoreConformance` in your test module and provide a ``make_store`` fixture
returning a zero-argument callable that builds a *new, unopened* store. For a durable store set
``durable = True``: calling the factory again must open the same data (the suite closes the
first store and reopens). Tests are plain synchronous pytest tests (each runs its own event
loop), so no async pytest plugin is needed::

    class TestMyStore(StoreConformance):
        durable = True

        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "db")

The suite covers records (:mod:`._store_records`), the log (:mod:`._store_log`), units,
conditions and leases (:mod:`._store_units`) and, through a real kernel, fault injection at
every write of a run (:mod:`._store_faults`).
"""

from __future__ import annotations

from ._store_approvals import StoreApprovalTests
from ._store_base import create_run, create_session, events_for, replace_run, replace_session, run_async
from ._store_faults import StoreFaultTests
from ._store_log import StoreLogTests, malformed_events
from ._store_records import StoreRecordTests
from ._store_units import StoreClaimTests, StoreLeaseTests, StoreUnitTests

__all__ = [
    "StoreConformance",
    "run_async",
    "create_session",
    "create_run",
    "replace_run",
    "replace_session",
    "events_for",
    "malformed_events",
]


class StoreConformance(
    StoreRecordTests,
    StoreLogTests,
    StoreUnitTests,
    StoreLeaseTests,
    StoreClaimTests,
    StoreFaultTests,
    StoreApprovalTests,
):
    """Contract tests for :class:`asm_kernel.interfaces.Store` implementations."""
