"""A fleet's body read back: the committed chunks of a generation, object by object, and its digest."""

import asyncio
import hashlib
from collections.abc import AsyncIterator

from store.db.postgres import bodies
from store.db.values import BodyLost


async def read(storage, record_id: int, start: int, end: int, generation: int | None = None) -> AsyncIterator[bytes]:
    """`Storage.read` of a `PostgresStorage`: each chunk's object from the bucket, with Range; a
    chunk whose object is missing or short is BodyLost while a chunk still names it."""
    if generation is None:
        generation = storage.mirror.record(record_id).generation
    pos = start
    while pos < end:
        async with storage.connection() as conn:
            chunks = await bodies.chunks_from(conn, record_id, generation, pos, end)
        if not chunks or chunks[0]["offset"] > pos:
            return
        for chunk in chunks:
            if chunk["offset"] > pos:
                return
            stop = min(chunk["offset"] + chunk["size"], end)
            try:
                async for data in storage.objects.read(chunk["object"], pos - chunk["offset"], stop - chunk["offset"]):
                    pos += len(data)
                    yield data
            except BodyLost:
                async with storage.connection() as conn:
                    if await bodies.names(conn, record_id, chunk["object"]):
                        raise
                return  # the body moved on meanwhile (restarted, failed, deleted): the caller sees it
            if pos >= end:
                return


async def digest(storage, record_id: int, size: int) -> bytes:
    digest = hashlib.sha256()
    async for data in storage.read(record_id, 0, size):
        await asyncio.to_thread(digest.update, data)
    return digest.digest()

