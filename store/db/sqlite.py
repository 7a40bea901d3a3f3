"""The storage contract on SQLite: two files (the database and its bodies, `schema`), written by
one thread, read on the event loop.

Writes go to the writer thread (`writer.Writer`), many to a transaction; reads use this
process's read-only connections: the database's never waits for the writer (WAL); a body read
that meets the writer's commit in the bodies file waits for it on the event loop, a few
milliseconds at a time, never inside SQLite. See `storage.Storage`.
"""

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Iterator

from store.db import chunks, faults, lookups, records, registrations, renewals, schema
from store.db.faults import StorageFault, free_bytes
from store.db.reports import Figure, Readiness, Tally
from store.db.storage import MayReplace, NewRecord, Page, Record, RequestChange, Step, Storage
from store.db.writer import Writer

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024  # what a transfer commits at a time: the room a retry asks for first
# A writer turn of a DELETE's removal or of giving space back stays far below 100 ms (measured: a
# GiB of chunks removed in 11-49 ms; 256 pages given back in a median 31 ms, up to 206 ms when
# they had to be read from the disk first), so transfers and state changes keep being written.
PURGE_CHUNKS = 128
RECLAIM_PAGES = 64  # 4 MiB
COMMIT_WAIT = 0.002  # seconds a body read waits for the writer's commit, before it tries again
PROBE_SECONDS = 1.0  # how long a readiness probe waits for the write lock (the writer's batches take ms)


def _reconcile(conn: sqlite3.Connection) -> None:
    if fixed := chunks.reconcile(conn):
        logger.info("%d records kept the bytes that both files of the store agree on", fixed)


class SqliteStorage(Storage):
    def __init__(self, path: str, writer: Writer) -> None:
        self.path = path
        self.writer = writer
        self.db = schema.connect(path, readonly=True)
        self.bodies = schema.connect(path, readonly=True)  # for `read` and `spans` alone: they do not wait for locks
        self.bodies.execute("PRAGMA busy_timeout=0")
        self.closed = False

    @classmethod
    def open(cls, path: str) -> "SqliteStorage":
        """Check and migrate the database (refusing any file that is not a bgfetch store), then
        start its writer thread, whose first transaction makes the two files agree after a crash
        (`chunks.reconcile`). Call from the event loop that will await its writes."""
        conn = schema.connect(path)
        try:
            schema.migrate(conn)
        finally:
            conn.close()
        return cls(path, Writer(path, asyncio.get_running_loop(), first=_reconcile))

    # -- registrations ---------------------------------------------------------

    def registration(self, reg_id: str) -> dict:
        return registrations.registration(self.db, reg_id)

    def ids(self, active_only: bool = True) -> list[str]:
        return registrations.ids(self.db, active_only)

    def page(self, active_only: bool, limit: int, after: int | None = None, newest_first: bool = False) -> Page:
        return registrations.page(self.db, active_only, limit, after, newest_first)

    async def create(self, registration: dict, new: list[NewRecord], may_replace: MayReplace) -> None:
        await self.writer.submit(registrations.create, registration, new, may_replace)

    async def transition(self, reg_id: str, event: str, step: Step, reason: str = "", error: str = "",
                         held_pause: str | None = None) -> str:
        return await self.writer.submit(registrations.transition, reg_id, event, step, reason, error, held_pause)

    async def requeue_active(self, step: Step) -> list[str]:
        return await self.writer.submit(registrations.requeue_active, step)

    async def update(self, reg_id: str, title: str | None, icons: list | None, changes: list[RequestChange]) -> None:
        await self.writer.submit(registrations.update, reg_id, title, icons, changes)

    async def delete(self, reg_id: str) -> int:
        return await self.writer.submit(registrations.delete, reg_id)

    # -- records ---------------------------------------------------------------

    def records(self, reg_id: str) -> list[Record]:
        return records.records(self.db, reg_id)

    def record(self, record_id: int) -> Record:
        return records.record(self.db, record_id)

    def record_at(self, reg_id: str, index: int) -> Record | None:
        return records.record_at(self.db, reg_id, index)

    def received(self, reg_id: str) -> int:
        return records.received(self.db, reg_id)

    def download_room(self, reg_id: str, record_id: int) -> int | None:
        return records.download_room(self.db, reg_id, record_id)

    def held(self, record_id: int | None = None) -> int:
        return records.held(self.db, record_id)

    def servable(self, url: str, credential: str, fields: list[tuple[str, str]] = ()) -> int | None:
        return lookups.servable_record(self.db, url, credential, fields)

    def urls(self) -> Iterator[str]:
        return lookups.record_urls(self.db)

    async def set_response(self, record_id: int, status: int, fields: list, size: int | None,
                           reusable: bool = True, selecting: str = "", count_held: bool = True) -> int:
        return await self.writer.submit(
            records.set_response, record_id, status, fields, size, reusable, selecting, count_held)

    async def refresh_response(self, record_id: int, generation: int, fields: list) -> bool:
        return await self.writer.submit(records.refresh_response, record_id, generation, fields)

    async def restart_record(self, record_id: int) -> int:
        return await self.writer.submit(records.restart, record_id)

    async def complete_record(self, record_id: int) -> None:
        await self.writer.submit(records.complete, record_id)

    # -- renewals ----------------------------------------------------------------

    def renewal(self, record_id: int) -> Record | None:
        return renewals.renewal(self.db, record_id)

    async def begin_renewal(self, record_id: int, status: int, fields: list, size: int | None,
                            selecting: str = "") -> int:
        return await self.writer.submit(renewals.begin, record_id, status, fields, size, selecting)

    async def complete_renewal(self, record_id: int, generation: int) -> int | None:
        return await self.writer.submit(renewals.complete, record_id, generation)

    async def drop_renewal(self, record_id: int, generation: int) -> None:
        await self.writer.submit(renewals.drop, record_id, generation)

    async def drop_generation(self, record_id: int, generation: int) -> None:
        await self.writer.submit(renewals.drop_generation, record_id, generation)

    async def forget_renewals(self) -> None:
        await self.writer.submit(renewals.forget)

    # -- bodies ----------------------------------------------------------------

    def append(self, record_id: int, generation: int, offset: int, pieces: list[bytes], size: int) -> Awaitable[bool]:
        return self.writer.submit(chunks.append, record_id, generation, offset, pieces, size=size)

    async def spans(self, record_id: int, generation: int) -> list[tuple[int, int]]:
        """Read as `read` reads: while the writer commits into the bodies file it waits
        COMMIT_WAIT and asks again, for BUSY_TIMEOUT_MS at most (then StorageBusy, a pause)."""
        for _ in range(int(schema.BUSY_TIMEOUT_MS / 1000 / COMMIT_WAIT)):
            try:
                return chunks.spans(self.bodies, record_id, generation)
            except sqlite3.OperationalError as exc:
                if not _committing(exc):
                    raise
                await asyncio.sleep(COMMIT_WAIT)
        raise faults.StorageBusy(self.path)

    async def read(self, record_id: int, start: int, end: int, generation: int | None = None) -> AsyncIterator[bytes]:
        """The database commits before the bodies file: a reader told of bytes may find the
        writer still committing them (BUSY), or not yet begun (no chunk); either way it waits
        COMMIT_WAIT on the loop, so a caller that asks again at once does not spin."""
        pos = start
        while True:
            try:
                for data in chunks.read(self.bodies, record_id, pos, end, generation):
                    pos += len(data)
                    yield data
                if pos == start:
                    await asyncio.sleep(COMMIT_WAIT)
                return
            except sqlite3.OperationalError as exc:
                if not _committing(exc):
                    raise
                await asyncio.sleep(COMMIT_WAIT)

    async def digest(self, record_id: int, size: int) -> bytes:
        return await asyncio.to_thread(self._reading, chunks.sha256, record_id, size)

    def _reading(self, read, *args):
        """`read(conn, *args)` on a read-only connection of its own (this runs on another thread)."""
        conn = schema.connect(self.path, readonly=True)
        try:
            return read(conn, *args)
        finally:
            conn.close()

    async def ensure_room(self, size: int) -> None:
        await self.writer.submit(chunks.nothing, size=size)

    async def give_back_space(self) -> None:
        """The chunks of deleted registrations go first, PURGE_CHUNKS a turn (a crash leaves them
        for the next start); then the free pages, a few a turn. Page moves go through the WAL: on
        a small disk a turn moves what its reserve holds a quarter of. A fault stops it: new
        chunks then take the free pages, and the next DELETE or start goes on."""
        pages = max(1, min(RECLAIM_PAGES, self.writer.room.reserve // (4 * schema.PAGE_SIZE)))
        try:
            while await self.writer.submit(registrations.purge_some, PURGE_CHUNKS):
                pass
            while await self.writer.submit(chunks.reclaim_space, pages) == pages:
                pass
        except StorageFault as exc:
            logger.warning("giving space back to the file system stopped: %s; new chunks use the free pages", exc)
        self.writer.give_back()

    # -- for those who run it ----------------------------------------------------

    async def tally(self) -> Tally:
        return await asyncio.to_thread(self._reading, registrations.tally)

    async def figures(self) -> list[Figure]:
        return await asyncio.to_thread(self._sizes)

    def _sizes(self) -> list[Figure]:
        return [
            Figure("database_bytes", "Size of the SQLite database file.", _size(self.path)),
            Figure("bodies_bytes", "Size of the SQLite file of bodies beside it.", _size(schema.bodies_path(self.path))),
            Figure("wal_bytes", "Size of the SQLite write-ahead log: commits not yet copied into the database"
                   " (and space not yet given back).", _size(self.path + "-wal")),
            Figure("disk_free_bytes", "Bytes free on the file system that holds the database.", free_bytes(self.path)),
        ]

    async def readiness(self) -> list[Readiness]:
        if self.closed or not self.writer.alive:
            return [Readiness("database", False, f"{self.path} is closed")]
        trouble = await asyncio.to_thread(schema.probe, self.path, PROBE_SECONDS)
        return [Readiness("database", trouble is None, trouble or "")]

    async def close(self) -> None:
        self.closed = True
        await asyncio.to_thread(self.writer.close)
        self.db.close()
        self.bodies.close()


def _committing(exc: sqlite3.OperationalError) -> bool:
    """Whether a read of the bodies file met the writer committing into it."""
    return exc.sqlite_errorcode & 0xFF in (faults.SQLITE_BUSY, faults.SQLITE_LOCKED)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # no WAL at this moment (truncated, or never made)
        return 0
