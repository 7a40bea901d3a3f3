"""A fleet's body read back: the committed chunks of a generation, object by object, and its digest."""

import asyncio
import hashlib
from collections.abc import AsyncIterator

from store.db.postgres import bodies
from store.db.values import BodyLost


async def read(storage, record_id: int, start: int, end: int, generation: int | None = None) -> AsyncIterator[bytes]:
    """`Storage.read` of a `PostgresStorage`: each chunk's object from the bucket, with Range, the
    next one asked for while this one is read (an object store answers a GET after a few ms: one
    object after the other, that wait came between every two); a chunk whose object is missing
    or short is BodyLost while a chunk still names it."""
    if generation is None:
        generation = storage.mirror.record(record_id).generation
    pos = start
    while pos < end:
        async with storage.connection() as conn:
            chunks = await bodies.chunks_from(conn, record_id, generation, pos, end)
        parts = _following(chunks, pos, end)
        if not parts:
            return
        opening = _open(storage, parts[0])
        try:
            for index, (name, _, _) in enumerate(parts):
                try:
                    opened = await opening
                    opening = _open(storage, parts[index + 1]) if index + 1 < len(parts) else None
                    async for data in storage.objects.pieces(opened):
                        pos += len(data)
                        yield data
                except BodyLost:
                    async with storage.connection() as conn:
                        if await bodies.names(conn, record_id, name):
                            raise
                    return  # the body moved on meanwhile (restarted, failed, deleted): the caller sees it
        finally:
            if opening is not None:
                opening.add_done_callback(_close)
        if pos < end and len(parts) < len(chunks):
            return  # the chunks stop following each other: the rest is not committed yet


def _following(chunks: list[dict], pos: int, end: int) -> list[tuple[str, int, int]]:
    """The object, first and last byte (exclusive, within it) of each chunk that holds the bytes
    from `pos` on, as long as they follow each other, up to `end`."""
    parts = []
    for chunk in chunks:
        if chunk["offset"] > pos or pos >= end:
            break
        stop = min(chunk["offset"] + chunk["size"], end)
        parts.append((chunk["object"], pos - chunk["offset"], stop - chunk["offset"]))
        pos = stop
    return parts


def _open(storage, part: tuple[str, int, int]) -> asyncio.Task:
    return asyncio.ensure_future(storage.objects.open(*part))


def _close(opening: asyncio.Task) -> None:
    """An object asked for ahead and not read (the reader stopped): let its connection go."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


async def digest(storage, record_id: int, size: int) -> bytes:
    digest = hashlib.sha256()
    async for data in storage.read(record_id, 0, size):
        await asyncio.to_thread(digest.update, data)
    return digest.digest()

