"""The sink a transfer writes a body into: bytes buffered into chunks, committed a few at a time."""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from store.db import Storage

CHUNK_BYTES = 1024 * 1024
FLUSH_SECONDS = 0.25


def chunks_in_flight(storage: Storage) -> int:
    """How many chunks of one body may wait for `storage` to commit them (`Storage.in_flight_bytes`)."""
    return max(1, storage.in_flight_bytes // CHUNK_BYTES)


class BodySink:
    """Buffers upstream bytes into chunks and appends them to storage.

    A chunk is committed when it reaches CHUNK_BYTES or has waited FLUSH_SECONDS, so a
    slow transfer is readable (and survives a crash) a quarter second behind the wire.
    At most `in_flight` chunks (`chunks_in_flight`, shared by the parts of a body fetched over
    several connections) wait for storage: a fast upstream is slowed to disk speed.
    """

    def __init__(
        self, storage: Storage, record_id: int, generation: int, offset: int, on_commit: Callable[[], None],
        in_flight: int | None = None,
    ) -> None:
        self.in_flight = in_flight or chunks_in_flight(storage)
        self.storage = storage
        self.record_id = record_id
        self.generation = generation
        self.offset = offset
        self.on_commit = on_commit
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._since = 0.0
        self._pending: deque[Awaitable[bool]] = deque()

    @property
    def position(self) -> int:
        """Where the next byte goes: committed, in flight and buffered bytes counted."""
        return self.offset + self._buffered

    async def write(self, data: bytes) -> None:
        if not self._buffer:
            self._since = time.monotonic()
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= CHUNK_BYTES or time.monotonic() - self._since >= FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            pieces, size = self._buffer, self._buffered
            self._buffer, self._buffered = [], 0
            committed = asyncio.ensure_future(
                self.storage.append(self.record_id, self.generation, self.offset, pieces, size)
            )
            committed.add_done_callback(lambda _: self.on_commit())
            self._pending.append(committed)
            self.offset += size
        while len(self._pending) > self.in_flight:
            await self._pending.popleft()

    async def close(self) -> None:
        """Commit what is buffered and wait until every chunk is stored; the first chunk that
        failed (a full disk, a lock) raises once all of them have settled."""
        try:
            await self.flush()
        finally:
            outcomes = await asyncio.gather(*self._pending, return_exceptions=True)
            self._pending.clear()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
