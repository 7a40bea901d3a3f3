"""The background fetch store: registrations, their transfers and events over one database.

Everything that changes state goes through here, so the API, the proxy's internal routes
and the commands all behave alike; every write goes to the writer thread, every read uses
this process's read connection on the event loop.

Faults are pauses: when the database takes no writes at all (another process holds its lock,
the disk is full to the last byte), a pause is held in memory — the registration reads as
`paused` with its `lastError`, in the API and in events — and is written with the next
change that goes through.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable

import httpx

from store.db import bodies, schema, tables
from store.engine import lifecycle
from store.engine.events import EventBus
from store.db.faults import StorageFault
from store.engine.transfer import TransferLoop
from store.db.writer import Writer

logger = logging.getLogger(__name__)

EVENT_OF = {"succeed": "success", "fail": "fail", "abort": "abort"}
RECLAIM_PAGES = 256  # pages given back per writer turn (16 MiB), so transfers keep writing
HELD_EVENTS = ("pause", "start", "retry")  # what leaves a registration paused when it cannot be written


class Store:
    def __init__(
        self,
        path: str,
        client: httpx.AsyncClient,
        *,
        concurrency: int = 4,
        retry_cap: float = 30.0,
        quota: int | None = None,
    ) -> None:
        self.path = path
        conn = schema.connect(path)
        try:
            schema.migrate(conn)
        finally:
            conn.close()
        self.writer = Writer(path, asyncio.get_running_loop())
        self.db = schema.connect(path, readonly=True)
        self.events = EventBus(self.snapshot)
        self.transfers = TransferLoop(self, client, concurrency, retry_cap, quota)
        self._change = asyncio.Event()
        self._reclaim: asyncio.Task | None = None
        self._unwritten: dict[str, str] = {}  # registration id -> lastError of a pause held in memory
        self.url_listeners: list[Callable[[str], None]] = []  # told each URL a record takes
        self.removal_listeners: list[Callable[[int], None]] = []  # told how many URLs records gave up

    # -- reads -------------------------------------------------------------

    def get(self, reg_id: str) -> dict:
        registration = tables.registration(self.db, reg_id)
        if (error := self._unwritten.get(reg_id)) is not None and registration["state"] in lifecycle.ACTIVE:
            registration.update(state="paused", lastError=error)
        return registration

    def snapshot(self, reg_id: str) -> dict | None:
        try:
            return self.get(reg_id)
        except tables.NotFound:
            return None

    def ids(self, everything: bool = False) -> list[str]:
        return tables.ids(self.db, active_only=not everything)

    def received(self, reg_id: str) -> int:
        row = self.db.execute(
            "SELECT COALESCE(SUM(received), 0) FROM records WHERE registration_id = ?", [reg_id]
        ).fetchone()
        return row[0]

    def download_limit(self, reg_id: str, record_id: int) -> int | None:
        """How many bytes `record_id` may hold before the registration exceeds downloadTotal."""
        row = self.db.execute(
            "SELECT g.download_total - COALESCE(SUM(r.stored), 0) FROM registrations g"
            " LEFT JOIN records r ON r.registration_id = g.id AND r.id != ? WHERE g.id = ?",
            [record_id, reg_id],
        ).fetchone()
        return row[0]

    def held(self, record_id: int) -> int:
        """Bytes that every record but `record_id` holds or expects (what counts for the quota)."""
        return tables.held_bytes(self.db, record_id)

    # -- changes -------------------------------------------------------------

    async def fetch(self, registration: dict, records: list[dict]) -> dict:
        """Create a registration (an inactive one of the same id is replaced) and start it."""
        await self.writer.submit(tables.create, registration, records)
        self._announce(record["url"] for record in records)
        self.transfers.start(registration["id"])
        self.events.publish("progress", registration["id"])
        return self.get(registration["id"])

    async def transition(self, reg_id: str, event: str, reason: str = "", error: str = "") -> None:
        """Apply a lifecycle event. When the database takes no writes, a pause is held in
        memory instead (a `start` or `retry` that cannot be written also raises the
        StorageFault: the registration stays paused); other events raise it."""
        unwritten = self._unwritten.get(reg_id)
        try:
            await self.writer.submit(_transition, reg_id, unwritten, event, reason, error)
        except StorageFault as exc:
            if event not in HELD_EVENTS:
                raise
            self._hold_pause(reg_id, error if event == "pause" else str(exc))
            if event != "pause":
                raise
            return
        if self._unwritten.get(reg_id) == unwritten:
            self._unwritten.pop(reg_id, None)
        self.events.publish(EVENT_OF.get(event, "progress"), reg_id)
        self.notify()
        if event in ("fail", "abort"):
            self.reclaim()

    async def abort(self, reg_id: str) -> dict:
        """Stop the transfer and end the registration as failure/aborted; its partial bodies
        go. LifecycleError when it is no longer active, NotFound when there is none."""
        await self.transfers.stop(reg_id)
        try:
            await self.transition(reg_id, "abort")
        except StorageFault as exc:  # not aborted: it goes on, paused, and may be aborted again
            if self.get(reg_id)["state"] in lifecycle.ACTIVE:
                self._hold_pause(reg_id, str(exc))
                self.transfers.start(reg_id, paused=True)
            raise
        return self.get(reg_id)

    async def delete(self, reg_id: str) -> None:
        """Remove a registration with its records and bodies; an active one is aborted first."""
        if self.get(reg_id)["state"] in lifecycle.ACTIVE:
            try:
                await self.abort(reg_id)
            except lifecycle.LifecycleError:
                pass  # it finished meanwhile
        await self.transfers.stop(reg_id)
        urls = self.db.execute("SELECT count(*) FROM records WHERE registration_id = ?", [reg_id]).fetchone()[0]
        await self.writer.submit(tables.delete, reg_id)
        self._unwritten.pop(reg_id, None)
        self._announce_removed(urls)
        self.notify()
        self.reclaim()

    async def update(self, reg_id: str, title: str | None, icons: list | None, changes: list[dict]) -> dict:
        """`updateUI(title, icons)`; for a paused registration also new request headers or
        URLs per record (NotPaused otherwise), after which its transfer retries at once."""
        await self.writer.submit(_update, reg_id, title, icons, changes)
        self._announce(change["url"] for change in changes if "url" in change)
        self.events.publish("progress", reg_id)
        if changes:
            self.transfers.wake(reg_id)
        return self.get(reg_id)

    def _announce(self, urls: Iterable[str]) -> None:
        for url in urls:
            for listener in self.url_listeners:
                listener(url)

    def _announce_removed(self, count: int) -> None:
        for listener in self.removal_listeners:
            listener(count)

    async def set_response(self, record_id: int, status: int, fields: list, size: int | None) -> int:
        """Record the response's status, headers and size; returns `held(record_id)` as of
        that same transaction, so concurrent transfers never both count on the same room."""
        held = await self.writer.submit(tables.set_response, record_id, status, fields, size)
        self.notify()
        return held

    async def restart_record(self, record_id: int) -> int:
        generation = await self.writer.submit(tables.restart_record, record_id)
        self.notify()
        return generation

    async def complete_record(self, record_id: int) -> None:
        await self.writer.submit(tables.complete_record, record_id)
        self.notify()

    async def room_for_chunk(self) -> None:
        """Raises StorageFull unless the disk has room for a chunk above the writer's reserve."""
        await self.writer.submit(_nothing, size=bodies.CHUNK_BYTES)

    def _hold_pause(self, reg_id: str, error: str) -> None:
        logger.warning("%s paused (held in memory until the database takes writes): %s", reg_id, error)
        self._unwritten[reg_id] = error
        self.events.publish("progress", reg_id)

    def committed(self, reg_id: str) -> None:
        """Bytes of `reg_id` reached the disk: wake readers, tell subscribers."""
        self.notify()
        self.events.progress(reg_id)

    async def resume_all(self) -> None:
        """At start-up, every registration that was active runs again from its committed bytes;
        when the database takes no writes yet, each waits paused and retries."""
        try:
            active, paused = await self.writer.submit(_requeue_active), False
        except StorageFault as exc:
            active, paused = self.ids(), True
            for reg_id in active:
                self._hold_pause(reg_id, str(exc))
        for reg_id in active:
            self.transfers.start(reg_id, paused=paused)

    # -- waiting for change --------------------------------------------------

    def notify(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def changed(self, timeout: float = 1.0) -> None:
        """Wait until something is committed, or `timeout` seconds."""
        try:
            await asyncio.wait_for(self._change.wait(), timeout)
        except TimeoutError:
            pass

    def reclaim(self) -> None:
        """Give the pages of deleted bodies back to the file system, a little at a time."""
        if self._reclaim is None or self._reclaim.done():
            self._reclaim = asyncio.create_task(self._reclaim_space(), name="bgfetch reclaim")

    async def _reclaim_space(self) -> None:
        """Page moves go through the WAL: on a small disk a turn moves what its reserve holds
        a quarter of. Space back (or free pages for new chunks) wakes what paused for it."""
        pages = max(1, min(RECLAIM_PAGES, self.writer.room.reserve // (4 * schema.PAGE_SIZE)))
        try:
            while await self.writer.submit(tables.reclaim_space, pages) == pages:
                pass
        except StorageFault as exc:
            logger.warning("giving space back to the file system stopped: %s; new chunks use the free pages", exc)
        self.writer.give_back()
        self.transfers.room_returned()

    async def close(self) -> None:
        await self.transfers.close()
        if self._reclaim:
            await asyncio.gather(self._reclaim, return_exceptions=True)
        self.events.close()
        await asyncio.to_thread(self.writer.close)
        self.db.close()


def _update(conn, reg_id: str, title: str | None, icons: list | None, changes: list[dict]) -> None:
    if changes:
        tables.change_requests(conn, reg_id, changes)
    tables.update_ui(conn, reg_id, title, icons)


def _transition(conn, reg_id: str, unwritten: str | None, event: str, reason: str, error: str) -> str:
    """`tables.transition`, after the pause held in memory (if any) is written: the row is
    brought to `paused` first, whatever the database last heard (fetching, pending)."""
    if unwritten is None:
        return tables.transition(conn, reg_id, event, reason, error)
    conn.execute(
        "UPDATE registrations SET state = 'paused', last_error = ? WHERE id = ? AND state IN (?, ?, ?)",
        [error if event == "pause" else unwritten, reg_id, *lifecycle.ACTIVE],
    )
    return "paused" if event == "pause" else tables.transition(conn, reg_id, event, reason, error)


def _nothing(conn) -> None:
    """A chunk's place in a batch, with no bytes: `Store.room_for_chunk`."""


def _requeue_active(conn) -> list[str]:
    conn.execute("UPDATE registrations SET state = 'pending' WHERE state IN ('fetching', 'paused')")
    return tables.ids(conn, active_only=True)
