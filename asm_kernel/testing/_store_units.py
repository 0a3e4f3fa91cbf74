"""Conformance: the atomic write unit, its conditions, and run leases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs
import pytest

from ..errors import (
    AlreadyExistsError,
    LeaseLostError,
    RunNotFoundError,
    SeqConflictError,
    SessionNotFoundError,
    ValidationError,
    WriteConflictError,
)
from ..model import Event, Fence, Message, Run, RunStatus, Session, SessionStatus, utcnow
from ..writes import RunWrite, WriteUnit
from ._store_base import StoreTestBase, create_run, events_for, run_async


def _running(run: Run, owner: str = "w1") -> Run:
    return run.transition(RunStatus.RUNNING, owner=owner, lease_token=run.lease_token + 1)


class StoreUnitTests(StoreTestBase):
    def test_a_unit_writes_events_and_records_together(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            session = Session(agent_id="u")
            run = Run(session_id=session.id, input=Message.user("hi"))
            events = events_for(session.id, 3, run_id=run.id)
            committed = await store.commit(WriteUnit(session.id, events, new_session=session, new_runs=[run]))
            assert self.seqs(committed.events) == [1, 2, 3]
            assert committed.session == session and committed.runs == (run,)
            assert not committed.replayed
            assert await store.get_session(session.id) == session
            assert await store.get_run(run.id) == run
            started = _running(run)
            active = session.transition(SessionStatus.ACTIVE)
            more = events_for(session.id, 2, "run_started", run.id)
            committed = await store.commit(
                WriteUnit(
                    session.id,
                    more,
                    session=active,
                    session_status=[SessionStatus.PENDING],
                    runs=[RunWrite(started, expect_status=RunStatus.PENDING, expect_token=0, lease_ttl=60)],
                )
            )
            stored_run = committed.run(run.id)
            assert stored_run.status is RunStatus.RUNNING and stored_run.owner == "w1" and stored_run.lease_token == 1
            assert stored_run.lease_expires_at is not None and stored_run.lease_expires_at > utcnow()
            assert await store.get_run(run.id) == stored_run
            assert (await store.get_session(session.id)).status is SessionStatus.ACTIVE
            assert self.seqs(await store.read(session.id)) == [1, 2, 3, 4, 5]

        self._with_store(make_store, body)

    def test_a_failed_condition_stores_nothing_of_the_unit(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            run = await create_run(store, Run(session_id=s.id))
            done = run.transition(RunStatus.CANCELLED)
            cases: list[tuple[type[Exception], WriteUnit]] = [
                (
                    WriteConflictError,
                    WriteUnit(
                        s.id,
                        events_for(s.id, 2),
                        session=s.transition(SessionStatus.ACTIVE),
                        session_status=[SessionStatus.ACTIVE],
                    ),
                ),
                (
                    WriteConflictError,
                    WriteUnit(s.id, events_for(s.id, 2), runs=[RunWrite(done, expect_status=RunStatus.RUNNING)]),
                ),
                (WriteConflictError, WriteUnit(s.id, events_for(s.id, 2), runs=[RunWrite(done, expect_token=5)])),
                (
                    WriteConflictError,
                    WriteUnit(s.id, events_for(s.id, 1), session=s.transition(SessionStatus.ACTIVE), no_live_runs=True),
                ),
                (SeqConflictError, WriteUnit(s.id, events_for(s.id, 2), runs=[RunWrite(done)], expected_seq=7)),
                (
                    RunNotFoundError,
                    WriteUnit(s.id, events_for(s.id, 1), runs=[RunWrite(Run(session_id=s.id, id="nope"))]),
                ),
                (RunNotFoundError, WriteUnit(s.id, events_for(s.id, 1), fence=Fence("nope", 1))),
                (LeaseLostError, WriteUnit(s.id, events_for(s.id, 2), runs=[RunWrite(done)], fence=Fence(run.id, 3))),
                (AlreadyExistsError, WriteUnit(s.id, events_for(s.id, 1), new_runs=[run])),
                (AlreadyExistsError, WriteUnit(s.id, events_for(s.id, 1), new_session=s)),
                (SessionNotFoundError, WriteUnit("missing", new_runs=[Run(session_id="missing")])),
                (
                    ValidationError,
                    WriteUnit(
                        s.id,
                        [*events_for(s.id, 1), Event(session_id=s.id, type="x", payload={"n": float("nan")})],
                        runs=[RunWrite(done)],
                    ),
                ),
                # A run's session, idempotency key and creation time are fixed at its creation.
                (
                    ValidationError,
                    WriteUnit(s.id, events_for(s.id, 1), runs=[RunWrite(attrs.evolve(done, idempotency_key="k"))]),
                ),
                (
                    ValidationError,
                    WriteUnit(
                        s.id,
                        events_for(s.id, 1),
                        runs=[RunWrite(attrs.evolve(done, created_at=done.created_at + timedelta(seconds=1)))],
                    ),
                ),
            ]
            for error, unit in cases:
                with pytest.raises(error):
                    await store.commit(unit)
                assert await store.last_seq(s.id) == 0, unit
                assert await store.get_run(run.id) == run, unit
                assert await store.get_session(s.id) == s, unit
            # The no_live_runs condition ignores runs the unit itself writes.
            await store.commit(
                WriteUnit(s.id, runs=[RunWrite(done, expect_status=RunStatus.PENDING)], no_live_runs=True)
            )
            assert (await store.get_run(run.id)).status is RunStatus.CANCELLED

        self._with_store(make_store, body)

    def test_concurrent_conditional_writes_let_exactly_one_win(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            run = await create_run(store, Run(session_id=s.id))

            async def cancel(i: int) -> Any:
                unit = WriteUnit(
                    s.id,
                    [Event(session_id=s.id, type="run_cancelled", payload={"by": i}, run_id=run.id)],
                    runs=[RunWrite(run.transition(RunStatus.CANCELLED), expect_status=RunStatus.PENDING)],
                )
                return await store.commit(unit)

            results = await asyncio.gather(*(cancel(i) for i in range(20)), return_exceptions=True)
            winners = [r for r in results if not isinstance(r, BaseException)]
            assert len(winners) == 1
            assert all(isinstance(r, WriteConflictError) for r in results if isinstance(r, BaseException))
            assert [e.type for e in await store.read(s.id)] == ["run_cancelled"]

        self._with_store(make_store, body)

    def test_a_unit_sent_again_is_replayed_not_applied_twice(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            run = await create_run(store, Run(session_id=s.id))
            started = _running(run)
            unit = WriteUnit(
                s.id,
                events_for(s.id, 2, run_id=run.id),
                runs=[RunWrite(started, expect_status=RunStatus.PENDING, expect_token=0, lease_ttl=60)],
            )
            first = await store.commit(unit)
            again = await store.commit(unit)  # the writer never saw the first answer
            assert again.replayed and not first.replayed
            assert [(e.id, e.seq) for e in again.events] == [(e.id, e.seq) for e in first.events]
            assert await store.last_seq(s.id) == 2
            assert (await store.get_run(run.id)).lease_token == 1

        self._with_store(make_store, body)


class StoreLeaseTests(StoreTestBase):
    def test_leases_are_granted_renewed_and_fence_writes(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            run = await create_run(store, Run(session_id=s.id))
            held = (
                await store.commit(
                    WriteUnit(
                        s.id,
                        runs=[RunWrite(_running(run), expect_status=RunStatus.PENDING, expect_token=0, lease_ttl=600)],
                    )
                )
            ).run(run.id)
            fence = held.lease
            assert fence == Fence(run.id, 1)
            assert self.seqs(await store.append(s.id, events_for(s.id, 2, run_id=run.id), fence=fence)) == [1, 2]
            before = held.lease_expires_at
            assert before is not None
            assert await store.renew_leases([fence, Fence(run.id, 0), Fence("missing", 1)], 1200) == [run.id, "missing"]
            renewed = await store.get_run(run.id)
            assert renewed.lease_expires_at is not None and renewed.lease_expires_at > before
            assert [r.id for r in await store.list_runs(status=RunStatus.RUNNING, lease_expired=False)] == [run.id]
            assert await store.list_runs(lease_expired=True) == []
            with pytest.raises(LeaseLostError):
                await store.append(s.id, events_for(s.id, 1), fence=Fence(run.id, 7))
            assert await store.last_seq(s.id) == 2

        self._with_store(make_store, body)

    def test_an_expired_lease_can_be_taken_over_and_the_old_holder_is_fenced_out(
        self, make_store: Callable[[], Any]
    ) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            run = await create_run(store, Run(session_id=s.id))
            live = await create_run(store, Run(session_id=s.id))
            # ttl 0: the lease is granted already expired (by the store's clock).
            old = (await store.commit(WriteUnit(s.id, runs=[RunWrite(_running(run, "dead"), lease_ttl=0)]))).run(run.id)
            await store.commit(WriteUnit(s.id, runs=[RunWrite(_running(live, "alive"), lease_ttl=600)]))
            expired = await store.list_runs(status=RunStatus.RUNNING, lease_expired=True)
            assert [r.id for r in expired] == [run.id]
            # A live lease cannot be taken over.
            live_now = await store.get_run(live.id)
            theft = live_now.transition(RunStatus.FAILED, owner="thief", lease_token=live_now.lease_token + 1)
            with pytest.raises(WriteConflictError):
                await store.commit(WriteUnit(s.id, runs=[RunWrite(theft, expect_lease_expired=True)]))
            assert await store.get_run(live.id) == live_now
            taken = await store.get_run(run.id)
            takeover = RunWrite(
                taken.transition(
                    RunStatus.FAILED, owner="rescuer", lease_token=taken.lease_token + 1, lease_expires_at=None
                ),
                expect_status=RunStatus.RUNNING,
                expect_token=taken.lease_token,
                expect_lease_expired=True,
            )
            closed = await store.commit(
                WriteUnit(s.id, [Event(session_id=s.id, type="run_failed", run_id=run.id)], runs=[takeover])
            )
            assert closed.run(run.id).status is RunStatus.FAILED
            # The old holder's next write is refused and stores nothing.
            with pytest.raises(LeaseLostError):
                await store.append(s.id, events_for(s.id, 1, run_id=run.id), fence=old.lease)
            assert await store.renew_leases([old.lease], 60) == [run.id]  # type: ignore[list-item]
            assert [e.type for e in await store.read(s.id)] == ["run_failed"]
            # A second rescuer racing the first finds the token changed.
            with pytest.raises(WriteConflictError):
                await store.commit(WriteUnit(s.id, runs=[takeover]))

        self._with_store(make_store, body)

    def test_leases_of_a_previous_process_are_expired_when_a_private_store_reopens(
        self, make_store: Callable[[], Any]
    ) -> None:
        if not self.durable:
            pytest.skip("nothing survives a reopen of this store")

        async def body() -> None:
            store = make_store()
            await store.open()
            if store.capabilities.shared:
                await store.close()
                pytest.skip("a shared store cannot know that the lease holders are gone")
            s = await self._session(store)
            run = await create_run(store, Run(session_id=s.id))
            await store.commit(WriteUnit(s.id, runs=[RunWrite(_running(run), lease_ttl=3600)]))
            assert await store.list_runs(lease_expired=True) == []
            await store.close()
            again = make_store()
            await again.open()
            try:
                assert [r.id for r in await again.list_runs(lease_expired=True)] == [run.id]
            finally:
                await again.close()

        run_async(body())

    def test_list_runs_lease_filter_uses_the_stores_clock(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            run = await create_run(store, Run(session_id=s.id))
            # A lease the writer claims runs until far in the future is still judged by the store:
            # lease_ttl decides, never the writer's lease_expires_at.
            claimed = attrs.evolve(_running(run), lease_expires_at=utcnow() + timedelta(days=9))
            stored = (await store.commit(WriteUnit(s.id, runs=[RunWrite(claimed, lease_ttl=0)]))).run(run.id)
            assert stored.lease_expires_at is not None and stored.lease_expires_at < utcnow() + timedelta(days=1)
            assert [r.id for r in await store.list_runs(lease_expired=True)] == [run.id]

        self._with_store(make_store, body)


class StoreClaimTests(StoreTestBase):
    def test_claims_take_the_oldest_pending_run_of_each_free_session(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            base = utcnow() - timedelta(minutes=5)
            clock = [0]

            async def session_with(*statuses: RunStatus, paused: bool = False) -> list[Run]:
                s = await self._session(store)
                if paused:
                    await store.commit(
                        WriteUnit(s.id, session=s.transition(SessionStatus.ACTIVE).transition(SessionStatus.PAUSED))
                    )
                runs: list[Run] = []
                for status in statuses:
                    clock[0] += 1  # every run of the test is younger than the one made before it
                    run = Run(session_id=s.id, created_at=base + timedelta(seconds=clock[0]))
                    run = await create_run(store, run)
                    if status is RunStatus.RUNNING:
                        await store.commit(WriteUnit(s.id, runs=[RunWrite(_running(run), lease_ttl=600)]))
                    runs.append(run)
                return runs

            a, b = await session_with(RunStatus.PENDING, RunStatus.PENDING)
            (c,) = await session_with(RunStatus.PENDING, paused=True)
            _e, d = await session_with(RunStatus.RUNNING, RunStatus.PENDING)
            claimed = await store.claim_runs("w1", limit=10, lease_ttl=600)
            assert [r.id for r in claimed] == [a.id]
            (got,) = claimed
            assert got.status is RunStatus.PENDING and got.owner == "w1" and got.lease_token == 1
            assert got.lease_expires_at is not None and got.lease_expires_at > utcnow()
            assert await store.get_run(a.id) == got
            assert await store.claim_runs("w2", limit=10, lease_ttl=600) == []  # a is held; b waits behind it
            two = await store.claim_runs("w2", limit=10, lease_ttl=600, max_running_per_session=2)
            assert [r.id for r in two] == [b.id, d.id]
            # The claimer starts its run with a unit conditional on the token it was given.
            await store.commit(
                WriteUnit(
                    a.session_id,
                    runs=[
                        RunWrite(
                            _running(got), expect_status=RunStatus.PENDING, expect_token=got.lease_token, lease_ttl=600
                        )
                    ],
                )
            )
            assert (await store.get_run(a.id)).status is RunStatus.RUNNING
            assert c.id not in {r.id for r in await store.claim_runs("w3", limit=10, lease_ttl=600)}
            for bad in ({"limit": 0}, {"limit": True}, {"lease_ttl": 0}, {"lease_ttl": -1}):
                with pytest.raises(ValidationError):
                    await store.claim_runs("w9", **{"limit": 1, "lease_ttl": 1, **bad})
            with pytest.raises(ValidationError):
                await store.claim_runs("", limit=1, lease_ttl=1)

        self._with_store(make_store, body)

    def test_concurrent_claims_never_share_a_run_and_expired_claims_return(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            async def queued(n: int) -> list[Run]:
                made: list[Run] = []
                for _ in range(n):
                    s = await self._session(store)
                    made.append(await create_run(store, Run(session_id=s.id)))
                return made

            runs = await queued(20)
            batches = await asyncio.gather(*(store.claim_runs(f"w{i}", limit=3, lease_ttl=600) for i in range(10)))
            ids = [r.id for batch in batches for r in batch]
            assert len(ids) == len(set(ids)) == 20
            assert sorted(ids) == sorted(r.id for r in runs)
            assert await store.claim_runs("late", limit=100, lease_ttl=600) == []
            # A claim granted already expired (its worker died): a live worker takes the runs over.
            lost = await queued(5)
            first = await store.claim_runs("dying", limit=100, lease_ttl=1e-6)
            assert sorted(r.id for r in first) == sorted(r.id for r in lost)
            again = await store.claim_runs("rescuer", limit=100, lease_ttl=600)
            assert sorted(r.id for r in again) == sorted(r.id for r in lost)
            assert all(r.owner == "rescuer" and r.lease_token == 2 for r in again)
            # The first claimer's start now fails: its token is stale.
            stale = first[0]
            with pytest.raises(WriteConflictError):
                await store.commit(
                    WriteUnit(
                        stale.session_id,
                        runs=[
                            RunWrite(_running(stale), expect_status=RunStatus.PENDING, expect_token=stale.lease_token)
                        ],
                    )
                )

        self._with_store(make_store, body)
