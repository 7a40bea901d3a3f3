"""The store's metrics through the engine (store/engine/metrics.py, service.Store): the series stay
the same after 10,000 distinct URLs, the transfers' gauges, the webhook's counters, what storage
reports of itself (the seam a fleet's storage fills), readiness of a closed store, and the
pause reasons. End to end through a real mitmdump: test_operations_e2e.py."""

import asyncio
import contextlib

import httpx
import pytest

from harness.metrics import Scrape
from harness.origin import NOTHING_LISTENS
from harness.poll import eventually_async
from store.db import Figure, Readiness, StorageBusy, StorageFull
from store.db.sqlite import SqliteStorage
from store.engine import metrics
from store.engine.metrics import Metrics
from store.engine.outcomes import PAUSE_REASONS, Pause, pause_reason, transport_problem
from store.engine.service import Store
from store.engine.webhook import ATTEMPTS, WAITING, Webhook

URL = "http://origin.test/{}"


def origin(request: httpx.Request) -> httpx.Response:
    """One in 100 URLs answers 404, one is cut once, one succeeds; the others fail at once."""
    n = int(request.url.path.strip("/"))
    if n % 100 == 1:
        return httpx.Response(404, stream=httpx.ByteStream(b"no"))
    if n % 100 == 2 and "range" not in request.headers:
        return httpx.Response(200, headers={"ETag": '"a"', "Content-Length": "100"}, stream=Cut(b"x" * 50))
    if n % 100 > 2:
        raise httpx.UnsupportedProtocol(f"no such scheme for {request.url}")
    return httpx.Response(200, headers={"ETag": '"a"'}, stream=httpx.ByteStream(b"x" * 100))


class Cut(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self):
        yield self.data
        raise httpx.ReadError("connection reset by peer")


@contextlib.asynccontextmanager
async def running(tmp_path, handler=origin, storage=None, **options):
    options.setdefault("retry_cap", 0.05)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        store = Store(storage or SqliteStorage.open(str(tmp_path / "m.sqlite3")), client, **options)
        try:
            yield store
        finally:
            await store.close()


async def fetch_all(store: Store, numbers: range) -> None:
    for first in range(numbers.start, numbers.stop, 500):
        await asyncio.gather(*(
            store.fetch({"id": f"registration-{n}", "title": "t"}, [{"url": URL.format(n)}])
            for n in range(first, min(first + 500, numbers.stop))
        ))
    await eventually_async(lambda: not store.transfers.tasks, 120, interval=0.1, what="every transfer to end")


async def scrape(store: Store) -> tuple[Scrape, str]:
    body, _ = await store.observer.exposition(None)
    return Scrape(body.decode()), body.decode()


def test_the_series_after_10000_distinct_urls_are_the_series_after_ten(tmp_path):
    async def scenario():
        async with running(tmp_path, concurrency=16) as store:
            await fetch_all(store, range(10))
            few, _ = await scrape(store)
            await fetch_all(store, range(10, 10_000))
            many, text = await scrape(store)
            return few, many, text

    few, many, text = asyncio.run(scenario())
    assert many.series() == few.series()
    assert len(many.series()) < 250
    assert "origin.test" not in text and "registration-" not in text
    assert many("bgfetch_registrations_created_total") == 10_000
    assert many("bgfetch_registrations", state="done", result="failure", reason="fetch-error") == 9_700
    assert many("bgfetch_registrations_finished_total", result="failure", reason="bad-status") == 100
    assert many("bgfetch_registrations_finished_total", result="success", reason="none") == 200
    assert many("bgfetch_pauses_total", reason="connection-lost") == many("bgfetch_retries_total", reason="connection-lost") == 100
    assert many("bgfetch_fetched_bytes_total") == 100 * 100 + 100 * (50 + 100)  # a cut one is answered whole again


def test_transfers_are_running_waiting_or_paused(tmp_path):
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused")
        await release.wait()
        return httpx.Response(200, stream=httpx.ByteStream(b"x"))

    async def scenario():
        async with running(tmp_path, slow, concurrency=1, retry_cap=30) as store:
            await store.fetch({"id": "down", "title": "t"}, [{"url": "http://origin.test/down"}])
            await eventually_async(lambda: store.get("down")["state"], until=lambda s: s == "paused", what="a pause")
            for n in (1, 2):
                await store.fetch({"id": f"slow{n}", "title": "t"}, [{"url": f"http://origin.test/{n}"}])
            await eventually_async(store.transfers.counts, until=lambda c: c["running"] == 1, what="one running")
            counted, _ = await scrape(store)
            release.set()
            return counted

    counted = asyncio.run(scenario())
    assert {s: counted("bgfetch_transfers", state=s) for s in metrics.TRANSFERS} == {"running": 1, "waiting": 1, "paused": 1}
    assert counted("bgfetch_transfer_slots") == 1
    assert counted("bgfetch_pauses_total", reason="connect-error") == 1


def test_what_storage_reports_of_itself_is_exported_under_its_names(tmp_path):
    class Leasing(SqliteStorage):  # what a fleet's storage adds: its leases, its backends
        async def figures(self) -> list[Figure]:
            return [*await super().figures(),
                    Figure("lease_claims_total", "Leases claimed.", 3, counter=True, labels=(("kind", "new"),)),
                    Figure("lease_claims_total", "Leases claimed.", 2, counter=True, labels=(("kind", "takeover"),))]

        async def readiness(self) -> list[Readiness]:
            return [*await super().readiness(), Readiness("object-store", False, "bucket gone")]

    async def scenario():
        async with running(tmp_path, storage=Leasing.open(str(tmp_path / "l.sqlite3")), quota=10**9) as store:
            return await scrape(store), await store.observer.readiness()

    (counted, _), parts = asyncio.run(scenario())
    assert counted("bgfetch_lease_claims_total", kind="takeover") == 2
    assert counted.families["bgfetch_lease_claims"].type == "counter"
    assert counted("bgfetch_quota_bytes") == 10**9 and counted("bgfetch_wal_bytes") >= 0
    assert counted("bgfetch_disk_free_bytes") > 0
    assert [(p.part, p.ready) for p in parts] == [("store", True), ("database", True), ("object-store", False)]


def test_registrations_active_at_start_up_are_counted_requeued(tmp_path):
    never = asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        await never.wait()

    async def scenario():
        async with running(tmp_path, hanging) as store:
            for n in range(3):
                await store.fetch({"id": f"r{n}", "title": "t"}, [{"url": URL.format(n)}])
        async with running(tmp_path, hanging) as store:
            await store.start()
            return (await scrape(store))[0]

    counted = asyncio.run(scenario())
    assert counted("bgfetch_transitions_total", event="requeue") == 3
    assert counted("bgfetch_registrations", state="pending", result="none", reason="none") + counted(
        "bgfetch_registrations", state="fetching", result="none", reason="none") == 3


def test_a_closed_store_and_storage_are_not_ready(tmp_path):
    async def scenario():
        async with running(tmp_path) as store:
            pass
        return await store.observer.readiness(), await store.storage.readiness()

    of_store, of_storage = asyncio.run(scenario())
    assert of_store == [Readiness("store", False, "the store is stopping")]
    assert not of_storage[0].ready and "closed" in of_storage[0].detail


def test_webhook_deliveries_are_counted_delivered_failed_or_dropped():
    async def scenario():
        counted = Metrics()
        webhook = Webhook(f"{NOTHING_LISTENS}/hook", 0.01, counted)
        try:
            taken = await webhook.deliver({"type": "success", "id": 1, "registration": {"id": "r"}})
            for n in range(WAITING + 1):  # nothing takes them off the queue: the last is dropped
                webhook.listener(n, "success", {"id": "r"})
        finally:
            await webhook.close()
        return taken, Scrape(counted.exposition(metrics.Readings(), None)[0].decode())

    taken, counted = asyncio.run(scenario())
    assert not taken
    assert counted("bgfetch_webhook_deliveries_total", outcome="failed") == 1
    assert counted("bgfetch_webhook_deliveries_total", outcome="dropped") == 1
    assert counted("bgfetch_webhook_posts_total") == ATTEMPTS


@pytest.mark.parametrize(("exc", "reason"), [
    (httpx.ConnectError("refused"), "connect-error"),
    (httpx.ConnectTimeout("slow"), "timeout"),
    (httpx.ReadTimeout("slow"), "timeout"),
    (httpx.ReadError("reset"), "connection-lost"),
    (httpx.RemoteProtocolError("closed early"), "connection-lost"),
])
def test_transport_errors_pause_for_a_reason_of_the_list(exc, reason):
    paused = transport_problem("http://o/f", exc)
    assert isinstance(paused, Pause) and pause_reason(paused) == reason and reason in PAUSE_REASONS


def test_storage_faults_pause_for_their_reason(tmp_path):
    assert pause_reason(StorageFull(str(tmp_path / "db"), free=0)) == "disk-full"
    assert pause_reason(StorageBusy(str(tmp_path / "db"))) == "database-locked"
    assert pause_reason(ValueError("a bug")) == "other"
    assert metrics.word("a URL", PAUSE_REASONS) == "other"
