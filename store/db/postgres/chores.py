"""What a fleet node does beside the contract's calls: hear the other nodes, renew its leases, find
transfers no node runs, collect doomed objects. Each is a task of its own, for as long as the
store runs; none of them lets a database or object store that does not answer end it.
"""

import asyncio
import json
import logging
import random

import psycopg

from store.db.faults import StorageUnreachable
from store.db.postgres import leases, writes
from store.db.postgres.connect import CHANNEL, DATABASE_ERRORS, one_line

logger = logging.getLogger(__name__)

COLLECT_SECONDS = 60.0  # how often a node collects due objects by itself


class Chores:
    """The background tasks of one node's storage (a `PostgresStorage`)."""

    def __init__(self, storage) -> None:
        self.storage = storage
        self.listening = asyncio.Event()  # set while the node hears the others' changes
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for work, name in ((self._listen, "listen"), (self._renew, "leases"), (self._scan, "unclaimed"),
                           (self._collect, "collect")):
            self.tasks.append(asyncio.create_task(work(), name=f"bgfetch fleet {name}"))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _listen(self) -> None:
        """Take the other nodes' changes into this node's copy, for as long as the store runs;
        after a lost connection (the database restarted), load the copy whole again."""
        pause = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.storage.conninfo, autocommit=True, **self.storage.options) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self._load()
                    self.listening.set()
                    pause = 0.2
                    async for note in conn.notifies():
                        await self._heard(note.payload)
            except (*DATABASE_ERRORS, StorageUnreachable) as exc:
                self.listening.clear()
                logger.warning("not listening to the fleet's changes (%s); again in %.1f s", one_line(exc), pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def _load(self) -> None:
        self.storage.mirror.loading()
        async with self.storage.connection() as conn:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await cur.execute("SELECT * FROM registrations")
                registrations = await cur.fetchall()
                await cur.execute(writes.RECORDS_SQL)
                records = await cur.fetchall()
        self.storage.mirror.load(registrations, records)
        if self.storage.watcher:
            self.storage.watcher.reloaded()

    async def _heard(self, payload: str) -> None:
        note = json.loads(payload)
        if note["n"] == self.storage.node:
            return
        reg_id, kind = note["r"], note["k"]
        if kind == "gone":
            self.storage.mirror.drop_registration(reg_id)
        elif kind != "bytes" or not self.storage.mirror.put_bytes(note["i"], note["v"], note["s"], note["c"]):
            async with self.storage.connection() as conn, conn.transaction(), conn.cursor() as cur:
                row, records = await writes.read_registration(cur, reg_id)
            self.storage.take(reg_id, row, records)
        if self.storage.watcher:
            self.storage.watcher.changed_elsewhere(reg_id, note["e"] or kind)

    async def _renew(self) -> None:
        """Renew this node's leases every third of their time; tell the engine of those lost."""
        while True:
            await asyncio.sleep(self.storage.lease_seconds / 3)
            try:
                async with self.storage.connection() as conn:
                    lost = await leases.renew(conn, self.storage.node, dict(self.storage.tokens), self.storage.lease_seconds)
            except StorageUnreachable as exc:
                logger.warning("leases not renewed: %s", exc)
                continue
            for reg_id in lost:
                if self.storage.tokens.pop(reg_id, None) is not None and self.storage.watcher:
                    logger.warning("%s: this node's lease was taken over", reg_id)
                    self.storage.watcher.lost(reg_id)

    async def _scan(self) -> None:
        """Every half lease, tell the engine of the active registrations that no node runs."""
        while True:
            await asyncio.sleep(self.storage.lease_seconds / 2 * random.uniform(0.8, 1.2))
            try:
                async with self.storage.connection() as conn:
                    found = await leases.unclaimed(conn)
            except StorageUnreachable:
                continue
            for reg_id in found:
                if reg_id not in self.storage.tokens and self.storage.watcher:
                    self.storage.watcher.unclaimed(reg_id)

    async def _collect(self) -> None:
        while True:
            await asyncio.sleep(COLLECT_SECONDS * random.uniform(0.8, 1.2))
            try:
                await self.storage.give_back_space()
            except StorageUnreachable as exc:
                logger.warning("doomed objects not collected now: %s", exc)

