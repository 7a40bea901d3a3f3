"""The transfer loop: runs each active registration as a task, pausing and resuming.

`concurrency` registrations fetch at once, the rest wait their turn. A try that cannot go on
(`Pause`, or a storage fault: a full disk, another process's lock) leaves the registration
paused; it is tried again after a capped exponential backoff (`retry.backoff`), resuming from
its committed bytes. After a full disk the retry first asks storage for room for a chunk, so
the origin is not asked for bytes that could not be stored. A `Failure` ends it. In a
fleet, a registration another node runs (`Elsewhere`: it holds the lease, or took it over) is
left to that node: the loop's task ends and writes nothing more of it.

The loop reports every state change to the registrations it runs for (`Registrations`: the
engine's `Store`) and reads and writes records only through the storage contract.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import httpx

from store.db import Elsewhere, Storage, StorageFault, StorageFull
from store.engine.outcomes import Failure, Pause, pause_reason
from store.engine.record_fetch import RecordFetch
from store.engine.retry import backoff
from store.engine.sink import CHUNK_BYTES

logger = logging.getLogger(__name__)


class Registrations(Protocol):
    """What the loop tells about the registrations it runs."""

    async def transition(self, reg_id: str, event: str, reason: str = "", error: str = "") -> None:
        """A lifecycle event; StorageFault when it cannot be written (a pause is then held)."""

    def committed(self, reg_id: str, progress: bool) -> None:
        """Something of `reg_id` was committed (with `progress`: body bytes)."""


class TransferLoop:
    def __init__(
        self, storage: Storage, client: httpx.AsyncClient, registrations: Registrations, *,
        concurrency: int, retry_cap: float, quota: int | None = None, fetched: Callable[[int], None] = lambda n: None,
        segments: int = 1,
    ) -> None:
        """`fetched(n)` is told of every `n` body bytes received from an origin."""
        self.storage = storage
        self.registrations = registrations
        self.retry_cap = retry_cap
        self.fetch = RecordFetch(storage, client, quota, registrations.committed, fetched, segments)
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: dict[str, asyncio.Task] = {}
        self._running = 0  # tasks holding a slot
        self._wake: dict[str, asyncio.Event] = {}
        self._woken: set[str] = set()
        self._short_of_room: set[str] = set()  # paused by a full disk

    def start(self, reg_id: str, paused: bool = False) -> None:
        """Run `reg_id`'s transfer; a `paused` one first waits out a backoff, then retries."""
        task = asyncio.create_task(self._run(reg_id, paused), name=f"bgfetch {reg_id}")
        self.tasks[reg_id] = task
        task.add_done_callback(lambda done: self._finished(reg_id, done))

    def _finished(self, reg_id: str, task: asyncio.Task) -> None:
        if self.tasks.get(reg_id) is task:
            del self.tasks[reg_id]
            self._woken.discard(reg_id)
            self._short_of_room.discard(reg_id)

    def counts(self) -> dict[str, int]:
        """How many transfers are running (a slot held), waiting for a slot, paused (waiting to retry)."""
        paused = len(self._wake)
        return {"running": self._running, "paused": paused, "waiting": len(self.tasks) - self._running - paused}

    def room_returned(self) -> None:
        """Space was given back: retry every registration that paused for want of it."""
        for reg_id in list(self._short_of_room):
            self.wake(reg_id)

    def wake(self, reg_id: str) -> None:
        """Retry a paused registration now instead of at the end of its backoff (also when it
        is about to pause: the next backoff is skipped)."""
        self._woken.add(reg_id)
        if event := self._wake.get(reg_id):
            event.set()

    async def stop(self, reg_id: str) -> None:
        if task := self.tasks.pop(reg_id, None):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Stop every transfer at once: one by one, each freed slot would start a queued
        registration's request only to cancel it (a wasted request to its origin)."""
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, reg_id: str, paused: bool = False) -> None:
        try:
            await self._tries(reg_id, paused)
        except Elsewhere as exc:  # a fleet: another node runs it now, and writes it
            logger.info("%s is left to another node: %s", reg_id, exc)

    async def _tries(self, reg_id: str, paused: bool) -> None:
        attempt = 0
        while True:
            if paused:
                await self._sleep(reg_id, backoff(attempt, self.retry_cap))
                try:
                    await self.registrations.transition(reg_id, "retry")
                except StorageFault:  # still paused (in memory): the database takes no writes yet
                    attempt += 1
                    continue
            async with self.slots:
                self._running += 1
                try:
                    received = self.storage.received(reg_id)
                    if await self._attempt(reg_id):
                        return
                finally:
                    self._running -= 1
            paused = True
            attempt = 0 if self.storage.received(reg_id) > received else attempt + 1

    async def _attempt(self, reg_id: str) -> bool:
        """One try, with a slot held; whether the registration has ended."""
        try:
            await self.registrations.transition(reg_id, "start")
        except StorageFault:
            return False  # the store holds it as paused
        try:
            if reg_id in self._short_of_room:  # room for a chunk before the origin is asked
                await self.storage.ensure_room(CHUNK_BYTES)
            for record in self.storage.records(reg_id):
                if not record.complete:
                    await self.fetch.run(record)
        except (Pause, StorageFault) as exc:  # the log's line is the store's (changelog)
            self._short_of_room.discard(reg_id)
            if isinstance(exc, StorageFull):
                self._short_of_room.add(reg_id)
            await self.registrations.transition(reg_id, "pause", reason=pause_reason(exc), error=str(exc))
            return False
        except Failure as exc:
            return await self._end(reg_id, "fail", reason=exc.reason, error=str(exc))
        except Elsewhere:
            raise  # the registration is another node's now: this one changes nothing of it
        except Exception as exc:  # a bug must not leave the registration fetching forever
            logger.exception("%s failed unexpectedly", reg_id)
            return await self._end(reg_id, "fail", reason="fetch-error", error=f"internal error: {exc!r}")
        return await self._end(reg_id, "succeed")

    async def _end(self, reg_id: str, event: str, **details: str) -> bool:
        """Write the registration's end; when the database takes no writes it pauses instead,
        and the next try ends it."""
        try:
            await self.registrations.transition(reg_id, event, **details)
        except StorageFault as exc:
            await self.registrations.transition(reg_id, "pause", reason=pause_reason(exc), error=str(exc))
            return False
        return True

    async def _sleep(self, reg_id: str, seconds: float) -> None:
        event = self._wake[reg_id] = asyncio.Event()
        if reg_id in self._woken:
            event.set()
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            self._wake.pop(reg_id, None)
            self._woken.discard(reg_id)
