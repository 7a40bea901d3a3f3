"""Chunks on their way into a fleet's storage: what waits is written as one object and committed at once.

An object store charges for every request far more than for its bytes (SeaweedFS on this
machine: about 20 ms of a PUT of 1 MiB is the request), so a record's appended chunks are
batched: one writer per record takes every chunk that waits (up to BATCH_BYTES, following each
other), writes them as one object, and commits them in one transaction. While its PUT runs the
transfer appends more (it keeps a few chunks in flight), and those make the next object: the
faster the transfer, the bigger the objects. Each append resolves once its bytes are committed;
chunks are committed in the order they are appended. When a batch cannot be written or
committed its appends fail, and those after it find the record moved on (False).
"""

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass

from store.db.postgres import bodies, leases, writes

BATCH_BYTES = 16 * 1024 * 1024  # the most one object holds


@dataclass
class Pending:
    """An appended chunk, from its append to its commit."""

    generation: int
    offset: int
    pieces: list[bytes]
    size: int
    future: asyncio.Future

    def follows(self, before: "Pending") -> bool:
        return self.generation == before.generation and self.offset == before.offset + before.size


class Appends:
    """The chunks a node's storage (a `PostgresStorage`) has on their way, by record."""

    def __init__(self, storage) -> None:
        self.storage = storage
        self.queues: dict[int, deque[Pending]] = {}
        self.writers: dict[int, asyncio.Task] = {}

    def append(self, record_id: int, generation: int, offset: int, pieces: list[bytes], size: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.queues.setdefault(record_id, deque()).append(Pending(generation, offset, pieces, size, future))
        if record_id not in self.writers:
            writer = asyncio.create_task(self._write(record_id), name=f"bgfetch chunks of record {record_id}")
            self.writers[record_id] = writer
        return future

    async def _write(self, record_id: int) -> None:
        queue = self.queues[record_id]
        try:
            while queue:
                batch = [queue.popleft()]
                while queue and queue[0].follows(batch[-1]) and sum(p.size for p in batch) < BATCH_BYTES:
                    batch.append(queue.popleft())
                try:
                    committed = await self._write_batch(record_id, batch)
                except Exception as exc:
                    _settle(batch, error=exc)
                else:
                    _settle(batch, result=committed)
        finally:
            del self.writers[record_id]
            if not queue:
                del self.queues[record_id]

    async def _write_batch(self, record_id: int, batch: list[Pending]) -> bool:
        storage = self.storage
        first, size = batch[0], sum(pending.size for pending in batch)
        name = f"{record_id}/{first.generation}/{first.offset:015d}-{uuid.uuid4().hex[:12]}"
        async with storage.connection() as conn:
            await bodies.intend(conn, name)
        await storage.objects.put(name, [piece for pending in batch for piece in pending.pieces])
        reg_id = storage.mirror.record(record_id).registration_id
        async with storage.connection() as conn, conn.transaction(), conn.cursor() as cur:
            fenced = await leases.fence(cur, storage.node, storage.tokens, record_id, first.generation)
            counts = await bodies.commit(cur, record_id, first.generation, first.offset, size, name,
                                         renewal_only=fenced["state"] == "done")
            if counts is not None and counts.get("renewal"):  # the other nodes read the renewal again
                row, records = await writes.read_registration(cur, reg_id)
                await storage.send(cur, "reg", reg_id, "renewal")
            elif counts is not None:
                await storage.send(cur, "bytes", reg_id, i=record_id, v=counts["version"], s=counts["stored"],
                                   c=counts["received"])
        if counts is None:
            return False
        if counts.get("renewal"):
            storage.take(reg_id, row, records)
        else:
            storage.mirror.put_bytes(record_id, counts["version"], counts["stored"], counts["received"])
        return True

    async def close(self) -> None:
        """Wait for every chunk on its way."""
        while self.writers:
            await asyncio.gather(*list(self.writers.values()), return_exceptions=True)


def _settle(batch: list[Pending], result: bool = False, error: BaseException | None = None) -> None:
    for pending in batch:
        pending.pieces = []
        if not pending.future.done():
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(result)
