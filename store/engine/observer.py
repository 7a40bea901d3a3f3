"""What those who run a store see of it: each state change counted (`metrics`) and logged
(`changelog`), the gauges read when /metrics is asked, and whether it is ready (/readyz).

`Store` tells its `Observer` of every state change and every commit of body bytes; the web
layer asks it for the exposition and the readiness.
"""

import asyncio
from typing import Protocol

from store.db import Readiness, Storage
from store.engine.changelog import ChangeLog, Describe
from store.engine.events import EventBus
from store.engine.metrics import Metrics, Readings
from store.engine.transfer import TransferLoop


class Observed(Protocol):
    """The store as its observer reads it."""

    storage: Storage
    transfers: TransferLoop
    events: EventBus
    quota: int | None


class Observer:
    def __init__(self, store: Observed, describe: Describe) -> None:
        self.store = store
        self.metrics = Metrics()
        self.changes = ChangeLog(describe)
        self.closing = False
        self._lag: asyncio.Task | None = None
        self._probe: asyncio.Task | None = None

    def changed(self, reg_id: str, event: str, reason: str = "", error: str = "") -> None:
        """A lifecycle `event` of `reg_id` (or "create"): counted, and its line written."""
        self.metrics.changed(reg_id, event, reason)
        self.changes.changed(reg_id, event, reason, error)

    def progressed(self, reg_id: str) -> None:
        """`reg_id` committed body bytes."""
        self.changes.progressed(reg_id)

    def forget(self, reg_id: str) -> None:
        """`reg_id` is gone."""
        self.metrics.forget(reg_id)
        self.changes.forget(reg_id)

    def start(self, requeued: int) -> None:
        """The store starts, `requeued` active registrations with it: the event loop's lag is sampled."""
        self.metrics.transitions.labels("requeue").inc(requeued)
        self.changes.requeued(requeued)
        self._lag = asyncio.create_task(self.metrics.sample_lag(), name="bgfetch event-loop lag")

    async def readings(self) -> Readings:
        """What the gauges of /metrics show now."""
        store = self.store
        return Readings(
            tally=await store.storage.tally(), figures=await store.storage.figures(),
            transfers=store.transfers.counts(), slots=store.transfers.concurrency,
            held=store.storage.held(), quota=store.quota, subscribers=store.events.subscribers,
        )

    async def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the `Accept` header asks for, and its media type."""
        return self.metrics.exposition(await self.readings(), accept)

    async def readiness(self) -> list[Readiness]:
        """Whether the store is open and every part of its storage answers; probes asked for
        while one runs wait for it (no pile of probes on a database that hangs)."""
        if self.closing:
            return [Readiness("store", False, "the store is stopping")]
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self.store.storage.readiness(), name="bgfetch readiness")
        return [Readiness("store", True), *await asyncio.shield(self._probe)]

    async def close(self) -> None:
        self.closing = True
        if self._lag:
            self._lag.cancel()
        await asyncio.gather(*filter(None, (self._lag, self._probe)), return_exceptions=True)
