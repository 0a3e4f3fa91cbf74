"""Leases are judged by the database's clock, whatever the writer's clock says."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from asm_kernel import model
from asm_kernel.model import Fence, Run, RunStatus, Session
from asm_kernel.writes import RunWrite, WriteUnit
from pg_helpers import sql, store_for


def _db_now() -> datetime:
    return sql("SELECT clock_timestamp()")[0][0]  # type: ignore[no-any-return]


@pytest.fixture
def skewed_client(monkeypatch: pytest.MonkeyPatch) -> timedelta:
    """This process's clock runs a day ahead (as on a machine with a broken NTP)."""
    skew = timedelta(days=1)
    real = model.utcnow
    monkeypatch.setattr(model, "utcnow", lambda: real() + skew)
    return skew


async def test_grants_renewals_and_claims_use_the_database_clock(pg_schema: str, skewed_client: timedelta) -> None:
    store = store_for(pg_schema)
    await store.open()
    try:
        s = Session()
        await store.commit(WriteUnit(s.id, new_session=s))
        run = Run(session_id=s.id)
        await store.commit(WriteUnit(s.id, new_runs=[run]))
        before = _db_now()
        (claimed,) = await store.claim_runs("w1", limit=1, lease_ttl=60)
        after = _db_now()
        assert claimed.lease_expires_at is not None
        assert before + timedelta(seconds=60) <= claimed.lease_expires_at <= after + timedelta(seconds=60)
        started = claimed.transition(RunStatus.RUNNING)
        assert started.started_at is not None and started.started_at > after + skewed_client / 2  # the client's time
        before = _db_now()
        held = (
            await store.commit(
                WriteUnit(
                    s.id,
                    runs=[RunWrite(started, expect_status=RunStatus.PENDING, expect_token=1, lease_ttl=120)],
                )
            )
        ).run(run.id)
        after = _db_now()
        assert held.lease_expires_at is not None
        assert before + timedelta(seconds=120) <= held.lease_expires_at <= after + timedelta(seconds=120)
        before = _db_now()
        assert await store.renew_leases([Fence(run.id, 1)], 300) == []
        after = _db_now()
        renewed = (await store.get_run(run.id)).lease_expires_at
        assert renewed is not None
        assert before + timedelta(seconds=300) <= renewed <= after + timedelta(seconds=300)
        # A client a day ahead would call this lease long expired; the store does not.
        assert await store.list_runs(lease_expired=True) == []
        assert [r.id for r in await store.list_runs(lease_expired=False)] == [run.id]
    finally:
        await store.close()


async def test_a_lease_expires_when_the_database_says_so(pg_schema: str) -> None:
    store = store_for(pg_schema)
    await store.open()
    try:
        s = Session()
        run = Run(session_id=s.id)
        await store.commit(WriteUnit(s.id, new_session=s, new_runs=[run]))
        started = run.transition(RunStatus.RUNNING, owner="w", lease_token=1)
        held = (await store.commit(WriteUnit(s.id, runs=[RunWrite(started, lease_ttl=0.3)]))).run(run.id)
        assert held.lease_expires_at is not None
        while True:
            now = _db_now()
            expired = [r.id for r in await store.list_runs(lease_expired=True)]
            if expired:
                break
            assert now < held.lease_expires_at  # not expired yet: the database's clock is not there
            await asyncio.sleep(0.02)
        assert expired == [run.id] and _db_now() >= held.lease_expires_at
    finally:
        await store.close()
