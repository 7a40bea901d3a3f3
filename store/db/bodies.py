"""Record bodies in and out of SQLite chunks: the sink a transfer writes, the reader a response streams."""

import asyncio
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator

from store.db import tables
from store.db.writer import Writer

CHUNK_BYTES = 1024 * 1024
FLUSH_SECONDS = 0.25
IN_FLIGHT = 4  # 8 held 10 MB more at the peak of a 4 GiB fetch, for no speed measured beyond the noise
# A response reads and sends 256 KiB at a time: with two pieces in flight per client, 100
# clients reading at once hold about 50 MB, not the 200 MB that whole chunks would.
READ_BYTES = 256 * 1024


class BodySink:
    """Buffers upstream bytes into chunks and commits them through the writer.

    A chunk is committed when it reaches CHUNK_BYTES or has waited FLUSH_SECONDS, so a
    slow transfer is readable (and survives a crash) a quarter second behind the wire.
    At most IN_FLIGHT chunks wait for the writer: a fast upstream is slowed to disk speed.
    """

    def __init__(
        self,
        writer: Writer,
        record_id: int,
        generation: int,
        offset: int,
        on_commit: Callable[[int], None],
    ) -> None:
        self.writer = writer
        self.record_id = record_id
        self.generation = generation
        self.offset = offset
        self.on_commit = on_commit
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._since = 0.0
        self._pending: deque[asyncio.Future] = deque()

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
            future = self.writer.submit(
                tables.append_chunk, self.record_id, self.generation, self.offset, pieces, size=size
            )
            future.add_done_callback(lambda _: self.on_commit(self.record_id))
            self._pending.append(future)
            self.offset += size
        while len(self._pending) > IN_FLIGHT:
            await self._pending.popleft()

    async def close(self) -> None:
        """Commit what is buffered and wait until every chunk is on disk; the first chunk
        that failed (a full disk, a lock) raises once all of them have settled."""
        try:
            await self.flush()
        finally:
            outcomes = await asyncio.gather(*self._pending, return_exceptions=True)
            self._pending.clear()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


def read(conn: sqlite3.Connection, record_id: int, start: int, end: int) -> Iterator[bytes]:
    """Committed bytes of a record from `start` up to `end` (exclusive), READ_BYTES at a time.

    Stops early where the committed bytes end; the caller waits for more and asks again.
    No blob stays open across a `yield`: the connection is shared, and an open blob would
    hold its read transaction — and every reader's view of the store — in the past.
    """
    pos = start
    while pos < end:
        rows = tables.chunks_from(conn, record_id, pos)
        if not rows or rows[0]["offset"] > pos:
            return
        for row in rows:
            if row["offset"] > pos:
                return
            stop = min(row["offset"] + row["size"], end)
            while pos < stop:
                with conn.blobopen("chunks", "data", row["id"], readonly=True) as blob:
                    blob.seek(pos - row["offset"])
                    data = blob.read(min(READ_BYTES, stop - pos))
                pos += len(data)
                yield data
            if pos >= end:
                return


class Unsatisfiable(Exception):
    """The Range header asks for nothing inside the body."""


_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
BEYOND = 2**63  # stands for a position of more than 18 digits: past the end of any body


def parse_range(header: str | None, size: int | None) -> tuple[int, int] | None:
    """A single `Range: bytes=...` as (start, end exclusive); None means the whole body.

    Multiple ranges, other units, an unparsable value and an unknown size are answered with
    the whole body, as RFC 9110 allows; a range wholly past the end raises Unsatisfiable.
    Positions of any length are read (leading zeros too), none with int() of a long string.
    """
    if not header or size is None:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = (_position(text) for text in match.groups())
    if first is None:
        if last == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - last), size
    if last is not None and last < first:
        return None  # not a valid range: ignored
    if first >= size:
        raise Unsatisfiable(header)
    return first, size if last is None else min(last + 1, size)


def _position(digits: str) -> int | None:
    """A byte position of a Range (None when absent); BEYOND for one too long to matter."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else BEYOND
