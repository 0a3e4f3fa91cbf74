"""``AsmCheckpointSaver``: a LangGraph ``BaseCheckpointSaver`` whose threads are asm event logs.

Each LangGraph thread is one asm session (``langgraph:<thread_id>`` by default). ``put`` appends
one ``langgraph.checkpoint_put`` event carrying the checkpoint, its metadata and the channel
values of ``new_versions``; ``put_writes`` one ``langgraph.writes_put``; ``delete_thread`` a
``langgraph.thread_deleted`` tombstone. Reads are answered from a per-thread view built from the
log once and then extended by the events after its cursor (see :mod:`asm_langgraph._view`).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from asm_kernel import Event
from asm_kernel.errors import AlreadyExistsError, SessionNotFoundError, StateError, ValidationError
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
)

from ._codec import INLINE_BLOBS, build_tuple, checkpoint_events, config_for, copy_events, thread_and_ns
from ._view import CHECKPOINTS_DELETED, THREAD_DELETED, VIEW_TYPES, WRITES_PUT, ThreadView, encode, views_for

__all__ = ["AsmCheckpointSaver"]

T = TypeVar("T")
#: Sessions listed per page when ``list(None)`` walks every thread.
_PAGE = 500


class AsmCheckpointSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpoints and pending writes stored as asm events, one asm session per thread.

    ``kernel`` is a started :class:`asm_kernel.Kernel` (the saver works on whatever store it was
    configured with) or an :class:`asm_kernel.SyncKernel`. The async methods run on the caller's
    loop. The sync ones (``graph.invoke``) run on the kernel's loop — the loop running when the
    saver was built, or ``loop=`` — from another thread, or through a ``SyncKernel``.
    """

    def __init__(
        self,
        kernel: Any,
        *,
        serde: SerializerProtocol | None = None,
        session_prefix: str = "langgraph:",
        agent_id: str = "langgraph",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._sync_kernel = kernel if hasattr(kernel, "kernel") and hasattr(kernel, "_call") else None
        if self._sync_kernel is not None:
            kernel = kernel.kernel
        if not hasattr(kernel, "sessions") or not hasattr(kernel, "store"):
            raise ValidationError(
                f"kernel must be an asm_kernel.Kernel or SyncKernel, got {type(kernel).__name__}",
                path="kernel",
                hint="async with asm_kernel.Kernel.open() as kernel: AsmCheckpointSaver(kernel)",
            )
        self.kernel = kernel
        self.session_prefix = session_prefix
        self.agent_id = agent_id
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self.loop = loop
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AsmCheckpointSaver(store={type(self.kernel.store).__name__}, prefix={self.session_prefix!r})"

    # -- threads and their views ------------------------------------------------------------

    def session_id(self, thread_id: str) -> str:
        """The asm session holding ``thread_id``."""
        return f"{self.session_prefix}{thread_id}"

    def _view(self, thread_id: str) -> ThreadView:
        if not getattr(self.kernel, "_started", True):
            raise StateError(
                "the asm kernel behind this checkpointer is not started (or was closed)",
                hint="build the graph inside `async with Kernel(...) as kernel:`",
            )
        return views_for(self.kernel).get(self.session_id(thread_id))

    async def _current(self, thread_id: str, view: ThreadView) -> ThreadView:
        """Bring ``view`` up to the log: built once from the last tombstone on, then extended."""
        sid = self.session_id(thread_id)
        sessions = self.kernel.sessions
        if view.cursor == 0 and not view.exists:
            try:
                deleted = await sessions.events(sid, types=[THREAD_DELETED])
            except SessionNotFoundError:
                return view
            view.exists = True
            start = deleted[-1].seq - 1 if deleted else 0  # nothing before the last deletion counts
            view.apply(await sessions.events(sid, after=start, types=VIEW_TYPES))
        else:
            view.apply(await sessions.events(sid, after=view.cursor, types=VIEW_TYPES))
        return view

    async def _append(self, thread_id: str, view: ThreadView, events: list[tuple[str, dict[str, Any]]]) -> None:
        sid = self.session_id(thread_id)
        if not view.exists:
            try:
                await self.kernel.sessions.get(sid)
            except SessionNotFoundError:
                try:
                    await self.kernel.sessions.create(
                        session_id=sid,
                        agent_id=self.agent_id,
                        metadata={"framework": "langgraph", "thread_id": thread_id},
                    )
                except AlreadyExistsError:
                    pass  # created meanwhile by another writer
            await self._current(thread_id, view)
        stored: list[Event] = await self.kernel.sessions.append(sid, events)
        # Nothing unseen between the view and these events: apply them without reading them back.
        with view.lock:
            contiguous = bool(stored) and stored[0].seq == view.cursor + 1
        if contiguous:
            view.apply(stored)
        views_for(self.kernel).trim()

    async def _thread_ids(self) -> list[str]:
        """Every thread this saver's agent id has a session for (list(None) walks them all)."""
        found: list[str] = []
        offset = 0
        while True:
            page = await self.kernel.sessions.list(agent_id=self.agent_id, limit=_PAGE, offset=offset)
            found.extend(s.id[len(self.session_prefix) :] for s in page if s.id.startswith(self.session_prefix))
            if len(page) < _PAGE:
                return found
            offset += _PAGE

    # -- the async API ----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns = thread_and_ns(config, where="get_tuple")
        view = await self._current(thread_id, self._view(thread_id))
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            return build_tuple(self.serde, view, thread_id, ns, checkpoint_id, config)
        with view.lock:
            latest = view.latest.get(ns)
        return None if latest is None else build_tuple(self.serde, view, thread_id, ns, latest, None)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if config is not None:
            thread_id, _ = thread_and_ns(config, where="list")
            threads = [thread_id]
            wanted_ns = (config.get("configurable") or {}).get("checkpoint_ns")
            wanted_id = get_checkpoint_id(config)
        else:
            threads, wanted_ns, wanted_id = await self._thread_ids(), None, None
        before_id = get_checkpoint_id(before) if before else None
        for thread_id in threads:
            view = await self._current(thread_id, self._view(thread_id))
            with view.lock:
                listing = [(ns, sorted(ids, reverse=True)) for ns, ids in view.checkpoints.items()]
            for ns, ids in listing:
                if wanted_ns is not None and ns != wanted_ns:
                    continue
                for checkpoint_id in ids:
                    if (wanted_id and checkpoint_id != wanted_id) or (before_id and checkpoint_id >= before_id):
                        continue
                    found = build_tuple(self.serde, view, thread_id, ns, checkpoint_id, None)
                    if found is None:
                        continue
                    if filter and not all(found.metadata.get(k) == v for k, v in filter.items()):
                        continue
                    if limit is not None:
                        if limit <= 0:
                            return
                        limit -= 1
                    yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, ns = thread_and_ns(config, where="put")
        events = checkpoint_events(self.serde, config, ns, checkpoint, metadata, new_versions)
        await self._append(thread_id, self._view(thread_id), events)
        return config_for(thread_id, ns, checkpoint["id"])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, ns = thread_and_ns(config, where="put_writes")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            raise ValidationError(
                "put_writes: config has no configurable.checkpoint_id",
                path="config.configurable.checkpoint_id",
                hint="pass the config put() returned",
            )
        rows: list[list[Any]] = [
            [WRITES_IDX_MAP.get(channel, idx), channel, *encode(self.serde.dumps_typed(value))]
            for idx, (channel, value) in enumerate(writes)
        ]
        if not rows:
            return
        head = {"ns": ns, "checkpoint_id": checkpoint_id, "task_id": task_id, "task_path": task_path}
        # Large writes (an interrupt carrying the state) go one per event, still in one unit.
        groups = [[r] for r in rows] if sum(len(str(r[3])) for r in rows) > INLINE_BLOBS else [rows]
        await self._append(thread_id, self._view(thread_id), [(WRITES_PUT, {**head, "writes": g}) for g in groups])

    async def adelete_thread(self, thread_id: str) -> None:
        thread_id = str(thread_id)
        view = await self._current(thread_id, self._view(thread_id))
        if not view.exists:
            return  # never written: nothing to delete
        await self._append(thread_id, view, [(THREAD_DELETED, {})])

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the checkpoints whose metadata ``run_id`` is one of ``run_ids``, in every thread."""
        wanted = {str(r) for r in run_ids}
        if not wanted:
            return
        for thread_id in await self._thread_ids():
            view = await self._current(thread_id, self._view(thread_id))
            with view.lock:
                saved = [(ns, cid, md) for ns, ids in view.checkpoints.items() for cid, (_, md, _) in ids.items()]
            doomed = [[ns, cid] for ns, cid, md in saved if self.serde.loads_typed(md).get("run_id") in wanted]
            if doomed:
                await self._append(thread_id, view, [(CHECKPOINTS_DELETED, {"checkpoints": doomed})])

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: only the newest checkpoint of each namespace stays (with its writes and
        every channel value); ``delete``: the threads are emptied. The events stay in the log."""
        if strategy not in ("keep_latest", "delete"):
            raise ValidationError(
                f"unknown prune strategy {strategy!r}", path="strategy", hint='use "keep_latest" or "delete"'
            )
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            view = await self._current(thread_id, self._view(thread_id))
            with view.lock:
                doomed = [
                    [ns, cid] for ns, ids in view.checkpoints.items() for cid in ids if cid != view.latest.get(ns)
                ]
            if doomed:
                await self._append(thread_id, view, [(CHECKPOINTS_DELETED, {"checkpoints": doomed})])

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, channel value and write of a thread into another, in one unit."""
        source, target = str(source_thread_id), str(target_thread_id)
        view = await self._current(source, self._view(source))
        events = copy_events(view)
        if events:
            await self._append(target, self._view(target), events)

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """Sortable string versions with a random suffix (as LangGraph's own savers make them)."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- the sync API -----------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._sync_kernel is not None:
            # LangGraph writes from a thread pool; a SyncKernel's loop runs one call at a time.
            with self._sync_lock:
                result: T = self._sync_kernel._call(coro)
            return result
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is None or not self.loop.is_running() or running is self.loop:
            coro.close()
            raise StateError(
                "a synchronous checkpointer call needs the kernel's event loop running in another thread",
                hint="use the graph's async methods (ainvoke, astream), or pass a SyncKernel, or build the "
                "saver with loop= the loop the kernel runs on",
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._run(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self.adelete_for_runs(run_ids))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(self.aprune(thread_ids, strategy=strategy))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self.acopy_thread(source_thread_id, target_thread_id))
