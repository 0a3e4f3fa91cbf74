"""pytest plugin that runs the OpenAI Agents SDK's own session tests against ``AsmSession``.

The SDK's session tests (``tests/memory/test_session.py``, ``test_session_limit.py`` in its
source distribution) build their sessions as ``SQLiteSession(session_id, db_path, ...)``. This
plugin rebinds ``agents.SQLiteSession`` (before the test modules import it) to a subclass of
:class:`asm_openai_agents.AsmSession` with the same constructor: every ``db_path`` is one asm
kernel (on the store ``ASM_SDK_STORE`` names: ``memory`` by default, or ``duckdb`` with a file
beside the SQLite path), so two sessions on one path share a store as they would share a file,
and ``":memory:"`` gets a kernel of its own. The test files themselves are not changed.

Tests that inspect SQLite itself (its connections, file locks, rows written with ``sqlite3``,
the ``SQLiteSession is closed`` error) cannot apply to another backend; they are reported as
skipped with the reason, never silently dropped.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import agents
import agents.memory
import pytest
from asm_kernel import Kernel

from asm_openai_agents import AsmSession

#: Tests about SQLiteSession's own machinery, with why they do not apply to AsmSession.
SQLITE_ONLY = {
    "test_sqlite_session_close_closes_worker_thread_connections": "SQLite connection pool internals",
    "test_sqlite_session_reaps_connections_from_exited_worker_threads": "SQLite connection pool internals",
    "test_sqlite_session_closes_retired_connections_before_the_next_allocation": "SQLite connection pool internals",
    "test_sqlite_session_keeps_connections_of_live_worker_threads": "SQLite connection pool internals",
    "test_sqlite_session_closed_rejects_empty_add_items": "asserts SQLiteSession.close() and its RuntimeError text",
    "test_sqlite_session_pop_item_skips_corrupt_most_recent": "writes corrupt rows into the SQLite table with sqlite3",
    "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows": "writes corrupt rows with sqlite3",
    "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows": "writes corrupt rows with sqlite3",
    "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows": "writes corrupt rows with sqlite3",
    "test_sqlite_session_file_lock_is_shared_across_instances": "SQLiteSession's per-file lock table",
    "test_sqlite_session_failed_add_items_releases_write_lock": "patches sqlite3 to fail mid-transaction",
    "test_sqlite_session_failed_clear_session_rolls_back": "drops SQLite tables with sqlite3 to make a write fail",
    "test_sqlite_session_failed_pop_item_releases_write_lock": "patches SQLiteSession's connection internals",
    "test_sqlite_session_rollback_failure_evicts_connection": "SQLite connection pool internals",
    "test_sqlite_session_close_retries_quarantined_connection": "SQLite connection pool internals",
    # Ported to tests/test_session.py::test_cancelled_write_keeps_its_outcome (a paused store commit).
    "test_sqlite_session_post_commit_cancellation_propagates_after_known_outcome": "pauses a sqlite3 commit",
}

_SNAPSHOT = (
    "uses SQLiteSession's private bounded compaction snapshot (_get_compaction_snapshot, which "
    "0.24 offers only on SQLiteSession itself); AsmSession does not implement it yet"
)
#: Tests expected to fail, and why (strict: one that starts passing is reported).
NOT_SUPPORTED = {
    "test_automatic_compaction_does_not_reload_unbounded_hidden_history": _SNAPSHOT,
    "test_backend_read_limit_cannot_hide_retained_history_from_compaction": _SNAPSHOT,
    "test_expired_read_overhead_does_not_authorize_hidden_history": _SNAPSHOT,
    "test_automatic_compaction_rollback_budget[True]": _SNAPSHOT,  # [False] uses the SDK's list session
    "test_settled_clear_failure_invalidates_response_chain": _SNAPSHOT,
    "test_settled_pop_failure_invalidates_response_chain": _SNAPSHOT,
}
#: Tests that reach into SQLiteSession's private write path, with what they call.
SQLITE_ONLY.update(
    {"test_handoff_resume_after_cancelled_compaction_commits": "patches SQLiteSession._insert_items and its lock"}
)

_kernels: dict[str, Kernel] = {}
_lock = threading.Lock()
_anonymous = 0


def _start(kernel: Kernel) -> None:
    # The tests construct sessions synchronously, inside running loops; the kernel is started on a
    # private loop (its store is safe to use from any loop or thread, as Runner.run_sync needs).
    error: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(kernel.start())
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]


def kernel_for(db_path: str | Path) -> Kernel:
    global _anonymous
    with _lock:
        key = str(db_path)
        if key == ":memory:":
            _anonymous += 1
            key = f":memory:{_anonymous}"
        kernel = _kernels.get(key)
        if kernel is None:
            store = os.environ.get("ASM_SDK_STORE", "memory")
            config: dict[str, Any] = {"store": {"use": store}}
            if store == "duckdb":
                path = Path(str(db_path) + ".asm.duckdb") if not key.startswith(":memory:") else None
                config["store"]["path"] = str(path) if path else str(Path(os.environ["ASM_HOME"]) / f"{key[8:]}.duckdb")
            kernel = _kernels[key] = Kernel(config)
            _start(kernel)
        return kernel


class SQLiteSession(AsmSession):
    """``SQLiteSession``'s constructor, building an :class:`AsmSession` on the path's kernel."""

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = ":memory:",
        sessions_table: str = "agent_sessions",
        messages_table: str = "agent_messages",
        session_settings: Any = None,
    ) -> None:
        super().__init__(session_id, kernel_for(db_path), session_settings=session_settings)

    def close(self) -> None:
        """Sessions share their path's kernel; it is closed at the end of the test run."""


def pytest_configure(config: pytest.Config) -> None:
    agents.SQLiteSession = SQLiteSession  # type: ignore[misc]
    agents.memory.SQLiteSession = SQLiteSession  # type: ignore[misc]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = item.name.split("[", 1)[0]
        if name in SQLITE_ONLY:
            item.add_marker(pytest.mark.skip(reason=f"SQLite-specific: {SQLITE_ONLY[name]}"))
        elif name in NOT_SUPPORTED or item.name in NOT_SUPPORTED:
            why = NOT_SUPPORTED.get(item.name) or NOT_SUPPORTED[name]
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"not supported: {why}"))


def pytest_unconfigure(config: pytest.Config) -> None:
    for kernel in _kernels.values():
        asyncio.run(kernel.close())
    _kernels.clear()
