"""LangGraph checkpoints in Tidebase: `TidebaseSaver(tide)` is a LangGraph checkpointer whose threads are Tidebase runs.

```python
graph = builder.compile(checkpointer=TidebaseSaver(tide))      # instead of PostgresSaver / InMemorySaver
graph.invoke({"question": "..."}, {"configurable": {"thread_id": "ticket-42"}})
```

With an `AsyncTidebase` it serves LangGraph's async API (`ainvoke`, `astream`, `aget_state`, ...: `aput`,
`aput_writes`, `aget_tuple`, `alist`, `adelete_thread`, `adelete_for_runs`, `acopy_thread`, `aprune`); with a sync
`Tidebase`, the sync API (`invoke`, `stream`, `get_state`, ...), and the async methods too, each run in a thread.

**What is stored where.** A thread is one Tidebase run, of workflow `langgraph` (the `workflow` option), whose id
is derived from the thread id (`TidebaseSaver.run_id`): `langgraph:<thread id>` when the thread id is a short name of
letters, digits, `_`, `.` and `-` (a UUID, say), else `langgraph-sha256:<its SHA-256>`; the two forms cannot collide,
and the thread id itself is kept in the run's input and metadata. The run is what Tidebase already knows how to
guard and show: its lease and fencing token exclude a second writer, cancelling it stops the thread, and its event
log records every checkpoint (`langgraph.checkpoint`) and every batch of pending writes (`langgraph.writes`), gap-free
and live in the Studio and `tide.runs.events(...)`. What LangGraph itself stores lives in three tables of the run
(migration 0002): checkpoints (without their channel values; metadata as jsonb, so list filters are one `@>`),
channel values as blobs per (namespace, channel, version), stored once however many checkpoints read them, and
pending writes. They are not run steps: a step is replayed by `tide.run` and never overwritten or deleted, while a
LangGraph thread branches when it travels back in time, and is pruned and deleted by LangGraph's own calls. Values
are encoded by LangGraph's serializer (`self.serde`, JsonPlusSerializer by default) and stored as bytea; checkpoint
and metadata are stored as jsonb, through the tide's payload limit.

**Fenced writes.** A saver takes the lease of a thread's run on its first write to it and holds it, naming its
fencing token on every checkpoint and write: the database refuses the write of a saver whose lease was taken over
(`LeaseLost`), so two processes can never interleave checkpoints on one thread. A second writer waits for the
holder's lease (`wait`, default one lease period: a lease lasts `lease_seconds` after the holder's last write), or
takes it over at once when the holder process has exited on this host. The overtaken saver's graph invocation is
refused on every later write; the saver takes the thread back only for an invocation that reads the thread afresh.
`release(thread_id)` and `close()` (or the saver used as a context manager) hand threads back at once: the run is
then `waiting` for its next writer. One saver is
one writer: share it in a process as LangGraph expects; two graph invocations on one thread through the same saver
are not excluded from each other.

**Copies are forks.** `copy_thread(source, target)` creates the target thread's run as a Tidebase fork of the
source's (`forkedFrom` in its metadata, a `fork` edge in the Studio) with a copy of every checkpoint, blob and write.

Import this module only with LangGraph installed (`pip install "tidebase-postgres[langgraph]"`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from tidebase.client import Tidebase
from tidebase.client_async import AsyncTidebase
from tidebase.integrations.langgraph_store import ThreadStore
from tidebase.integrations.langgraph_store_async import AsyncThreadStore

__all__ = ["TidebaseSaver"]

_PLAIN_THREAD = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_STRATEGIES = ("keep_latest", "delete")


class TidebaseSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer storing each thread as a Tidebase run (see the module docstring).

    `tide` is an `AsyncTidebase` (LangGraph's async API) or a `Tidebase` (its sync API; the async methods then run
    the sync ones in a thread). `workflow` names the runs threads create; `wait` bounds how long a first write to a
    thread that another live writer holds waits for its lease before LeaseHeld (default: one lease period); `serde`
    is LangGraph's serializer for channel values and writes (JsonPlusSerializer by default).

    Writes raise LeaseLost when another writer took the thread over, RunCancelled when its run was cancelled, and
    PayloadError when a checkpoint's metadata is not JSON or exceeds the tide's payload limit."""

    def __init__(
        self, tide: AsyncTidebase | Tidebase, *, workflow: str = "langgraph", wait: float | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.tide = tide
        self._astore: AsyncThreadStore | None = None
        self._store: ThreadStore | None = None
        if isinstance(tide, AsyncTidebase):
            self._astore = AsyncThreadStore(tide, workflow=workflow, wait=wait)
        elif isinstance(tide, Tidebase):
            self._store = ThreadStore(tide, workflow=workflow, wait=wait)
        else:
            raise TypeError(f"TidebaseSaver needs a Tidebase or an AsyncTidebase, not {type(tide).__name__}")

    # -- identity ----------------------------------------------------------------------------------------------------

    @staticmethod
    def run_id(thread_id: object) -> str:
        """The id of the Tidebase run that stores thread `thread_id` (see the module docstring)."""
        text = str(thread_id)
        if _PLAIN_THREAD.match(text):
            return f"langgraph:{text}"
        return "langgraph-sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """The version after `current`: a zero-padded counter (so versions compare as strings in order) and a random
        suffix. Blobs are stored once per (channel, version), and two branches of one thread (time travel) both
        write the version after a common one: the suffix keeps their values apart."""
        number = 0 if current is None else int(str(current).split(".", 1)[0])
        return f"{number + 1:032}.{secrets.token_hex(8)}"

    def _sync(self, method: str) -> ThreadStore:
        if self._store is None:
            raise TypeError(
                f"this TidebaseSaver was made with an AsyncTidebase, which serves LangGraph's async API (ainvoke, "
                f"astream, aget_state, ...); {method}() is the sync API: make the saver with a Tidebase for it"
            )
        return self._store

    # -- I/O-free: checkpoints to rows, rows to checkpoints ----------------------------------------------------------

    def _encode(self, value: Any, what: str, run_id: str) -> str:
        return self.tide.engine.encode(value, what, run_id=run_id)

    def _put_params(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[str, str, dict[str, Any], RunnableConfig]:
        """(thread id, run id, statement parameters, the config to return) of one checkpoint."""
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        run_id = self.run_id(thread_id)
        ns = conf.get("checkpoint_ns", "")
        skeleton = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        values = checkpoint.get("channel_values", {})
        channels, versions, types, blobs = [], [], [], []
        for channel, version in new_versions.items():
            kind, data = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", None)
            channels.append(channel)
            versions.append(str(version))
            types.append(kind)
            blobs.append(data)
        params = {
            "ns": ns, "checkpoint_id": checkpoint["id"], "parent_id": conf.get("checkpoint_id"),
            "thread_id": thread_id, "checkpoint": self._encode(skeleton, "langgraph checkpoint", run_id),
            "metadata": self._encode(get_serializable_checkpoint_metadata(config, metadata), "langgraph metadata",
                                     run_id),
            "channels": channels, "versions": versions, "types": types, "blobs": blobs,
        }
        returned: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                                     "checkpoint_id": checkpoint["id"]}}
        return thread_id, run_id, params, returned

    def _writes_params(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> tuple[str, str, dict[str, Any]]:
        """(thread id, run id, statement parameters) of one task's writes. Special channels (errors, interrupts,
        resume values) take LangGraph's fixed negative indexes, so a task has at most one of each."""
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        idx, channels, types, blobs = [], [], [], []
        for i, (channel, value) in enumerate(writes):
            kind, data = self.serde.dumps_typed(value)
            idx.append(WRITES_IDX_MAP.get(channel, i))
            channels.append(channel)
            types.append(kind)
            blobs.append(data)
        params = {
            "ns": conf.get("checkpoint_ns", ""), "checkpoint_id": conf["checkpoint_id"], "task_id": task_id,
            "task_path": task_path, "idx": idx, "channels": channels, "types": types, "blobs": blobs,
            "replace": all(channel in WRITES_IDX_MAP for channel, _ in writes),
        }
        return thread_id, self.run_id(thread_id), params

    def _query(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None, before: RunnableConfig | None,
        limit: int | None, latest: bool,
    ) -> dict[str, Any]:
        """The filters of the `checkpoints` read. `latest` (get_tuple): the namespace defaults to the root one."""
        conf = (config or {}).get("configurable") or {}
        thread = conf.get("thread_id")
        return {
            "run_id": None if thread is None else self.run_id(thread),
            "ns": conf.get("checkpoint_ns", "") if latest else conf.get("checkpoint_ns"),
            "checkpoint_id": get_checkpoint_id(config) if config else None,
            "before": get_checkpoint_id(before) if before else None,
            "filter": json.dumps(filter) if filter else None,
            "limit": limit,
        }

    def _tuple(self, row: dict[str, Any]) -> CheckpointTuple:
        """The CheckpointTuple of one row of the `checkpoints` read."""
        values = {channel: self.serde.loads_typed((kind, bytes(blob)))
                  for channel, kind, blob in zip(row["blob_channels"] or (), row["blob_types"] or (),
                                                 row["blob_values"] or (), strict=True)}
        writes = [(task, channel, self.serde.loads_typed((kind, bytes(blob))))
                  for task, channel, kind, blob in zip(row["write_tasks"] or (), row["write_channels"] or (),
                                                       row["write_types"] or (), row["write_values"] or (),
                                                       strict=True)]
        checkpoint = cast(Checkpoint, {**row["checkpoint"], "channel_values": values})
        ids = {"thread_id": row["thread_id"], "checkpoint_ns": row["checkpoint_ns"]}
        parent = row["parent_checkpoint_id"]
        return CheckpointTuple(
            config={"configurable": {**ids, "checkpoint_id": row["checkpoint_id"]}},
            checkpoint=checkpoint,
            metadata=row["metadata"],
            parent_config={"configurable": {**ids, "checkpoint_id": parent}} if parent else None,
            pending_writes=writes,
        )

    @staticmethod
    def _reread(store: ThreadStore | AsyncThreadStore, query: dict[str, Any]) -> None:
        # A graph invocation starts by reading its thread's root namespace: from then on it works from the stored
        # state, so a thread this saver lost to another writer may be taken back (the overtaken invocation, which
        # reads nothing more, stays refused).
        if query["run_id"] is not None and query["ns"] == "":
            store.reread(query["run_id"])

    @staticmethod
    def _keep_latest(strategy: str) -> bool:
        if strategy not in _STRATEGIES:
            raise ValueError(f"unknown prune strategy {strategy!r}; one of {_STRATEGIES}")
        return strategy == "keep_latest"

    # -- the sync API ------------------------------------------------------------------------------------------------

    def put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint (fenced by the thread's lease) and returns its config."""
        store = self._sync("put")
        thread_id, run_id, params, returned = self._put_params(config, checkpoint, metadata, new_versions)
        store.fenced("langgraph_put", run_id, thread_id, params)
        return returned

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Stores a task's pending writes for the checkpoint of `config` (fenced by the thread's lease)."""
        store = self._sync("put_writes")
        if writes:
            thread_id, run_id, params = self._writes_params(config, writes, task_id, task_path)
            store.fenced("langgraph_put_writes", run_id, thread_id, params)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint of `config` (its `checkpoint_id`, else the thread's newest in its namespace), or None."""
        store = self._sync("get_tuple")
        query = self._query(config, filter=None, before=None, limit=1, latest=True)
        self._reread(store, query)
        rows = store.checkpoints(**query)
        return self._tuple(rows[0]) if rows else None

    def list(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of the thread (and namespace, when the config names one) of `config`, or of
        every thread for None; whose metadata contains `filter`; older than `before`; at most `limit`."""
        rows = self._sync("list").checkpoints(**self._query(config, filter=filter, before=before, limit=limit,
                                                              latest=False))
        return iter([self._tuple(row) for row in rows])

    def delete_thread(self, thread_id: str) -> None:
        """Deletes the thread: its run, with every checkpoint, write and event."""
        self._sync("delete_thread").delete_thread(self.run_id(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints (and their writes) whose metadata names one of these LangGraph run ids."""
        store = self._sync("delete_for_runs")
        if run_ids:
            store.delete_for_runs([str(r) for r in run_ids])

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies a thread into a new thread, as a Tidebase fork of its run. NotFound for an unknown source thread,
        Conflict when the target thread exists."""
        self._sync("copy_thread").copy_thread(self.run_id(source_thread_id), self.run_id(target_thread_id),
                                              str(target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prunes the threads' checkpoints: `keep_latest` keeps the newest of each namespace, `delete` none."""
        store = self._sync("prune")
        keep_latest = self._keep_latest(strategy)
        if thread_ids:
            store.prune([self.run_id(t) for t in thread_ids], keep_latest=keep_latest)

    def release(self, thread_id: str) -> bool:
        """Hands the thread back now: its run waits for its next writer, who takes the lease at once. False when
        this saver held no lease on it."""
        return self._sync("release").release(self.run_id(thread_id))

    def close(self) -> None:
        """Releases every thread this saver holds. A closed saver reads, but writes no more."""
        self._sync("close").close()

    def __enter__(self) -> TidebaseSaver:
        self._sync("__enter__")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the async API -----------------------------------------------------------------------------------------------
    # With a sync Tidebase, each method runs its sync twin in a thread: the event loop stays free meanwhile.

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async `put`."""
        if self._astore is None:
            return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)
        thread_id, run_id, params, returned = self._put_params(config, checkpoint, metadata, new_versions)
        await self._astore.fenced("langgraph_put", run_id, thread_id, params)
        return returned

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        """Async `put_writes`."""
        if self._astore is None:
            await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)
        elif writes:
            thread_id, run_id, params = self._writes_params(config, writes, task_id, task_path)
            await self._astore.fenced("langgraph_put_writes", run_id, thread_id, params)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async `get_tuple`."""
        if self._astore is None:
            return await asyncio.to_thread(self.get_tuple, config)
        query = self._query(config, filter=None, before=None, limit=1, latest=True)
        self._reread(self._astore, query)
        rows = await self._astore.checkpoints(**query)
        return self._tuple(rows[0]) if rows else None

    async def alist(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async `list`."""
        if self._astore is None:
            tuples = await asyncio.to_thread(lambda: [*self.list(config, filter=filter, before=before, limit=limit)])
        else:
            rows = await self._astore.checkpoints(**self._query(config, filter=filter, before=before, limit=limit,
                                                                latest=False))
            tuples = [self._tuple(row) for row in rows]
        for item in tuples:
            yield item

    async def adelete_thread(self, thread_id: str) -> None:
        """Async `delete_thread`."""
        if self._astore is None:
            await asyncio.to_thread(self.delete_thread, thread_id)
        else:
            await self._astore.delete_thread(self.run_id(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async `delete_for_runs`."""
        if self._astore is None:
            await asyncio.to_thread(self.delete_for_runs, run_ids)
        elif run_ids:
            await self._astore.delete_for_runs([str(r) for r in run_ids])

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async `copy_thread`."""
        if self._astore is None:
            await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)
        else:
            await self._astore.copy_thread(self.run_id(source_thread_id), self.run_id(target_thread_id),
                                           str(target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async `prune`."""
        if self._astore is None:
            await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))
            return
        keep_latest = self._keep_latest(strategy)
        if thread_ids:
            await self._astore.prune([self.run_id(t) for t in thread_ids], keep_latest=keep_latest)

    async def arelease(self, thread_id: str) -> bool:
        """Async `release`."""
        if self._astore is None:
            return await asyncio.to_thread(self.release, thread_id)
        return await self._astore.release(self.run_id(thread_id))

    async def aclose(self) -> None:
        """Async `close`."""
        if self._astore is None:
            await asyncio.to_thread(self.close)
        else:
            await self._astore.close()

    async def __aenter__(self) -> TidebaseSaver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
