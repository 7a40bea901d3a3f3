"""The transfer loop: runs registrations on the store's own httpx client, pausing and resuming.

Errors are sorted at this boundary, as httpx maps httpcore's: transport trouble (refused,
reset, timeout, a body cut short) becomes `Pause` — the registration waits and retries with
capped exponential backoff, resuming with `Range`/`If-Range`; a bad status, a limit or an
integrity mismatch becomes `Failure` and ends it.
"""

import asyncio
import base64
import hashlib
import logging
import random
import re
from typing import TYPE_CHECKING

import httpcore
import httpx

from . import bodies, headers, schema, tables
from .bodies import BodySink

if TYPE_CHECKING:
    from .service import Store

logger = logging.getLogger(__name__)

RETRY_BASE = 0.5

# httpcore reads a response 64 KiB at a time, and each read costs more in its anyio
# layers than the bytes do: reading 256 KiB (what asyncio hands over at most) made a
# background fetch of 1 GiB from a loopback nginx about 1.4x faster. This process is ours.
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = 256 * 1024


class Pause(Exception):
    """The transfer cannot go on now; it will be retried."""


class Failure(Exception):
    """The registration fails with `reason` (a spec failureReason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, complete length or None) of a `Content-Range` response header."""
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None
    first, _, total = match.groups()
    return int(first), None if total == "*" else int(total)


class TransferLoop:
    """Runs each active registration as a task; `concurrency` of them fetch at once."""

    def __init__(self, store: "Store", client: httpx.AsyncClient, concurrency: int, retry_cap: float):
        self.store = store
        self.client = client
        self.retry_cap = retry_cap
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: dict[str, asyncio.Task] = {}
        self._wake: dict[str, asyncio.Event] = {}

    def start(self, reg_id: str) -> None:
        task = asyncio.create_task(self._run(reg_id), name=f"bgfetch {reg_id}")
        self.tasks[reg_id] = task
        task.add_done_callback(lambda t: self.tasks.pop(reg_id, None) if self.tasks.get(reg_id) is t else None)

    def wake(self, reg_id: str) -> None:
        """Retry a paused registration now instead of at the end of its backoff."""
        if event := self._wake.get(reg_id):
            event.set()

    async def stop(self, reg_id: str) -> None:
        if task := self.tasks.pop(reg_id, None):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        for reg_id in list(self.tasks):
            await self.stop(reg_id)

    async def _run(self, reg_id: str) -> None:
        attempt = 0
        while True:
            async with self.slots:
                await self.store.transition(reg_id, "start")
                received = self.store.received(reg_id)
                try:
                    await self._fetch_all(reg_id)
                except Pause as exc:
                    logger.info("%s paused: %s", reg_id, exc)
                    await self.store.transition(reg_id, "pause", error=str(exc))
                except Failure as exc:
                    logger.info("%s failed (%s): %s", reg_id, exc.reason, exc)
                    await self.store.transition(reg_id, "fail", reason=exc.reason, error=str(exc))
                    return
                else:
                    await self.store.transition(reg_id, "succeed")
                    return
            attempt = 0 if self.store.received(reg_id) > received else attempt + 1
            await self._sleep(reg_id, backoff(attempt, self.retry_cap))
            await self.store.transition(reg_id, "retry")

    async def _sleep(self, reg_id: str, seconds: float) -> None:
        event = self._wake[reg_id] = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            self._wake.pop(reg_id, None)

    async def _fetch_all(self, reg_id: str) -> None:
        for record in tables.records(self.store.db, reg_id):
            if not record["complete"]:
                await self._fetch_record(reg_id, record)

    async def _fetch_record(self, reg_id: str, record) -> None:
        fields = headers.upstream(headers.parse(record["request_headers"]))
        stored, generation = record["stored"], record["generation"]
        if stored:
            if check := validator(headers.parse(record["response_headers"])):
                fields += [("Range", f"bytes={stored}-"), ("If-Range", check)]
            else:  # no validator: a resumed body could mix two versions; start again
                generation, stored = await self.store.restart_record(record["id"]), 0
        fields.append(("Accept-Encoding", "identity"))
        sink = None
        try:
            async with self.client.stream(
                record["method"], record["url"], headers=fields, content=record["request_body"]
            ) as response:
                generation, offset, size = await self._accept(record, response, stored, generation)
                sink = BodySink(
                    self.store.writer, record["id"], generation, offset,
                    lambda _rid: self.store.committed(reg_id),
                )
                limit = self.store.download_limit(reg_id, record["id"])
                async for data in response.aiter_raw():
                    if limit is not None and sink.position + len(data) > limit:
                        raise Failure("download-total-exceeded", f"{record['url']} is larger than downloadTotal allows")
                    await sink.write(data)
        except httpx.TransportError as exc:
            raise Pause(f"{record['url']}: {type(exc).__name__}: {exc or 'connection lost'}") from exc
        finally:
            if sink is not None:
                await sink.close()
        if size is not None and sink.offset != size:
            raise Pause(f"{record['url']}: body ended at {sink.offset} of {size} bytes")
        await self._check_integrity(record, sink.offset)
        await self.store.complete_record(record["id"])

    async def _accept(self, record, response: httpx.Response, stored: int, generation: int):
        """Decide what the response means for the stored bytes.

        Returns (generation, offset the body continues at, complete size or None)."""
        status = response.status_code
        if status == 206 and stored:
            found = content_range(response.headers.get("content-range"))
            if found and found[0] == stored:
                return generation, stored, found[1]
            raise Pause(f"{record['url']}: resume answered with Content-Range {response.headers.get('content-range')!r}")
        if status in (401, 403) and stored:
            raise Pause(
                f"{record['url']}: the origin refused the stored credentials ({status}) while resuming;"
                " give new headers or a new URL with PATCH /api/fetches/{id}"
            )
        if not 200 <= status < 300 or status == 206:
            await self.store.set_response(record["id"], status, list(response.headers.multi_items()), None)
            raise Failure("bad-status", f"{record['url']} answered {status}")
        if stored:
            generation = await self.store.restart_record(record["id"])
        size = int(response.headers["content-length"]) if "content-length" in response.headers else None
        await self.store.set_response(record["id"], status, list(response.headers.multi_items()), size)
        return generation, 0, size

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
