"""The background fetch store: registrations, their transfers and events, over the storage contract.

Everything that changes state goes through here, so the API, the proxy's internal routes and
the commands all behave alike. It owns its storage (`store.db.Storage`) and closes it.

In a fleet its `FleetWatcher` hears what the other nodes do (`store.engine.fleet`).

Faults are pauses: when the database takes no writes at all (another process holds its lock,
the disk is full to the last byte), a pause is held in memory — the registration reads as
`paused` with its `lastError`, in the API and in events — and is written with the next
change that goes through (the lifecycle's `hold` event).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import ContextManager

import httpx

from store.db import NewRecord, NotFound, Page, Record, RequestChange, Storage, StorageFault
from store.engine import admission, headers, lifecycle, ownership
from store.engine.events import EventBus
from store.engine.fleet import FleetWatcher
from store.engine.observer import Observer
from store.engine.outcomes import pause_reason
from store.engine.renewal import Renewals
from store.engine.revalidation import Outcome, Revalidation
from store.engine.transfer import TransferLoop
from vocabulary import credential_key

logger = logging.getLogger(__name__)

EVENT_OF = lifecycle.EVENT_OF
HELD_EVENTS = ("pause", "start", "retry")  # what leaves a registration paused when it cannot be written


class Store:
    def __init__(
        self, storage: Storage, client: httpx.AsyncClient, *,
        concurrency: int = 4, retry_cap: float = 30.0, quota: int | None = None, revalidate: str = "cache-control",
        segments: int = 1) -> None:
        self.storage = storage
        self.quota = quota
        self.events = EventBus(self.snapshot)
        self.observer = Observer(self, self._describe)  # metrics, log lines, readiness
        self.metrics = self.observer.metrics
        self.renewals = Renewals(storage, quota, self.committed, self.reclaim, self.metrics.fetched.inc)
        self.revalidation = Revalidation(storage, client, revalidate, self.renewals, self.metrics.revalidated)
        self.transfers = TransferLoop(
            storage, client, self, concurrency=concurrency, retry_cap=retry_cap, quota=quota,
            fetched=self.metrics.fetched.inc, segments=segments,
        )
        self._change = asyncio.Event()
        self._reclaim: asyncio.Task | None = None
        self._reclaim_again = False
        self._unwritten: dict[str, str] = {}  # registration id -> lastError of a pause held in memory
        self.url_listeners: list[Callable[[str], None]] = []  # told each URL a record takes
        self.removal_listeners: list[Callable[[int], None]] = []  # told how many URLs records gave up
        self.fleet = FleetWatcher(self)  # what the other nodes of a fleet do (a storage of one node tells nothing)
        storage.watch(self.fleet)

    # -- reads -------------------------------------------------------------

    def get(self, reg_id: str) -> dict:
        """The registration (NotFound), with a pause held in memory shown."""
        registration = self.storage.registration(reg_id)
        if (error := self._unwritten.get(reg_id)) is not None and registration["state"] in lifecycle.ACTIVE:
            registration.update(state="paused", lastError=error)
        return registration

    def snapshot(self, reg_id: str) -> dict | None:
        try:
            return self.get(reg_id)
        except NotFound:
            return None

    def ids(self, active_only: bool = True) -> list[str]:
        return self.storage.ids(active_only)

    def page(self, active_only: bool, limit: int, after: int | None = None, newest_first: bool = False) -> Page:
        """Up to `limit` ids, from just after the position `after` of the page before."""
        return self.storage.page(active_only, limit, after, newest_first)

    def records(self, reg_id: str) -> list[Record]:
        return self.storage.records(reg_id)

    def record(self, record_id: int) -> Record:
        return self.storage.record(record_id)

    def record_at(self, reg_id: str, index: int) -> Record | None:
        return self.storage.record_at(reg_id, index)

    def read(self, record_id: int, start: int, end: int, generation: int | None = None) -> AsyncIterator[bytes]:
        return self.storage.read(record_id, start, end, generation)

    def version(self, record_id: int, generation: int) -> Record | None:
        """The record as of `generation`: what it serves, or its renewal under way; None when
        it is neither any more (replaced, restarted, given up). NotFound when it is gone."""
        record = self.storage.record(record_id)
        if record.generation == generation:
            return record
        renewal = self.storage.renewal(record_id)
        if renewal is not None and renewal.generation == generation:
            return renewal
        record = self.storage.record(record_id)  # the renewal may have taken its place meanwhile
        return record if record.generation == generation else None

    def reading(self, record_id: int, generation: int) -> ContextManager[None]:
        """Hold a generation's bytes while a reader sends them, even once it is replaced."""
        return self.renewals.reading(record_id, generation)

    def servable(self, url: str, credential: str, fields: list[tuple[str, str]]) -> int | None:
        """The record that answers a GET of `url` with these credentials and fields (the lookup)."""
        return self.storage.servable(url, credential, fields)

    def urls(self) -> Iterator[str]:
        """Every distinct URL the records have (what the proxy's lookup is built from)."""
        return self.storage.urls()

    # -- changes -------------------------------------------------------------

    async def freshen(self, record: Record, request_fields: list[tuple[str, str]]) -> Outcome:
        """How to answer a GET/HEAD of a stored response: as stored (after its origin confirmed
        it, or could not be asked), or with the origin's own answer (`revalidation`)."""
        return await self.revalidation.check(record, request_fields)

    async def fetch(self, registration: dict, requests: list[dict]) -> dict:
        """Create a registration and start it. `registration["owner"]` (default: the API) may
        replace an inactive one of the same id as `ownership.may_replace` says; Conflict otherwise.
        QuotaExceeded, before anything is made, when its downloadTotal cannot fit in the quota."""
        admission.check_quota(registration.get("download_total"), self.quota, self.storage.held)
        registration = {**registration, "owner": registration.get("owner", ownership.API)}
        new = [
            NewRecord(
                url=r["url"], method=r.get("method", "GET"), headers=list(r.get("headers", [])), body=r.get("body"),
                integrity=r.get("integrity"), credential=r.get("credential", ""), body_hash=ownership.body_hash(r.get("body")),
                revalidate=r.get("revalidate") or "", segments=r.get("segments") or 0,
            )
            for r in requests
        ]
        await self.storage.create(registration, new, _may_replace)
        self.reclaim()  # the bodies of a registration it replaced, if any
        self.observer.changed(registration["id"], "create")
        self._announce(record.url for record in new)
        self.transfers.start(registration["id"])
        self.events.publish("progress", registration["id"])
        return self.get(registration["id"])

    async def transition(self, reg_id: str, event: str, reason: str = "", error: str = "") -> None:
        """Apply a lifecycle event; `reason`: a failure's failureReason, or why a `pause` is
        (`outcomes.PAUSE_REASONS`, for the metrics and the log). When the database takes no
        writes, a pause is held in memory instead (a `start` or `retry` that cannot be written
        also raises the StorageFault: the registration stays paused); other events raise it."""
        unwritten = self._unwritten.get(reg_id)
        try:
            await self.storage.transition(reg_id, event, lifecycle.step, reason if event == "fail" else "", error,
                                          held_pause=unwritten)
        except StorageFault as exc:
            if event not in HELD_EVENTS:
                raise
            if event == "pause":
                self._hold_pause(reg_id, error, reason)
                return
            self._hold_pause(reg_id, str(exc), pause_reason(exc))
            raise
        if self._unwritten.get(reg_id) == unwritten:
            self._unwritten.pop(reg_id, None)
        self.observer.changed(reg_id, event, reason, error)
        self.events.publish(EVENT_OF.get(event, "progress"), reg_id)
        self.notify()
        if event in ("fail", "abort"):
            self.reclaim()

    async def abort(self, reg_id: str) -> dict:
        """Stop the transfer and end the registration as failure/aborted; its partial bodies
        go, the complete ones stay. LifecycleError when it is no longer active, NotFound when
        there is none."""
        await self.transfers.stop(reg_id)
        try:
            await self.transition(reg_id, "abort")
        except StorageFault as exc:  # not aborted: it goes on, paused, and may be aborted again
            if self.get(reg_id)["state"] in lifecycle.ACTIVE:
                self._hold_pause(reg_id, str(exc), pause_reason(exc))
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
        urls = await self.storage.delete(reg_id)
        self._unwritten.pop(reg_id, None)
        self.observer.forget(reg_id)
        for listener in self.removal_listeners:
            listener(urls)
        self.notify()
        self.reclaim()

    async def update(self, reg_id: str, title: str | None, icons: list | None, changes: list[dict]) -> dict:
        """`updateUI(title, icons)`; for a paused registration also new request headers (merged:
        a None value removes one) or URLs per record (NotPaused otherwise), after which its
        transfer retries at once."""
        await self.storage.update(reg_id, title, icons, [self._request_change(reg_id, c) for c in changes])
        self._announce(change["url"] for change in changes if "url" in change)
        self.events.publish("progress", reg_id)
        if changes:
            self.transfers.wake(reg_id)
        return self.get(reg_id)

    def _request_change(self, reg_id: str, change: dict) -> RequestChange:
        record = self.storage.record_at(reg_id, change["index"])
        fields = headers.merged(record.request_headers if record else [], change["headers"])
        return RequestChange(change["index"], fields, credential_key(fields), change.get("url"))

    def _announce(self, urls: Iterable[str]) -> None:
        for url in urls:
            for listener in self.url_listeners:
                listener(url)

    def _hold_pause(self, reg_id: str, error: str, reason: str) -> None:
        """A pause the database could not take, held in memory until it takes writes."""
        self._unwritten[reg_id] = error
        self.observer.changed(reg_id, "pause", reason, f"{error} (held in memory until the database takes writes)")
        self.events.publish("progress", reg_id)

    def _describe(self, reg_id: str) -> tuple[dict, list[str]] | None:
        """The registration and its records' URLs, for a line of the log."""
        registration = self.snapshot(reg_id)
        return None if registration is None else (registration, [r.url for r in self.storage.records(reg_id)])

    def committed(self, reg_id: str, progress: bool) -> None:
        """Something of `reg_id` was committed: wake readers; body bytes also tell subscribers."""
        self.notify()
        if progress:
            self.events.progress(reg_id)
            self.observer.progressed(reg_id)

    async def start(self) -> None:
        """Every registration that was active runs again from its committed bytes; when the
        database takes no writes yet, each waits paused and retries."""
        try:
            await self.storage.forget_renewals()
            active, paused = await self.storage.requeue_active(lifecycle.step), False
        except StorageFault as exc:
            active, paused = self.ids(), True
            for reg_id in active:
                self._hold_pause(reg_id, str(exc), pause_reason(exc))
        self.observer.start(0 if paused else len(active))
        for reg_id in active:
            self.transfers.start(reg_id, paused=paused)
        self.reclaim()  # what a DELETE left when the store stopped

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
        """Give deleted bodies' space back a little at a time, then wake what paused for it (again if asked meanwhile)."""
        if self._reclaim is None or self._reclaim.done():
            self._reclaim = asyncio.create_task(self._give_back(), name="bgfetch reclaim")
        else:
            self._reclaim_again = True

    async def _give_back(self) -> None:
        while True:
            self._reclaim_again = False
            await self.storage.give_back_space()
            self.transfers.room_returned()
            if not self._reclaim_again:
                return

    async def close(self) -> None:
        await self.observer.close()
        await self.fleet.close()
        await self.transfers.close()
        await self.renewals.close()
        if self._reclaim:
            await asyncio.gather(self._reclaim, return_exceptions=True)
        self.events.close()
        await self.storage.close()


def _may_replace(owner: str, state: str, result: str, existing_owner: str) -> bool:
    """Whether a new registration of `owner` may take the place of one in `state`/`result`."""
    return state not in lifecycle.ACTIVE and ownership.may_replace(owner, existing_owner, result)
