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
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from asm_kernel import Event
from asm_kernel.errors import AlreadyExistsError, SessionNotFoundError, StateError, ValidationError
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.base import WRITES_IDX_MAP

from ._view import BLOB_PUT, CHECKPOINT_PUT, THREAD_DELETED, VIEW_TYPES, WRITES_PUT, ThreadView, encode, views_for

__all__ = ["AsmCheckpointSaver"]

T = TypeVar("T")
#: A checkpoint whose channel values exceed this (bytes) stores them in ``blob_put`` events of
#: the same unit, so no single event nears the store's payload limit.
INLINE_BLOBS = 1 * 2**20
#: Sessions listed per page when ``list(None)`` walks every thread.
_PAGE = 500


def _ids(config: RunnableConfig | None, *, where: str) -> tuple[str, str]:
    configurable = (config or {}).get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None or str(thread_id) == "":
        raise ValidationError(
            f"{where}: config has no configurable.thread_id",
            path="config.configurable.thread_id",
            hint='pass {"configurable": {"thread_id": "..."}} when invoking the graph',
        )
    return str(thread_id), str(configurable.get("checkpoint_ns") or "")


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


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

    def _tuple(self, view: ThreadView, thread_id: str, ns: str, checkpoint_id: str, config: RunnableConfig | None) -> (
        CheckpointTuple | None
    ):
        with view.lock:  # copy what this tuple needs, decode outside the lock
            saved = view.checkpoints.get(ns, {}).get(checkpoint_id)
            if saved is None:
                return None
            stored_writes = dict(view.writes.get((ns, checkpoint_id), {}))
            blobs = view.blobs
            typed, metadata, parent_id = saved
            checkpoint: Checkpoint = self.serde.loads_typed(typed)
            found = {ch: blobs.get((ns, ch, ver)) for ch, ver in checkpoint["channel_versions"].items()}
        values = {ch: self.serde.loads_typed(b) for ch, b in found.items() if b is not None and b[0] != "empty"}
        ordered = sorted(stored_writes.items(), key=lambda kv: writes_sort_key(kv[1][3], kv[0][0], kv[0][1]))
        return CheckpointTuple(
            config=config or _config(thread_id, ns, checkpoint_id),
            checkpoint={**checkpoint, "channel_values": values},
            metadata=self.serde.loads_typed(metadata),
            parent_config=_config(thread_id, ns, parent_id) if parent_id else None,
            pending_writes=[(w[0], w[1], self.serde.loads_typed(w[2])) for _, w in ordered],
        )

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
        thread_id, ns = _ids(config, where="get_tuple")
        view = await self._current(thread_id, self._view(thread_id))
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            return self._tuple(view, thread_id, ns, checkpoint_id, config)
        with view.lock:
            ids = view.checkpoints.get(ns)
            latest = max(ids) if ids else None
        return None if latest is None else self._tuple(view, thread_id, ns, latest, None)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if config is not None:
            thread_id, _ = _ids(config, where="list")
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
                    found = self._tuple(view, thread_id, ns, checkpoint_id, None)
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
        thread_id, ns = _ids(config, where="put")
        copy = checkpoint.copy()
        values: dict[str, Any] = copy.pop("channel_values")  # type: ignore[misc]
        blobs = [
            [channel, version, *encode(self.serde.dumps_typed(values[channel]) if channel in values else ("empty", b""))]
            for channel, version in new_versions.items()
        ]
        payload: dict[str, Any] = {
            "ns": ns,
            "id": checkpoint["id"],
            "parent_id": (config.get("configurable") or {}).get("checkpoint_id"),
            "checkpoint": encode(self.serde.dumps_typed(copy)),
            "metadata": encode(self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
        }
        events: list[tuple[str, dict[str, Any]]] = []
        if sum(len(b[3]) for b in blobs) > INLINE_BLOBS:
            # One event per value, all in the checkpoint's unit: stored together or not at all.
            events.extend((BLOB_PUT, {"ns": ns, "blobs": [b]}) for b in blobs)
        else:
            payload["blobs"] = blobs
        events.append((CHECKPOINT_PUT, payload))
        await self._append(thread_id, self._view(thread_id), events)
        return _config(thread_id, ns, checkpoint["id"])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, ns = _ids(config, where="put_writes")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            raise ValidationError(
                "put_writes: config has no configurable.checkpoint_id",
                path="config.configurable.checkpoint_id",
                hint="pass the config put() returned",
            )
        rows = [
            [WRITES_IDX_MAP.get(channel, idx), channel, *encode(self.serde.dumps_typed(value))]
            for idx, (channel, value) in enumerate(writes)
        ]
        if not rows:
            return
        payload = {"ns": ns, "checkpoint_id": checkpoint_id, "task_id": task_id, "task_path": task_path, "writes": rows}
        await self._append(thread_id, self._view(thread_id), [(WRITES_PUT, payload)])

    async def adelete_thread(self, thread_id: str) -> None:
        thread_id = str(thread_id)
        view = await self._current(thread_id, self._view(thread_id))
        if not view.exists:
            return  # never written: nothing to delete
        await self._append(thread_id, view, [(THREAD_DELETED, {})])

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
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        return self._run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self.adelete_thread(thread_id))
