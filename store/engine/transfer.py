"""The transfer loop: runs registrations on the store's own httpx client, pausing and resuming.

Errors are sorted at this boundary, as httpx maps httpcore's: transport trouble (refused,
reset, timeout, DNS, a body cut short) becomes `Pause` — the registration waits and retries
with capped exponential backoff, resuming with `Range`/`If-Range`; a bad status, a limit, an
integrity mismatch or an origin that no retry can fix (an untrusted certificate, a scheme httpx
cannot fetch) becomes `Failure` and ends it. A storage fault (`faults.StorageFault`: the disk
is full, another process holds the database's lock) is a pause too: every committed byte
stays, and the retry resumes from them; after a full disk the retry first asks the writer
for room for a chunk, so the origin is not asked for bytes that could not be stored.

Resuming: a `206` whose `Content-Range` starts at the stored length appends; a `200` means the
origin ignored `Range` or the entity changed, so the record starts again from byte 0 under a new
generation (readers of the old one are cut off: two versions are never mixed). A record whose
response had neither a strong ETag nor Last-Modified is never resumed: nothing could tell a
changed entity from the same one, so it starts again from byte 0.
"""

import asyncio
import base64
import hashlib
import logging
import random
import re
from typing import TYPE_CHECKING

import httpx

from store.db import bodies, schema, tables
from store.engine import headers
from store.db.bodies import BodySink
from store.db.faults import StorageFault, StorageFull
from store.engine.outcomes import Failure, Limit, Pause, transport_problem

if TYPE_CHECKING:
    from store.engine.service import Store

logger = logging.getLogger(__name__)

RETRY_BASE = 0.5


def backoff(attempt: int, cap: float) -> float:
    """Seconds to wait before retry `attempt` (0-based): doubling, capped, with jitter."""
    delay = min(cap, RETRY_BASE * 2**attempt)
    return delay * random.uniform(0.5, 1.0)


def validator(fields: list) -> str | None:
    """What `If-Range` may carry: a strong ETag, else Last-Modified."""
    etag = headers.first(fields, "etag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.first(fields, "last-modified")


_CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-\d+|\*)/(\d+|\*)$")


def content_range(value: str | None) -> tuple[int | None, int | None] | None:
    """(first byte, complete length) of a `Content-Range` response header, None for an unknown
    part; `bytes */N` (a 416's) gives (None, N)."""
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None
    first, total = match.groups()
    return None if first is None else int(first), None if total == "*" else int(total)


class TransferLoop:
    """Runs each active registration as a task; `concurrency` of them fetch at once."""

    def __init__(
        self, store: "Store", client: httpx.AsyncClient, concurrency: int, retry_cap: float,
        quota: int | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.retry_cap = retry_cap
        self.quota = quota
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: dict[str, asyncio.Task] = {}
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
        attempt = 0
        while True:
            if paused:
                await self._sleep(reg_id, backoff(attempt, self.retry_cap))
                try:
                    await self.store.transition(reg_id, "retry")
                except StorageFault:  # still paused (in memory): the database takes no writes yet
                    attempt += 1
                    continue
            async with self.slots:
                received = self.store.received(reg_id)
                if await self._attempt(reg_id):
                    return
            paused = True
            attempt = 0 if self.store.received(reg_id) > received else attempt + 1

    async def _attempt(self, reg_id: str) -> bool:
        """One try, with a slot held; whether the registration has ended."""
        try:
            await self.store.transition(reg_id, "start")
        except StorageFault:
            return False  # the store holds it as paused
        try:
            if reg_id in self._short_of_room:  # room for a chunk before the origin is asked
                await self.store.room_for_chunk()
            await self._fetch_all(reg_id)
        except (Pause, StorageFault) as exc:
            logger.info("%s paused: %s", reg_id, exc)
            self._short_of_room.discard(reg_id)
            if isinstance(exc, StorageFull):
                self._short_of_room.add(reg_id)
            await self.store.transition(reg_id, "pause", error=str(exc))
            return False
        except Failure as exc:
            logger.info("%s failed (%s): %s", reg_id, exc.reason, exc)
            return await self._end(reg_id, "fail", reason=exc.reason, error=str(exc))
        except Exception as exc:  # a bug must not leave the registration fetching forever
            logger.exception("%s failed unexpectedly", reg_id)
            return await self._end(reg_id, "fail", reason="fetch-error", error=f"internal error: {exc!r}")
        return await self._end(reg_id, "succeed")

    async def _end(self, reg_id: str, event: str, **details: str) -> bool:
        """Write the registration's end; when the database takes no writes it pauses instead,
        and the next try ends it."""
        try:
            await self.store.transition(reg_id, event, **details)
        except StorageFault as exc:
            logger.info("%s paused: %s", reg_id, exc)
            await self.store.transition(reg_id, "pause", error=str(exc))
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

    async def _fetch_all(self, reg_id: str) -> None:
        for record in tables.records(self.store.db, reg_id):
            if not record["complete"]:
                await self._fetch_record(reg_id, record)

    async def _fetch_record(self, reg_id: str, record) -> None:
        stored, generation = record["stored"], record["generation"]
        if stored and stored == record["size"]:  # whole when the store stopped, not yet marked
            await self._complete(record, stored)
            return
        fields = headers.upstream(headers.parse(record["request_headers"]))
        if stored:
            if check := validator(headers.parse(record["response_headers"])):
                fields += [("Range", f"bytes={stored}-"), ("If-Range", check)]
            else:  # without a validator a resumed body could mix two versions: start again
                generation, stored = await self.store.restart_record(record["id"]), 0
        fields.append(("Accept-Encoding", "identity"))
        sink = None
        try:
            async with self.client.stream(
                record["method"], record["url"], headers=fields, content=record["request_body"]
            ) as response:
                generation, offset, size, held = await self._accept(record, response, stored, generation)
                limit = self._limit(reg_id, record["id"], held)
                if limit and size is not None and size > limit.most:
                    raise limit.failure(record["url"])
                sink = BodySink(
                    self.store.writer, record["id"], generation, offset,
                    lambda _rid: self.store.committed(reg_id),
                )
                if offset != size:
                    async for data in response.aiter_raw():
                        if limit and sink.position + len(data) > limit.most:
                            raise limit.failure(record["url"])
                        await sink.write(data)
        except httpx.TransportError as exc:
            raise transport_problem(record["url"], exc) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # too many redirects, a bad URL
            raise Failure("fetch-error", f"{record['url']}: {exc}") from exc
        finally:
            if sink is not None:
                await sink.close()
        if size is not None and sink.offset != size:
            raise Pause(f"{record['url']}: body ended at {sink.offset} of {size} bytes")
        await self._complete(record, sink.offset)

    async def _accept(self, record, response: httpx.Response, stored: int, generation: int):
        """Decide what the response means for the stored bytes.

        Returns (generation, offset the body continues at, complete size or None, bytes
        that every other record holds or expects)."""
        status, url = response.status_code, record["url"]
        if stored and status in (206, 416):
            found = content_range(response.headers.get("content-range")) or (None, None)
            first, total = found if status == 206 else (stored, found[1])
            same_length = None in (record["size"], total) or record["size"] == total
            if first == stored and same_length:
                size = total if total is not None else record["size"]
                return generation, stored, size, self.store.held(record["id"])
            await self.store.restart_record(record["id"])
            raise Pause(
                f"{url}: the resume was answered {status} with Content-Range"
                f" {response.headers.get('content-range')!r}; starting again from byte 0"
            )
        if status in (401, 403) and stored:
            raise Pause(
                f"{url}: the origin refused the stored credentials ({status}) when resuming after"
                f" {stored} bytes; the bytes are kept: give the record new headers or a new URL"
                " (PATCH /api/fetches/{id})"
            )
        if not 200 <= status < 300 or status == 206:
            await self.store.set_response(record["id"], status, list(response.headers.multi_items()), None)
            raise Failure("bad-status", f"{url} answered {status}")
        if stored:
            generation = await self.store.restart_record(record["id"])
        size = int(response.headers["content-length"]) if "content-length" in response.headers else None
        held = await self.store.set_response(record["id"], status, list(response.headers.multi_items()), size)
        return generation, 0, size, held

    def _limit(self, reg_id: str, record_id: int, held: int) -> Limit | None:
        """The tighter of downloadTotal and the store's quota, for this record."""
        limits = []
        if (room := self.store.download_limit(reg_id, record_id)) is not None:
            limits.append(Limit(room, "download-total-exceeded", "downloadTotal"))
        if self.quota is not None:
            limits.append(Limit(self.quota - held, "quota-exceeded", "bgfetch_quota"))
        return min(limits, key=lambda limit: limit.most, default=None)

    async def _complete(self, record, size: int) -> None:
        await self._check_integrity(record, size)
        await self.store.complete_record(record["id"])

    async def _check_integrity(self, record, size: int) -> None:
        if not record["integrity"]:
            return
        digest = await asyncio.to_thread(_sha256, self.store.path, record["id"], size)
        expected = record["integrity"].removeprefix("sha256-")
        if base64.b64encode(digest).decode() != expected:
            raise Failure("fetch-error", f"{record['url']}: body does not match integrity {record['integrity']}")


def _sha256(path: str, record_id: int, size: int) -> bytes:
    conn = schema.connect(path, readonly=True)
    try:
        digest = hashlib.sha256()
        for data in bodies.read(conn, record_id, 0, size):
            digest.update(data)
        return digest.digest()
    finally:
        conn.close()
