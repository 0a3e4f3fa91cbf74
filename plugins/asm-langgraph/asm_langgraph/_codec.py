"""Between LangGraph's objects and the adapter's events: configs, tuples, put and copy events."""

from __future__ import annotations

from typing import Any

from asm_kernel.errors import ValidationError
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_metadata,
    writes_sort_key,
)

from ._view import BLOB_PUT, CHECKPOINT_PUT, WRITES_PUT, ThreadView, encode

__all__ = ["thread_and_ns", "config_for", "build_tuple", "checkpoint_events", "copy_events", "INLINE_BLOBS"]

#: A checkpoint whose channel values exceed this (bytes) stores them in ``blob_put`` events of
#: the same unit, so no single event nears the store's payload limit.
INLINE_BLOBS = 1 * 2**20


def thread_and_ns(config: RunnableConfig | None, *, where: str) -> tuple[str, str]:
    configurable = (config or {}).get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None or str(thread_id) == "":
        raise ValidationError(
            f"{where}: config has no configurable.thread_id",
            path="config.configurable.thread_id",
            hint='pass {"configurable": {"thread_id": "..."}} when invoking the graph',
        )
    return str(thread_id), str(configurable.get("checkpoint_ns") or "")


def config_for(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


def build_tuple(
    serde: SerializerProtocol,
    view: ThreadView,
    thread_id: str,
    ns: str,
    checkpoint_id: str,
    config: RunnableConfig | None,
) -> CheckpointTuple | None:
    """The tuple of one stored checkpoint: its channel values and pending writes, decoded."""
    with view.lock:  # copy what this tuple needs, decode outside the lock
        saved = view.checkpoints.get(ns, {}).get(checkpoint_id)
        if saved is None:
            return None
        stored_writes = dict(view.writes.get((ns, checkpoint_id), {}))
        blobs = view.blobs
        typed, metadata, parent_id = saved
        checkpoint: Checkpoint = serde.loads_typed(typed)
        found = {ch: blobs.get((ns, ch, ver)) for ch, ver in checkpoint["channel_versions"].items()}
    values = {ch: serde.loads_typed(b) for ch, b in found.items() if b is not None and b[0] != "empty"}
    ordered = sorted(stored_writes.items(), key=lambda kv: writes_sort_key(kv[1][3], kv[0][0], kv[0][1]))
    return CheckpointTuple(
        config=config or config_for(thread_id, ns, checkpoint_id),
        checkpoint={**checkpoint, "channel_values": values},
        metadata=serde.loads_typed(metadata),
        parent_config=config_for(thread_id, ns, parent_id) if parent_id else None,
        pending_writes=[(w[0], w[1], serde.loads_typed(w[2])) for _, w in ordered],
    )


def checkpoint_events(
    serde: SerializerProtocol,
    config: RunnableConfig,
    ns: str,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
) -> list[tuple[str, dict[str, Any]]]:
    """The events of one ``put``: the checkpoint and the values of its new channel versions."""
    copy = checkpoint.copy()
    values: dict[str, Any] = copy.pop("channel_values")  # type: ignore[misc]
    blobs: list[list[Any]] = [
        [channel, version, *encode(serde.dumps_typed(values[channel]) if channel in values else ("empty", b""))]
        for channel, version in new_versions.items()
    ]
    payload: dict[str, Any] = {
        "ns": ns,
        "id": checkpoint["id"],
        "parent_id": (config.get("configurable") or {}).get("checkpoint_id"),
        "checkpoint": encode(serde.dumps_typed(copy)),
        "metadata": encode(serde.dumps_typed(get_checkpoint_metadata(config, metadata))),
    }
    events: list[tuple[str, dict[str, Any]]] = []
    if sum(len(str(b[3])) for b in blobs) > INLINE_BLOBS:
        # One event per value, all in the checkpoint's unit: stored together or not at all.
        events.extend((BLOB_PUT, {"ns": ns, "blobs": [b]}) for b in blobs)
    else:
        payload["blobs"] = blobs
    events.append((CHECKPOINT_PUT, payload))
    return events


def copy_events(view: ThreadView) -> list[tuple[str, dict[str, Any]]]:
    """Events recreating every checkpoint, channel value and write of ``view`` in another thread."""
    events: list[tuple[str, dict[str, Any]]] = []
    with view.lock:
        by_ns: dict[str, list[list[Any]]] = {}
        for (ns, channel, version), typed in view.blobs.items():
            by_ns.setdefault(ns, []).append([channel, version, *encode(typed)])
        events.extend((BLOB_PUT, {"ns": ns, "blobs": [b]}) for ns, blobs in by_ns.items() for b in blobs)
        for ns, ids in view.checkpoints.items():
            for cid in sorted(ids):
                typed, metadata, parent_id = ids[cid]
                payload = {"ns": ns, "id": cid, "parent_id": parent_id}
                events.append((CHECKPOINT_PUT, {**payload, "checkpoint": encode(typed), "metadata": encode(metadata)}))
        for (ns, cid), stored in view.writes.items():
            for (task_id, idx), (_, channel, value, task_path) in stored.items():
                row = {"ns": ns, "checkpoint_id": cid, "task_id": task_id, "task_path": task_path}
                events.append((WRITES_PUT, {**row, "writes": [[idx, channel, *encode(value)]]}))
    return events
