"""The background fetch store: registrations, their transfers and events over one database.

Everything that changes state goes through here, so the API, the proxy's internal routes
and the commands all behave alike; every write goes to the writer thread, every read uses
this process's read connection on the event loop.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable

import httpx

from . import lifecycle, schema, tables
from .events import EventBus
from .transfer import TransferLoop
from .writer import Writer

logger = logging.getLogger(__name__)

EVENT_OF = {"succeed": "success", "fail": "fail", "abort": "abort"}
RECLAIM_PAGES = 256  # pages given back per writer turn (16 MiB), so transfers keep writing


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
        self.url_listeners: list[Callable[[str], None]] = []  # told each URL a record takes
        self.removal_listeners: list[Callable[[int], None]] = []  # told how many URLs records gave up

    # -- reads -------------------------------------------------------------

    def get(self, reg_id: str) -> dict:
        return tables.registration(self.db, reg_id)

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
        await self.writer.submit(tables.transition, reg_id, event, reason, error)
        self.events.publish(EVENT_OF.get(event, "progress"), reg_id)
        self.notify()
        if event in ("fail", "abort"):
            self.reclaim()

    async def abort(self, reg_id: str) -> dict:
        """Stop the transfer and end the registration as failure/aborted; its partial bodies
        go. LifecycleError when it is no longer active, NotFound when there is none."""
        await self.transfers.stop(reg_id)
        await self.transition(reg_id, "abort")
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

    def committed(self, reg_id: str) -> None:
        """Bytes of `reg_id` reached the disk: wake readers, tell subscribers."""
        self.notify()
        self.events.progress(reg_id)

    async def resume_all(self) -> None:
        """At start-up, every registration that was active runs again from its committed bytes."""
        for reg_id in await self.writer.submit(_requeue_active):
            self.transfers.start(reg_id)

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
        while await self.writer.submit(tables.reclaim_space, RECLAIM_PAGES) == RECLAIM_PAGES:
            pass

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


def _requeue_active(conn) -> list[str]:
    conn.execute("UPDATE registrations SET state = 'pending' WHERE state IN ('fetching', 'paused')")
    return tables.ids(conn, active_only=True)
