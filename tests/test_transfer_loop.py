"""Unit tests of the transfer loop (store/engine: transfer, record_fetch, decision, retry) over
httpx.MockTransport: resume, restart, limits, errors. The same through a real mitmdump and origin:
test_transfers_e2e.py."""

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import ssl

import httpx
import pytest

from harness.poll import eventually_async
from store.db import NewRecord, chunks
from store.db.sqlite import SqliteStorage
from store.db.storage import NotFound, NotPaused
from store.engine import lifecycle
from store.engine.service import Store
from store.engine import lifecycle, service
from store.engine.decision import content_range
from store.engine.record_fetch import validator
from store.engine.retry import backoff

URL = "http://origin.test/file.bin"
DATA = hashlib.shake_256(b"file.bin").digest(300_000)


class Cut(httpx.AsyncByteStream):
    """A body that yields `data` in pieces, then fails like a reset connection (or just ends)."""

    def __init__(self, data: bytes, error: bool = True) -> None:
        self.data, self.error = data, error

    async def __aiter__(self):
        for at in range(0, len(self.data), 16384):
            yield self.data[at : at + 16384]
        if self.error:
            raise httpx.ReadError("connection reset by peer")


class FakeOrigin:
    """A MockTransport handler for one file: honours Range/If-Range like a good origin,
    unless the next entry of `plan` (a function of the request) answers instead."""

    def __init__(self, data: bytes = DATA, etag: str | None = '"v1"', last_modified: str | None = None) -> None:
        self.data, self.etag, self.last_modified = data, etag, last_modified
        self.requests: list[httpx.Request] = []
        self.plan: list = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.plan:
            return self.plan.pop(0)(request)
        return self.answer(request)

    def answer(self, request: httpx.Request, cut: int | None = None, error: bool = True) -> httpx.Response:
        start, status, fields = 0, 200, {}
        if "range" in request.headers and request.headers.get("if-range") in {self.etag, self.last_modified} - {None}:
            start, status = int(request.headers["range"].removeprefix("bytes=").rstrip("-")), 206
            fields["Content-Range"] = f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
        fields["Content-Length"] = str(len(self.data) - start)
        if self.etag:
            fields["ETag"] = self.etag
        if self.last_modified:
            fields["Last-Modified"] = self.last_modified
        body = self.data[start:]
        if cut is not None:
            return httpx.Response(status, headers=fields, stream=Cut(body[:cut], error))
        return httpx.Response(status, headers=fields, stream=Cut(body, error=False))

    def cut_at(self, cut: int, error: bool = True):
        """A plan entry: the ordinary answer, cut after `cut` body bytes."""
        return lambda request: self.answer(request, cut, error)

    def ranges(self) -> list[str | None]:
        return [r.headers.get("range") for r in self.requests]


@contextlib.asynccontextmanager
async def running(tmp_path, handler, **options):
    options.setdefault("retry_cap", 0.05)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        store = Store(SqliteStorage.open(str(tmp_path / "bgfetch.sqlite3")), client, **options)
        try:
            yield store
        finally:
            await store.close()


async def start(store: Store, reg_id: str = "f", url: str = URL, **record) -> None:
    download_total = record.pop("download_total", None)
    await store.fetch({"id": reg_id, "title": reg_id, "download_total": download_total}, [{"url": url, **record}])


async def until(store: Store, reg_id: str, timeout: float = 10, **expected) -> dict:
    """The registration once every `expected` field has its value (`state` defaults to done)."""
    expected = expected or {"state": "done"}
    return await eventually_async(
        lambda: store.get(reg_id), timeout, until=lambda found: all(found[k] == v for k, v in expected.items()),
        interval=0.02, pause=store.changed, what=f"{reg_id}: {expected}",
    )


def stored_body(store: Store, reg_id: str = "f") -> bytes:
    record = store.records(reg_id)[0]
    return b"".join(chunks.read(store.storage.db, record.id, 0, 2**62))


def fetch_once(tmp_path, handler, options: dict | None = None, **record) -> tuple[dict, dict, bytes]:
    """Run registration "f" of one record to its end on a new store: (registration, record, body)."""

    async def scenario():
        async with running(tmp_path, handler, **(options or {})) as store:
            await start(store, **record)
            registration = await until(store, "f")
            return registration, dataclasses.asdict(store.records("f")[0]), stored_body(store)

    return asyncio.run(scenario())


def test_cut_twice_resumes_with_range_and_if_range(tmp_path):
    origin = FakeOrigin()
    origin.plan = [origin.cut_at(100_000), origin.cut_at(50_000)]
    registration, _, body = fetch_once(tmp_path, origin)
    assert (registration["result"], registration["downloaded"], body) == ("success", len(DATA), DATA)
    assert origin.ranges() == [None, "bytes=100000-", "bytes=150000-"]
    assert [r.headers.get("if-range") for r in origin.requests] == [None, '"v1"', '"v1"']


def test_uploaded_counts_a_request_body_once_when_its_response_comes(tmp_path):
    origin = FakeOrigin()
    origin.plan = [origin.cut_at(1000)]
    registration, _, body = fetch_once(tmp_path, origin, method="POST", body=b"Background Fetch!")
    assert (registration["result"], body) == ("success", DATA)
    assert (registration["uploadTotal"], registration["uploaded"]) == (17, 17)  # sent twice, counted once
    assert [request.content for request in origin.requests] == [b"Background Fetch!"] * 2


def test_last_modified_is_the_validator_when_the_etag_is_weak(tmp_path):
    date = "Tue, 01 Apr 2025 10:00:00 GMT"
    origin = FakeOrigin(etag='W/"weak"', last_modified=date)
    origin.plan = [origin.cut_at(1000)]
    assert fetch_once(tmp_path, origin)[2] == DATA
    assert origin.requests[1].headers["if-range"] == date
    assert validator([("ETag", '"strong"'), ("Last-Modified", date)]) == '"strong"'
    assert validator([]) is None


def test_a_200_to_a_resume_starts_the_record_again_and_never_mixes_versions(tmp_path):
    origin = FakeOrigin()
    new = hashlib.shake_256(b"version 2").digest(len(DATA))

    def changed(request):
        origin.data, origin.etag = new, '"v2"'
        return origin.answer(request)

    origin.plan = [origin.cut_at(120_000), changed]
    registration, record, body = fetch_once(tmp_path, origin)
    assert (registration["result"], body) == ("success", new)
    assert (record["generation"], record["size"], record["stored"]) == (1, len(new), len(new))
    assert origin.ranges() == [None, "bytes=120000-"]


def test_without_validators_the_record_starts_again_without_range(tmp_path):
    origin = FakeOrigin(etag=None)
    origin.plan = [origin.cut_at(70_000)]
    assert fetch_once(tmp_path, origin)[2] == DATA
    assert origin.ranges() == [None, None]


def test_a_206_at_the_wrong_offset_starts_again(tmp_path):
    origin = FakeOrigin()

    def wrong_offset(request):
        headers = {"Content-Range": f"bytes 10-{len(DATA) - 1}/{len(DATA)}", "ETag": '"v1"'}
        return httpx.Response(206, headers=headers, stream=Cut(DATA[10:], error=False))

    origin.plan = [origin.cut_at(50_000), wrong_offset]
    assert fetch_once(tmp_path, origin)[2] == DATA
    assert origin.ranges() == [None, "bytes=50000-", None]


@pytest.fixture
def long_backoff(monkeypatch):
    """Every backoff lasts a minute: only `TransferLoop.wake` retries within a test."""
    monkeypatch.setattr("store.engine.transfer.backoff", lambda attempt, cap: 60.0)


def test_a_body_that_ends_short_pauses_and_keeps_its_bytes(tmp_path, long_backoff):
    origin = FakeOrigin()
    origin.plan = [origin.cut_at(80_000, error=False)]

    async def scenario():
        async with running(tmp_path, origin) as store:
            await start(store)
            paused = await until(store, "f", state="paused")
            assert paused["downloaded"] == 80_000
            assert "ended at 80000 of 300000" in paused["lastError"]
            assert stored_body(store) == DATA[:80_000]
            store.transfers.wake("f")
            await until(store, "f", result="success")
            assert stored_body(store) == DATA

    asyncio.run(scenario())
    assert origin.ranges() == [None, "bytes=80000-"]


async def crashed_after_the_whole_body(store: Store, announced: int | None) -> None:
    """A registration as a kill -9 leaves it: every byte committed, `complete` not yet set."""
    await store.storage.create({"id": "f", "title": "", "owner": "api"}, [NewRecord(URL)], service._may_replace)
    record = store.records("f")[0]
    await store.storage.transition("f", "start", lifecycle.step)
    await store.storage.set_response(record.id, 200, [("ETag", '"v1"')], announced)
    await store.storage.append(record.id, 0, 0, [DATA], len(DATA))


@pytest.mark.parametrize("announced", [len(DATA), None])
def test_a_body_whole_before_a_crash_completes_at_restart(tmp_path, announced):
    origin = FakeOrigin()
    origin.plan = [lambda request: httpx.Response(416, headers={"Content-Range": f"bytes */{len(DATA)}"})]

    async def scenario():
        async with running(tmp_path, origin) as store:
            await crashed_after_the_whole_body(store, announced)
        async with running(tmp_path, origin) as store:
            await store.start()
            registration = await until(store, "f")
            assert (registration["result"], registration["downloaded"]) == ("success", len(DATA))
            assert stored_body(store) == DATA

    asyncio.run(scenario())
    assert origin.ranges() == ([] if announced else [f"bytes={len(DATA)}-"])


def test_refused_credentials_on_resume_pause_until_new_headers_come(tmp_path, long_backoff):
    origin = FakeOrigin()

    def expired(request):
        if request.headers["authorization"] == "Bearer old":
            return httpx.Response(403, text="token expired")
        return origin.answer(request)

    origin.plan = [origin.cut_at(100_000), expired, expired]

    async def scenario():
        async with running(tmp_path, origin) as store:
            await start(store, headers=[["Authorization", "Bearer old"], ["User-Agent", "podcatcher"]])
            await until(store, "f", state="paused", downloaded=100_000)
            store.transfers.wake("f")
            paused = await until(store, "f", state="paused", updatedAt=store.get("f")["updatedAt"])
            paused = await eventually_async(lambda: store.get("f"), 10, until=lambda r: "credentials" in r["lastError"],
                                            interval=0.02, pause=store.changed, what="f: a lastError about credentials")
            assert paused["state"] == "paused" and paused["downloaded"] == 100_000
            assert "(403)" in paused["lastError"] and "bytes are kept" in paused["lastError"]
            old_key = store.records("f")[0].credential
            await store.update("f", None, None, [{"index": 0, "headers": [("Authorization", "Bearer new")], "url": URL + "?sig=2"}])
            registration = await until(store, "f")
            assert registration["result"] == "success"
            assert stored_body(store) == DATA
            record = store.records("f")[0]
            assert record.url == URL + "?sig=2"
            assert record.credential not in ("", old_key)
            assert store.storage.db.execute("SELECT request_headers FROM records").fetchone()[0] is None

    asyncio.run(scenario())
    last = origin.requests[-1]
    assert (last.headers["authorization"], last.headers["user-agent"]) == ("Bearer new", "podcatcher")
    assert (str(last.url), last.headers["range"]) == (URL + "?sig=2", "bytes=100000-")
    assert len(origin.requests) == 3  # the new headers were tried at once, not after the backoff


def test_new_request_headers_are_only_for_a_paused_registration(tmp_path):
    origin = FakeOrigin()

    async def scenario():
        async with running(tmp_path, origin) as store:
            await start(store)
            await until(store, "f", result="success")
            with pytest.raises(NotPaused, match="done"):
                await store.update("f", None, None, [{"index": 0, "headers": [("Cookie", "a=b")]}])
            with pytest.raises(NotFound):
                await store.update("nope", None, None, [{"index": 0, "headers": [], "url": URL}])

    asyncio.run(scenario())


def test_new_request_headers_merge_by_name(tmp_path):
    async def scenario():
        async with running(tmp_path, FakeOrigin(), concurrency=1) as store:
            await store.storage.create(
                {"id": "p", "title": "", "owner": "api"},
                [NewRecord(URL, headers=[("Cookie", "old"), ("Accept", "*/*"), ("X-Gone", "1")])], service._may_replace,
            )
            await store.storage.transition("p", "start", lifecycle.step)
            await store.storage.transition("p", "pause", lifecycle.step)
            await store.update("p", None, None, [{"index": 0, "headers": [("cookie", "new"), ("X-Gone", None)]}])
            record = store.records("p")[0]
            assert record.request_headers == [("Accept", "*/*"), ("cookie", "new")]

    asyncio.run(scenario())


def test_the_quota_counts_stored_bodies_and_an_announced_length(tmp_path):
    origin = FakeOrigin()

    async def scenario():
        async with running(tmp_path, origin, quota=len(DATA) + 1000) as store:
            await start(store, "first")
            assert (await until(store, "first"))["result"] == "success"
            await start(store, "second", url=URL + "?2")
            failed = await until(store, "second")
            assert (failed["result"], failed["failureReason"]) == ("failure", "quota-exceeded")
            assert failed["downloaded"] == 0 and "bgfetch_quota" in failed["lastError"]

    asyncio.run(scenario())
    assert len(origin.requests) == 2


def test_the_quota_stops_a_body_of_unknown_length(tmp_path):
    def chunked(request):
        return httpx.Response(200, stream=Cut(DATA, error=False))

    failed, record, _ = fetch_once(tmp_path, chunked, {"quota": 100_000})
    assert (failed["failureReason"], record["stored"]) == ("quota-exceeded", 0)


def test_download_total_counts_the_bytes_stored_before_a_resume(tmp_path):
    origin = FakeOrigin()

    def unknown_total(request):
        start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
        headers = {"Content-Range": f"bytes {start}-{len(DATA) - 1}/*", "ETag": '"v1"'}
        return httpx.Response(206, headers=headers, stream=Cut(DATA[start:], error=False))

    origin.plan = [lambda request: httpx.Response(200, headers={"ETag": '"v1"'}, stream=Cut(DATA[:200_000])), unknown_total]
    assert fetch_once(tmp_path, origin, download_total=250_000)[0]["failureReason"] == "download-total-exceeded"
    assert origin.ranges() == [None, "bytes=200000-"]


def test_download_total_refuses_an_announced_length_before_any_byte(tmp_path):
    failed, _, _ = fetch_once(tmp_path, FakeOrigin(), download_total=len(DATA) - 1)
    assert (failed["failureReason"], failed["downloaded"]) == ("download-total-exceeded", 0)
    assert "downloadTotal" in failed["lastError"]


def test_registrations_wait_their_turn_in_order(tmp_path):
    gates = {name: asyncio.Event() for name in "abc"}
    order = []

    async def handler(request):
        name = request.url.path.strip("/")
        order.append(name)
        await gates[name].wait()
        return httpx.Response(200, stream=Cut(name.encode(), error=False))

    async def scenario():
        async with running(tmp_path, handler, concurrency=1) as store:
            for name in "abc":
                await start(store, name, url=f"http://origin.test/{name}")
            await until(store, "a", state="fetching")
            await asyncio.sleep(0.1)
            assert [store.get(n)["state"] for n in "abc"] == ["fetching", "pending", "pending"]
            for name in "cba":  # released in reverse: the order still follows the queue
                gates[name].set()
            for name in "abc":
                assert (await until(store, name))["result"] == "success"

    asyncio.run(scenario())
    assert order == ["a", "b", "c"]


def test_closing_the_store_starts_nothing_that_was_queued(tmp_path):
    asked = []

    async def handler(request):
        asked.append(request.url.path)
        await asyncio.Event().wait()  # never answers: the store closes meanwhile

    async def scenario():
        async with running(tmp_path, handler, concurrency=1) as store:
            for name in "abc":
                await start(store, name, url=f"http://origin.test/{name}")
            await until(store, "a", state="fetching")
        async with running(tmp_path, handler) as store:
            assert [store.get(n)["state"] for n in "abc"] == ["fetching", "pending", "pending"]

    asyncio.run(scenario())
    assert asked == ["/a"]


@pytest.mark.parametrize(
    "error, outcome",
    [
        (httpx.ConnectError("connection refused"), ("", "paused")),
        (httpx.ConnectTimeout("timed out"), ("", "paused")),
        (httpx.RemoteProtocolError("peer closed connection"), ("", "paused")),
        (httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'"), ("failure", "done")),
        (httpx.TooManyRedirects("Exceeded maximum allowed redirects."), ("failure", "done")),
    ],
)
def test_errors_are_sorted_into_pause_and_failure(tmp_path, error, outcome):
    def handler(request):
        raise error

    async def scenario():
        async with running(tmp_path, handler, retry_cap=60) as store:
            await start(store)
            found = await until(store, "f", state=outcome[1])
            assert found["result"] == outcome[0]
            assert found["failureReason"] == ("fetch-error" if outcome[0] else "")
            assert str(error) in found["lastError"]

    asyncio.run(scenario())


def test_an_untrusted_certificate_fails_instead_of_pausing(tmp_path):
    def handler(request):
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
        except ssl.SSLError as exc:
            raise httpx.ConnectError(str(exc)) from exc

    found = fetch_once(tmp_path, handler)[0]
    assert found["failureReason"] == "fetch-error" and "self-signed" in found["lastError"]


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


def test_a_paused_fetch_retries_until_the_origin_answers(tmp_path):
    origin = FakeOrigin()
    origin.plan = [refused] * 3
    registration, _, body = fetch_once(tmp_path, origin)
    assert (registration["result"], body) == ("success", DATA)
    assert len(origin.requests) == 4


def test_integrity_is_checked_when_the_body_completes(tmp_path):
    good = "sha256-" + base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    bad = "sha256-" + base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    origin = FakeOrigin()
    origin.plan = [origin.cut_at(10_000)]

    async def scenario():
        async with running(tmp_path, origin) as store:
            await start(store, "good", integrity=good)
            assert (await until(store, "good"))["result"] == "success"
            await start(store, "bad", integrity=bad)
            failed = await until(store, "bad")
            assert failed["failureReason"] == "fetch-error" and "integrity" in failed["lastError"]
            assert store.records("bad")[0].stored == 0
            assert store.storage.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] > 0  # the good one's

    asyncio.run(scenario())


def test_backoff_doubles_to_its_cap_with_jitter():
    for attempt, most in [(0, 0.5), (1, 1.0), (2, 2.0), (10, 30.0)]:
        delays = [backoff(attempt, 30.0) for _ in range(200)]
        assert most / 2 <= min(delays) and max(delays) <= most
        assert len(set(delays)) > 1


@pytest.mark.parametrize(
    "value, parsed",
    [
        ("bytes 100-199/1000", (100, 1000)),
        ("bytes 100-199/*", (100, None)),
        ("bytes */1000", (None, 1000)),
        ("bytes 1-2", None),
        ("items 1-2/3", None),
        (None, None),
    ],
)
def test_content_range(value, parsed):
    assert content_range(value) == parsed
