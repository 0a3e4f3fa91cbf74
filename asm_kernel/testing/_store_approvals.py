"""Conformance: a run awaiting approval keeps its session open and holds its place in the queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ..errors import WriteConflictError
from ..model import Run, RunStatus, SessionStatus
from ..writes import RunWrite, WriteUnit
from ._store_base import StoreTestBase, create_run


class StoreApprovalTests(StoreTestBase):
    async def _waiting(self, store: Any) -> tuple[Any, Run]:
        session = await self._session(store)
        run = await create_run(store, Run(session_id=session.id))
        running = run.transition(RunStatus.RUNNING, owner="w1", lease_token=1)
        await store.commit(WriteUnit(session.id, runs=[RunWrite(running, lease_ttl=600)]))
        waiting = running.transition(RunStatus.AWAITING_APPROVAL, lease_expires_at=None)
        await store.commit(WriteUnit(session.id, runs=[RunWrite(waiting, expect_status=RunStatus.RUNNING)]))
        return session, waiting

    def test_a_run_awaiting_approval_is_live_and_holds_its_sessions_place(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            session, waiting = await self._waiting(store)
            assert (await store.get_run(waiting.id)).status is RunStatus.AWAITING_APPROVAL
            assert [r.id for r in await store.list_runs(status=RunStatus.AWAITING_APPROVAL)] == [waiting.id]
            # It keeps the session open: a unit requiring no live runs is refused.
            stored = await store.get_session(session.id)
            ended = stored.transition(SessionStatus.CANCELLED)
            with pytest.raises(WriteConflictError):
                await store.commit(WriteUnit(session.id, session=ended, no_live_runs=True))
            # A run queued behind it is not claimed while it waits (it holds the session's place)...
            behind = await create_run(store, Run(session_id=session.id))
            assert await store.claim_runs("w2", limit=10, lease_ttl=600) == []
            assert [r.id for r in await store.claim_runs("w2", limit=10, lease_ttl=600,
                                                         max_running_per_session=2)] == [behind.id]
            # ...and once it is decided it is pending again, and claimed first (it is the older).
            other = await self._session(store)
            await create_run(store, Run(session_id=other.id))
            decided = waiting.transition(RunStatus.PENDING, lease_token=waiting.lease_token + 1)
            await store.commit(WriteUnit(session.id, runs=[RunWrite(decided, expect_status=RunStatus.AWAITING_APPROVAL,
                                                                    expect_token=waiting.lease_token)]))
            claimed = await store.claim_runs("w3", limit=10, lease_ttl=600, max_running_per_session=2)
            assert waiting.id in [r.id for r in claimed]

        self._with_store(make_store, body)
