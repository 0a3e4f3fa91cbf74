"""Bad input and failures, each provoked for real: a typed StorageError naming the server and
database (never the password) and the fix; an interrupted write stores nothing; the pool recovers.

How each is provoked: a closed port (bound, then released); a fake server speaking the real
protocol that refuses the password (the local server trusts every login), plus a real role
without LOGIN; a database name that does not exist; a real role without CREATE on the database;
``pg_terminate_backend`` of the store's connection while it waits on a row lock; a real
statement timeout while another connection holds the session's row lock; a trigger that makes
the last statement of a unit fail after its session and run rows were written.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator

import pytest
from asm_kernel.errors import StorageError
from asm_kernel.model import Event, Run, RunStatus, Session
from asm_kernel.writes import RunWrite, WriteUnit
from fake_pg import PasswordRefusingServer
from pg_helpers import admin, sql, sql_holding, store_for

from asm_postgres.errors import (
    ConnectionLostError,
    DatabaseMissingError,
    PermissionDeniedError,
    PostgresAuthError,
    PostgresUnavailableError,
    StatementTimeoutError,
)
from asm_postgres.store import PostgresStore

SECRET = "s3cret-Pa55word-" + uuid.uuid4().hex[:8]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _no_secret(exc: BaseException, store: PostgresStore) -> None:
    for text in (str(exc), repr(exc), repr(store), str(exc.__dict__)):
        assert SECRET not in text, text


@pytest.fixture
def role(pg_dsn: str) -> Iterator[str]:
    name = f"asm_role_{uuid.uuid4().hex[:10]}"
    yield name
    if sql("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]):
        sql(f'DROP OWNED BY "{name}"')  # what it created, and its grants
        sql(f'DROP ROLE "{name}"')


async def test_an_unreachable_server_is_a_retryable_error_saying_how_to_start_it(pg_schema: str) -> None:
    port = _closed_port()
    store = store_for(pg_schema, dsn=f"postgresql://asm:{SECRET}@127.0.0.1:{port}/test", connect_timeout=5)
    with pytest.raises(PostgresUnavailableError) as info:
        await store.open()
    err = info.value
    assert err.retryable and isinstance(err, StorageError)
    assert f"127.0.0.1:{port}" in str(err) and "'test'" in str(err)
    assert "pg_ctlcluster" in (err.hint or "")
    _no_secret(err, store)


async def test_a_refused_password_names_the_role_and_never_shows_the_password(pg_schema: str) -> None:
    async with PasswordRefusingServer() as server:
        dsn = f"postgresql://asm:{SECRET}@127.0.0.1:{server.port}/test?sslmode=disable"
        store = store_for(pg_schema, dsn=dsn)
        with pytest.raises(PostgresAuthError) as info:
            await store.open()
    assert server.passwords == [SECRET]  # it reached the wire...
    err = info.value
    assert not err.retryable
    assert "password authentication failed" in str(err) and "'asm'" in str(err) and "'test'" in str(err)
    assert "PGPASSWORD" in (err.hint or "")
    _no_secret(err, store)  # ...and nowhere else


async def test_a_role_that_may_not_log_in_is_an_auth_error(pg_schema: str, role: str) -> None:
    sql(f'CREATE ROLE "{role}" NOLOGIN')
    store = store_for(pg_schema, dsn=f"postgresql://{role}:{SECRET}@127.0.0.1:5432/test")
    with pytest.raises(PostgresAuthError) as info:
        await store.open()
    assert "not permitted to log in" in str(info.value)
    _no_secret(info.value, store)


async def test_a_missing_database_says_how_to_create_it(pg_schema: str) -> None:
    name = f"asm_missing_{uuid.uuid4().hex[:8]}"
    store = store_for(pg_schema, dsn=f"postgresql://postgres:{SECRET}@127.0.0.1:5432/{name}")
    with pytest.raises(DatabaseMissingError) as info:
        await store.open()
    assert name in str(info.value) and "127.0.0.1:5432" in str(info.value)
    assert f"createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in (info.value.hint or "")
    _no_secret(info.value, store)


async def test_a_role_without_create_cannot_make_the_schema_and_is_told_what_to_grant(
    pg_schema: str, role: str
) -> None:
    sql(f'CREATE ROLE "{role}" LOGIN')
    store = store_for(pg_schema, dsn=f"postgresql://{role}@127.0.0.1:5432/test")
    with pytest.raises(PermissionDeniedError) as info:
        await store.open()
    err = info.value
    assert role in str(err) and pg_schema in str(err)
    assert f"GRANT USAGE, CREATE ON SCHEMA {pg_schema} TO {role}" in (err.hint or "")
    assert sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", [pg_schema]) == []
    # Granted, the same role migrates and uses it.
    sql(f'GRANT CREATE ON DATABASE test TO "{role}"')
    try:
        await store.open()
        s = Session()
        await store.commit(WriteUnit(s.id, new_session=s))
        await store.close()
    finally:
        sql(f'REVOKE CREATE ON DATABASE test FROM "{role}"')


async def _session_with_run(store: PostgresStore) -> tuple[Session, Run]:
    s = Session()
    run = Run(session_id=s.id)
    await store.commit(WriteUnit(s.id, [Event(session_id=s.id, type="note")], new_session=s, new_runs=[run]))
    return s, run


def _cancel_unit(s: Session, run: Run) -> WriteUnit:
    events = [Event(session_id=s.id, type="run_cancelled", run_id=run.id), Event(session_id=s.id, type="note")]
    cancel = RunWrite(run.transition(RunStatus.CANCELLED), expect_status=RunStatus.PENDING)
    return WriteUnit(s.id, events, runs=[cancel])


async def _blocked_backend(app: str, skip: set[int] | None = None) -> int:
    """The pid of the store's connection once it waits for a lock (polled, no time bound)."""
    while True:
        rows = sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'", [app])
        pids = [int(r[0]) for r in rows if int(r[0]) not in (skip or set())]
        if pids:
            return pids[0]
        await asyncio.sleep(0.02)


async def _assert_unchanged(store: PostgresStore, s: Session, run: Run) -> None:
    assert await store.last_seq(s.id) == 1
    assert [e.type for e in await store.read(s.id)] == ["note"]
    assert (await store.get_run(run.id)).status is RunStatus.PENDING


async def test_a_connection_dropped_mid_transaction_is_retried_on_another(pg_schema: str) -> None:
    app = f"asm-t-{uuid.uuid4().hex[:8]}"
    store = store_for(pg_schema, application_name=app, pool_max_size=2)
    await store.open()
    try:
        s, run = await _session_with_run(store)
        with sql_holding(pg_schema, run.id) as release:
            # The unit locks the session (granted), then waits for the run's row lock held here.
            task = asyncio.create_task(store.commit(_cancel_unit(s, run)))
            killed = await _blocked_backend(app)
            sql("SELECT pg_terminate_backend(%s)", [killed])
            await _blocked_backend(app, skip={killed})  # the same unit, again, on a new connection
            release()
            committed = await task
        assert [e.seq for e in committed.events] == [2, 3] and store.stats.reconnects == 1
        assert [e.type for e in await store.read(s.id)] == ["note", "run_cancelled", "note"]  # once
        # Idle pooled connections killed behind the store's back are replaced without an error.
        sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", [app])
        assert [e.seq for e in await store.append(s.id, [Event(session_id=s.id, type="after")])] == [4]
        assert store.stats.reconnects >= 2
    finally:
        await store.close()


async def test_a_connection_that_keeps_dropping_is_an_error_and_stores_nothing(pg_schema: str) -> None:
    app = f"asm-t-{uuid.uuid4().hex[:8]}"
    store = store_for(pg_schema, application_name=app, pool_max_size=2)
    await store.open()
    try:
        s, run = await _session_with_run(store)
        killed: set[int] = set()
        with sql_holding(pg_schema, run.id):
            task = asyncio.create_task(store.commit(_cancel_unit(s, run)))
            while not task.done():  # every attempt is cut while it waits for the lock
                blocked = asyncio.create_task(_blocked_backend(app, skip=killed))
                await asyncio.wait([task, blocked], return_when=asyncio.FIRST_COMPLETED)
                if blocked.done():
                    killed.add(blocked.result())
                    sql("SELECT pg_terminate_backend(%s)", [blocked.result()])
                else:
                    blocked.cancel()
            with pytest.raises(ConnectionLostError) as info:
                await task
        err = info.value
        assert len(killed) == 4 and err.retryable and err.details["committed"] == "no"
        assert "127.0.0.1:5432/test" in str(err) and pg_schema in str(err) and "nothing of it was stored" in str(err)
        await _assert_unchanged(store, s, run)
        # The pool replaced the dead connections: the same unit now goes through.
        assert [e.seq for e in (await store.commit(_cancel_unit(s, run))).events] == [2, 3]
    finally:
        await store.close()


async def test_a_connection_dropped_during_commit_says_the_outcome_is_unknown(pg_schema: str) -> None:
    app = f"asm-t-{uuid.uuid4().hex[:8]}"
    store = store_for(pg_schema, application_name=app)
    await store.open()
    try:
        s, run = await _session_with_run(store)
        # A deferred constraint trigger runs at COMMIT: it sleeps there, and is cut there.
        sql(
            f"""CREATE FUNCTION "{pg_schema}".slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.type = 'run_cancelled' THEN PERFORM pg_sleep(60); END IF; RETURN NULL; END $$"""
        )
        sql(
            f'CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON "{pg_schema}".events '
            f'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "{pg_schema}".slow_commit()'
        )
        unit = _cancel_unit(s, run)
        task = asyncio.create_task(store.commit(unit))
        while not (rows := sql("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                               "AND wait_event = 'PgSleep'", [app])):
            await asyncio.sleep(0.02)
        sql("SELECT pg_terminate_backend(%s)", [rows[0][0]])
        with pytest.raises(ConnectionLostError) as info:
            await task
        assert info.value.details["committed"] == "unknown" and "is unknown" in str(info.value)
        assert "safe" in (info.value.hint or "")
        await _assert_unchanged(store, s, run)  # here it was not stored; the caller cannot know that
        sql(f'DROP TRIGGER slow_commit ON "{pg_schema}".events')
        assert [e.seq for e in (await store.commit(unit)).events] == [2, 3]  # re-sent: stored once
        assert [e.seq for e in (await store.commit(unit)).events] == [2, 3]  # and again: a replay
    finally:
        await store.close()


async def test_a_statement_timeout_stores_nothing_and_is_retryable(pg_schema: str) -> None:
    store = store_for(pg_schema, statement_timeout=0.2)
    await store.open()
    try:
        s, run = await _session_with_run(store)
        with admin() as holder:
            holder.execute("BEGIN")
            holder.execute(f'SELECT 1 FROM "{pg_schema}".sessions WHERE id = %s FOR UPDATE', [s.id])
            with pytest.raises(StatementTimeoutError) as info:
                await store.commit(_cancel_unit(s, run))
            holder.execute("ROLLBACK")
        err = info.value
        assert err.retryable and "0.2 s" in str(err) and "statement_timeout" in (err.hint or "")
        await _assert_unchanged(store, s, run)
        assert [e.seq for e in (await store.commit(_cancel_unit(s, run))).events] == [2, 3]
    finally:
        await store.close()


async def test_a_unit_failing_at_its_last_statement_rolls_back_its_records_too(pg_schema: str) -> None:
    store = store_for(pg_schema)
    await store.open()
    try:
        # A trigger makes the events insert - the unit's last statement - fail.
        sql(
            f"""CREATE FUNCTION "{pg_schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.type = 'poison' THEN RAISE EXCEPTION 'refused by test'; END IF; RETURN NEW; END $$"""
        )
        sql(
            f'CREATE TRIGGER refuse BEFORE INSERT ON "{pg_schema}".events '
            f'FOR EACH ROW EXECUTE FUNCTION "{pg_schema}".refuse()'
        )
        s = Session()
        run = Run(session_id=s.id)
        events = [Event(session_id=s.id, type="note"), Event(session_id=s.id, type="poison")]
        with pytest.raises(StorageError) as info:
            await store.commit(WriteUnit(s.id, events, new_session=s, new_runs=[run]))
        assert "refused by test" in str(info.value) and pg_schema in str(info.value)
        assert sql(f'SELECT count(*) FROM "{pg_schema}".sessions')[0][0] == 0
        assert sql(f'SELECT count(*) FROM "{pg_schema}".runs')[0][0] == 0
        assert sql(f'SELECT count(*) FROM "{pg_schema}".events')[0][0] == 0
        # Nothing is left locked or half-done: the next unit on the same connection works.
        await store.commit(WriteUnit(s.id, events[:1], new_session=s, new_runs=[run]))
        assert await store.last_seq(s.id) == 1
    finally:
        await store.close()


async def test_a_closed_store_refuses_calls(pg_schema: str) -> None:
    from asm_kernel.errors import StoreClosedError

    store = store_for(pg_schema)
    with pytest.raises(StoreClosedError):
        await store.get_session("x")
    await store.open()
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.commit(WriteUnit("x", new_session=Session(id="x")))


def test_a_store_whose_event_loop_ended_can_be_closed_and_opened_again(pg_schema: str) -> None:
    store = store_for(pg_schema)
    s = Session()

    async def first() -> None:
        await store.open()
        await store.commit(WriteUnit(s.id, new_session=s))
        assert await store.wait(s.id, after=0, timeout=0.01) == []  # the listener runs on this loop

    asyncio.run(first())
    asyncio.run(store.close())  # another loop: the pool and listener died with the first one

    async def again() -> list[int]:
        await store.open()
        try:
            waiter = asyncio.create_task(store.wait(s.id, after=0, timeout=30))
            await store.append(s.id, [Event(session_id=s.id, type="x")])
            return [e.seq for e in await waiter]
        finally:
            await store.close()

    assert asyncio.run(again()) == [1]


async def test_a_cancelled_unit_stores_nothing_and_its_connection_is_not_reused(pg_schema: str) -> None:
    app = f"asm-t-{uuid.uuid4().hex[:8]}"
    store = store_for(pg_schema, application_name=app, pool_max_size=2)
    await store.open()
    try:
        s, run = await _session_with_run(store)
        with sql_holding(pg_schema, run.id):
            task = asyncio.create_task(store.commit(_cancel_unit(s, run)))
            await _blocked_backend(app)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await _assert_unchanged(store, s, run)
        # The interrupted connection was closed, not handed out again (a late cancel request
        # could otherwise hit another caller's statement).
        assert store.db.need_open().get_stats().get("returns_bad") == 1
        assert [e.seq for e in (await store.commit(_cancel_unit(s, run))).events] == [2, 3]
    finally:
        await store.close()
