"""Renewals: a stored response's new entity, stored in the background as its record's next generation.

When a revalidation is answered with another entity (`revalidation`), that response is stored
beside the generation the record serves. The client that asked reads it as it arrives (by its
generation, read-while-writer) while requests that do not ask for freshness keep the old one.
Once complete it replaces the old one in one commit; the old one's chunks go when its last
reader is done (`reading`), so no reader is ever given bytes of two versions. A renewal whose
transfer breaks (the origin goes, a limit, the disk) is given up: the old generation stays and
the next request that needs the origin's word asks again. Renewals do not survive a restart.
"""

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator

import httpx

from store.db import NotFound, Record, Storage, StorageFault
from store.engine import decision, freshness
from store.engine.outcomes import Failure, Limit, Pause
from store.engine.record_fetch import limit_for
from store.engine.sink import BodySink

logger = logging.getLogger(__name__)


class Renewals:
    """The renewals under way, and who reads which generation. `committed(reg_id, progress)`
    is told of every commit; `dropped()` when chunks were deleted (their space can go back);
    `fetched(n)` of every `n` body bytes from an origin."""

    def __init__(self, storage: Storage, quota: int | None, committed: Callable[[str, bool], None],
                 dropped: Callable[[], None], fetched: Callable[[int], None] = lambda n: None) -> None:
        self.storage = storage
        self.quota = quota
        self.committed = committed
        self.dropped = dropped
        self.fetched = fetched
        self.tasks: dict[int, asyncio.Task | None] = {}  # record id -> its renewal (None: being begun)
        self.readers: Counter[tuple[int, int]] = Counter()  # (record id, generation) -> readers
        self.retired: set[tuple[int, int]] = set()  # replaced generations that still have readers
        self._drops: set[asyncio.Task] = set()

    def current(self, record_id: int) -> Record | None:
        """The record as its renewal under way will make it; None without one."""
        return self.storage.renewal(record_id) if self.tasks.get(record_id) else None

    async def begin(self, record: Record, response: httpx.Response, selecting: str = "") -> Record | None:
        """Store `response` (selected for those request fields: `variants`) as `record`'s next
        generation, in the background; the record as it will be. None, and nothing begun, when
        one is under way or the body would not fit."""
        size = decision.content_length(response.headers.get("content-length"))
        limit = limit_for(self.storage, self.quota, record, self.storage.held(record.id))
        if record.id in self.tasks or (limit and size is not None and size > limit.most):
            return None
        self.tasks[record.id] = None
        try:
            fields = freshness.dated(list(response.headers.multi_items()))
            generation = await self.storage.begin_renewal(record.id, response.status_code, fields, size, selecting)
        except StorageFault as exc:  # a full disk, a lock: this client gets the origin's answer unstored
            del self.tasks[record.id]
            logger.warning("%s: the new version cannot be stored now: %s", record.url, exc)
            return None
        except BaseException:
            del self.tasks[record.id]
            raise
        task = asyncio.create_task(self._store(record, generation, response, size, limit), name=f"bgfetch renewal {record.id}")
        self.tasks[record.id] = task
        task.add_done_callback(lambda done: self.tasks.pop(record.id) if self.tasks.get(record.id) is done else None)
        return self.storage.renewal(record.id)

    async def _store(self, record: Record, generation: int, response: httpx.Response, size: int | None,
                     limit: Limit | None) -> None:
        """The body into the renewal's generation, then in the record's place; or given up."""
        retired = None
        try:
            stored = await self._body(record, generation, response, limit)
            if size is not None and stored != size:
                raise Pause(f"{record.url}: body ended at {stored} of {size} bytes")
            retired = await self.storage.complete_renewal(record.id, generation)
            logger.info("%s: a new version of %d bytes replaces the stored one", record.url, stored)
        except (httpx.HTTPError, Pause, Failure, StorageFault, NotFound) as exc:
            logger.info("%s: the new version was not stored (%s); the stored one stays", record.url, exc)
            with contextlib.suppress(StorageFault, NotFound):
                await self.storage.drop_renewal(record.id, generation)
        finally:
            self.committed(record.registration_id, False)  # its readers see what became of it
        if retired is not None:
            self.retire(record.id, retired)

    async def _body(self, record: Record, generation: int, response: httpx.Response, limit: Limit | None) -> int:
        """Bytes of `response` into the renewal's chunks; how many. NotFound when it is gone."""
        sink = BodySink(self.storage, record.id, generation, 0, lambda: self.committed(record.registration_id, False))
        try:
            async for data in response.aiter_raw():
                self.fetched(len(data))
                if limit and sink.position + len(data) > limit.most:
                    raise limit.failure(record.url)
                if (renewal := self.storage.renewal(record.id)) is None or renewal.generation != generation:
                    raise NotFound(f"{record.url}: the renewal was dropped (the record was deleted or replaced)")
                await sink.write(data)
        finally:
            await response.aclose()
            await sink.close()
        return sink.offset

    @contextlib.contextmanager
    def reading(self, record_id: int, generation: int) -> Iterator[None]:
        """While a reader sends a generation's bytes, they stay, even once it is replaced."""
        key = (record_id, generation)
        self.readers[key] += 1
        try:
            yield
        finally:
            self.readers[key] -= 1
            if not self.readers[key]:
                del self.readers[key]
                if key in self.retired:
                    self.retired.discard(key)
                    self._drop(*key)

    def retire(self, record_id: int, generation: int) -> None:
        """A generation was replaced: its chunks go now, or after its last reader."""
        if self.readers[(record_id, generation)]:
            self.retired.add((record_id, generation))
        else:
            self._drop(record_id, generation)

    def _drop(self, record_id: int, generation: int) -> None:
        task = asyncio.create_task(self._dropped(record_id, generation), name=f"bgfetch drop {record_id}")
        self._drops.add(task)
        task.add_done_callback(self._drops.discard)

    async def _dropped(self, record_id: int, generation: int) -> None:
        try:
            await self.storage.drop_generation(record_id, generation)
        except StorageFault as exc:  # the next start deletes them (Storage.forget_renewals)
            logger.warning("the replaced body of record %d stays until the store restarts: %s", record_id, exc)
            return
        self.dropped()

    async def close(self) -> None:
        """Stop every renewal (each is given up at the next start) and finish the deletions."""
        tasks = [task for task in self.tasks.values() if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._drops, return_exceptions=True)
