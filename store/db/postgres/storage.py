"""The storage contract on PostgreSQL and S3-compatible object storage: one store shared by a fleet of nodes.

PostgreSQL holds the registrations, records, chunk lists and leases (psycopg 3 and its pool,
asynchronous: the event loop never waits on the network); the bucket holds the bodies, one
object per committed chunk (`objects.ObjectStore`, boto3 on threads of its own). The
contract's plain reads are answered from the node's copy in memory (`mirror.Mirror`), which
every node keeps current from the others' notifications (`LISTEN bgfetch`). Transfers run
under leases with fencing tokens (`leases`); a chunk becomes readable by every node the
moment it is committed (`bodies`). See `storage.Storage` for the contract.
"""

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator

import psycopg

from store.db import locations
from store.db.faults import StorageUnreachable
from store.db.objects import ObjectStore
from store.db.reports import Figure, Readiness, Tally
from store.db.postgres import bodies, connect, leases, reading, renewals, reports, schema, writes
from store.db.postgres.appends import BATCH_BYTES, Appends
from store.db.postgres.chores import Chores
from store.db.postgres.mirror import Mirror
from store.db.storage import (
    Conflict, MayReplace, NewRecord, Page, Record, RequestChange, Step, Storage, Watcher,
)

logger = logging.getLogger(__name__)

COLLECT_BATCH = 1000  # doomed objects deleted per turn of the collector


class PostgresStorage(Storage):
    parts = False  # a chunk commits only at the end of the stored bytes (bodies.commit)
    in_flight_bytes = 2 * BATCH_BYTES  # an object being written, and the next one gathering

    def __init__(self, conninfo: str, where: str, objects: ObjectStore, node: str, lease_seconds: float) -> None:
        self.conninfo = conninfo
        self.where = where  # the database's URL without its password, for messages
        self.objects = objects
        self.node = node
        self.lease_seconds = lease_seconds
        self.options = connect.connection_options(node, lease_seconds)
        self.pool = connect.pool(conninfo, self.options)
        self.mirror = Mirror()
        self.tokens: dict[str, int] = {}  # registration id -> the lease token this node claimed
        self.lease_counts = leases.LeaseCounts()
        self.watcher: Watcher | None = None
        self.appends = Appends(self)
        self.chores = Chores(self)

    @classmethod
    async def open(cls, db: str, password: str | None, bodies_url: str, access_key: str | None = None,
                   secret_key: str | None = None, lease_seconds: float = 10.0) -> "PostgresStorage":
        """Check the bucket, migrate the database (several nodes at once: one migrates), load the
        copy in memory and start listening. Unopenable, one line naming what and why."""
        where = locations.redacted(db)
        conninfo = psycopg.conninfo.make_conninfo(db, password=password) if password else db
        objects = ObjectStore(locations.parse_bodies(bodies_url), access_key, secret_key)
        node = uuid.uuid4().hex[:12]
        try:
            await objects.check()
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=connect.CONNECT_SECONDS)
            except psycopg.Error as exc:
                raise locations.Unopenable(f"bgfetch_db {where}: cannot connect: {connect.one_line(exc)}") from exc
            async with conn:
                applied = await schema.migrate(conn, where)
            if applied:
                logger.info("migrated %s: %s", where, ", ".join(applied))
            storage = cls(conninfo, where, objects, node, lease_seconds)
            await storage.pool.open(wait=True, timeout=connect.CONNECT_SECONDS * 2)
        except BaseException:
            objects.close()
            raise
        storage.chores.start()
        try:
            await asyncio.wait_for(storage.chores.listening.wait(), connect.CONNECT_SECONDS * 2)
        except TimeoutError:
            await storage.close()
            raise locations.Unopenable(f"bgfetch_db {where}: cannot listen for the other nodes' changes") from None
        logger.info("node %s of the fleet on %s, bodies in %s", node, where, objects.bodies)
        return storage

    def watch(self, watcher: Watcher) -> None:
        self.watcher = watcher

    async def tally(self) -> Tally | None:
        return await reports.tally(self)

    async def figures(self) -> list[Figure]:
        return await reports.figures(self)

    async def readiness(self) -> list[Readiness]:
        return await reports.readiness(self)

    @contextlib.asynccontextmanager
    async def connection(self):
        """A connection of the pool; the database not answering is StorageUnreachable (a pause)."""
        with connect.faults(self.where):
            async with self.pool.connection() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _changing(self, reg_id: str, event: str):
        """A transaction that changes `reg_id`; once it commits, this node's copy takes the
        registration as the transaction left it, and the other nodes are told."""
        async with self.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur
            row, records = await writes.read_registration(cur, reg_id)
            await self.send(cur, "reg" if row else "gone", reg_id, event)
        self.take(reg_id, row, records)

    async def send(self, cur, kind: str, reg_id: str, event: str = "", **more) -> None:
        note = json.dumps({"n": self.node, "k": kind, "r": reg_id, "e": event, **more})
        await cur.execute("SELECT pg_notify(%s, %s)", [connect.CHANNEL, note])

    def take(self, reg_id: str, row: dict | None, records: list[dict]) -> None:
        if row is None:
            self.mirror.drop_registration(reg_id)
            return
        self.mirror.put_registration(row)
        for record in records:
            self.mirror.put_record(record)

    # -- registrations ---------------------------------------------------------

    def registration(self, reg_id: str) -> dict:
        return self.mirror.registration(reg_id)

    def ids(self, active_only: bool = True) -> list[str]:
        return self.mirror.ids(active_only)

    def page(self, active_only: bool, limit: int, after: int | None = None, newest_first: bool = False) -> Page:
        return self.mirror.page(active_only, limit, after, newest_first)

    async def create(self, registration: dict, new: list[NewRecord], may_replace: MayReplace) -> None:
        try:
            async with self._changing(registration["id"], "create") as cur:
                await writes.create(cur, registration, new, may_replace)
        except psycopg.errors.UniqueViolation:  # another node made it a moment earlier
            raise Conflict(registration["id"]) from None

    async def transition(self, reg_id: str, event: str, step: Step, reason: str = "", error: str = "",
                         held_pause: str | None = None) -> str:
        async with self._changing(reg_id, event) as cur:
            return await writes.transition(cur, reg_id, event, step, reason, error, held_pause, self.node,
                                           self.tokens, self.lease_seconds, self.lease_counts)

    async def requeue_active(self, step: Step) -> list[str]:
        async with self.connection() as conn, conn.transaction(), conn.cursor() as cur:
            found = await writes.requeue_unclaimed(cur, step)
            rows = [await writes.read_registration(cur, reg_id) for reg_id in found]
            for reg_id in found:
                await self.send(cur, "reg", reg_id, "requeue")
        for reg_id, (row, records) in zip(found, rows):
            self.take(reg_id, row, records)
        return found

    async def update(self, reg_id: str, title: str | None, icons: list | None, changes: list[RequestChange]) -> None:
        async with self._changing(reg_id, "update") as cur:
            await writes.update(cur, reg_id, title, icons, changes)

    async def delete(self, reg_id: str) -> int:
        async with self._changing(reg_id, "delete") as cur:
            count = await writes.delete(cur, reg_id)
        self.tokens.pop(reg_id, None)
        return count

    def records(self, reg_id: str) -> list[Record]:
        return self.mirror.records_of(reg_id)

    def record(self, record_id: int) -> Record:
        return self.mirror.record(record_id)

    def record_at(self, reg_id: str, index: int) -> Record | None:
        return self.mirror.record_at(reg_id, index)

    def received(self, reg_id: str) -> int:
        return self.mirror.received(reg_id)

    def download_room(self, reg_id: str, record_id: int) -> int | None:
        return self.mirror.download_room(reg_id, record_id)

    def held(self, record_id: int | None = None) -> int:
        return self.mirror.held(record_id)

    def servable(self, url: str, credential: str, fields: list[tuple[str, str]] = ()) -> int | None:
        return self.mirror.servable(url, credential, fields)

    def urls(self) -> Iterator[str]:
        return iter(list(self.mirror.by_url))

    async def _record_write(self, record_id: int, event: str, write, *args):
        """A transfer's write of a record, fenced by this node's lease of its registration."""
        reg_id = self.mirror.record(record_id).registration_id
        async with self._changing(reg_id, event) as cur:
            await leases.fence(cur, self.node, self.tokens, record_id)
            return await write(cur, record_id, *args)

    async def set_response(self, record_id: int, status: int, fields: list, size: int | None,
                           reusable: bool = True, selecting: str = "", count_held: bool = True) -> int:
        return await self._record_write(record_id, "response", writes.set_response, status, fields, size,
                                         reusable, selecting, count_held)

    async def refresh_response(self, record_id: int, generation: int, fields: list) -> bool:
        return await self._renewing(record_id, writes.refresh_response, generation, fields)

    async def _renewing(self, record_id: int, write, *args):
        """A write of a renewal: no transfer, so under no lease (any node that revalidates)."""
        async with self._changing(self.mirror.record(record_id).registration_id, "renewal") as cur:
            return await write(cur, record_id, *args)

    def renewal(self, record_id: int) -> Record | None:
        return self.mirror.renewal(record_id)

    async def begin_renewal(self, record_id: int, status: int, fields: list, size: int | None,
                            selecting: str = "") -> int:
        return await self._renewing(record_id, renewals.begin, status, fields, size, selecting)

    async def complete_renewal(self, record_id: int, generation: int) -> int | None:
        return await self._renewing(record_id, renewals.complete, generation)

    async def drop_renewal(self, record_id: int, generation: int) -> None:
        await self._renewing(record_id, renewals.drop, generation)

    async def drop_generation(self, record_id: int, generation: int) -> None:
        await self._renewing(record_id, renewals.drop_generation, generation)

    async def forget_renewals(self) -> None:  # only those no node has written to for a while
        async with self.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for record_id in await renewals.forget_stale(cur):
                if record_id in self.mirror.records:
                    reg_id = self.mirror.record(record_id).registration_id
                    self.take(reg_id, *await writes.read_registration(cur, reg_id))

    async def restart_record(self, record_id: int) -> int:
        return await self._record_write(record_id, "restart", writes.restart)

    async def complete_record(self, record_id: int) -> None:
        await self._record_write(record_id, "complete", writes.complete)

    # -- bodies ----------------------------------------------------------------

    def append(self, record_id: int, generation: int, offset: int, pieces: list[bytes], size: int) -> Awaitable[bool]:
        """The chunk's object is written at once (several in flight); the commits keep the order
        of the appends, several to a transaction (`appends`)."""
        return self.appends.append(record_id, generation, offset, pieces, size)

    async def spans(self, record_id: int, generation: int) -> list[tuple[int, int]]:
        record = self.mirror.record(record_id)
        return [(0, record.stored)] if record.generation == generation and record.stored else []

    def read(self, record_id: int, start: int, end: int, generation: int | None = None) -> AsyncIterator[bytes]:
        return reading.read(self, record_id, start, end, generation)

    async def digest(self, record_id: int, size: int) -> bytes:
        return await reading.digest(self, record_id, size)

    async def ensure_room(self, size: int) -> None:  # object storage: no disk of this node's to fill
        return None

    async def give_back_space(self) -> None:
        """Delete the due doomed objects from the bucket, a batch at a time (several nodes may
        collect at once: each takes other objects)."""
        while True:
            async with self.connection() as conn, conn.transaction(), conn.cursor() as cur:
                due = await bodies.due(cur, COLLECT_BATCH)
                if not due:
                    return
                await bodies.collected(cur, await self.objects.delete(due))
            if len(due) < COLLECT_BATCH:
                return

    async def close(self) -> None:
        """Wait for the chunks in flight, let go of this node's leases, and close every connection."""
        await self.chores.close()
        await self.appends.close()
        try:
            async with self.connection() as conn:
                await leases.release_all(conn, self.node, self.tokens)
        except StorageUnreachable as exc:
            logger.warning("leases not released (they run out by themselves): %s", exc)
        self.tokens.clear()
        await self.pool.close()
        await asyncio.to_thread(self.objects.close)
