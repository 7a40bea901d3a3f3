"""A body over several connections (store/engine/segments.py, record_fetch.py's parts): which bodies
may take them, the parts asked for, resume of each part after a cut, an origin that changes the
file under the parts, and readers that get the bytes in order. Over httpx.MockTransport, with the
smallest part made small; the same through a real mitmdump and origin: test_segments_e2e.py."""

import asyncio
import hashlib
import re

import httpx
import pytest

from store.engine import decision, segments, sink
from tests.test_transfer_loop import Cut, running, start, stored_body, until

KiB, MiB = 1 << 10, 1 << 20
URL = "http://origin.test/parts.bin"
DATA = hashlib.shake_256(b"parts").digest(1 * MiB)
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr(segments, "MIN_PART", 64 * KiB)
    monkeypatch.setattr(segments, "ALIGN", 16 * KiB)


class PartOrigin:
    """A MockTransport handler for one file that serves byte ranges (closed or open) with
    `If-Range`, like nginx; `cut` maps a range's start to the bytes after which it is cut once."""

    def __init__(self, data: bytes = DATA, etag: str | None = '"p1"', accept_ranges: bool = True) -> None:
        self.data, self.etag, self.accept_ranges = data, etag, accept_ranges
        self.requests: list[httpx.Request] = []
        self.cut: dict[int, int] = {}
        self.hold: asyncio.Event | None = None  # the part from 0 waits for it before its last bytes

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        fields = {"Accept-Ranges": "bytes"} if self.accept_ranges else {}
        if self.etag:
            fields["ETag"] = self.etag
        start, end, status = 0, len(self.data), 200
        wanted = RANGE.match(request.headers.get("range", ""))
        if wanted and self.accept_ranges and request.headers.get("if-range") == self.etag:
            start, status = int(wanted.group(1)), 206
            end = int(wanted.group(2)) + 1 if wanted.group(2) else end
            fields["Content-Range"] = f"bytes {start}-{end - 1}/{len(self.data)}"
        fields["Content-Length"] = str(end - start)
        body = self.data[start:end]
        if start in self.cut:
            return httpx.Response(status, headers=fields, stream=Cut(body[:self.cut.pop(start)]))
        if start == 0 and self.hold is not None:
            return httpx.Response(status, headers=fields, stream=Held(body, self.hold))
        return httpx.Response(status, headers=fields, stream=Cut(body, error=False))

    def ranges(self) -> list[str | None]:
        return [r.headers.get("range") for r in self.requests]


class Held(httpx.AsyncByteStream):
    """A body that sends 144 KiB (the last 16 KiB after the sink's flush interval, so the first
    128 KiB are committed), then waits for an event before the rest."""

    def __init__(self, data: bytes, event: asyncio.Event) -> None:
        self.data, self.event = data, event

    async def __aiter__(self):
        yield self.data[:128 * KiB]
        await asyncio.sleep(sink.FLUSH_SECONDS + 0.05)
        yield self.data[128 * KiB:144 * KiB]
        await self.event.wait()
        yield self.data[144 * KiB:]


# -- which bodies, which parts -------------------------------------------------------------


def test_only_a_body_that_can_be_asked_in_parts_takes_several_connections():
    assert segments.connections(4, 100 * MiB, "bytes", True) == 4
    assert segments.connections(4, 100 * MiB, "bytes", False) == 1  # no validator If-Range could carry
    assert segments.connections(4, 100 * MiB, None, True) == 1  # no Accept-Ranges: bytes
    assert segments.connections(4, None, "bytes", True) == 1  # no known size
    assert segments.connections(1, 100 * MiB, "bytes", True) == 1
    assert segments.connections(16, 200 * KiB, "Bytes ", True) == 3  # parts of MIN_PART at least


def test_parts_and_gaps():
    assert segments.split_evenly(1 * MiB, 4) == [(0, 256 * KiB), (256 * KiB, 512 * KiB), (512 * KiB, 768 * KiB),
                                                 (768 * KiB, 1 * MiB)]
    assert segments.split_evenly(100 * KiB, 3) == [(0, 48 * KiB), (48 * KiB, 96 * KiB), (96 * KiB, 100 * KiB)]
    assert segments.gaps([(0, 5), (10, 20)], 30) == [(5, 10), (20, 30)]
    assert segments.gaps([], 30) == [(0, 30)] and segments.gaps([(0, 30)], 30) == []
    # each gap its share of the connections by its length: the parts beyond them wait their turn
    assert segments.plan([(0, 64 * KiB), (512 * KiB, 1 * MiB)], 4) == [
        (0, 64 * KiB), (512 * KiB, 640 * KiB), (640 * KiB, 768 * KiB), (768 * KiB, 896 * KiB), (896 * KiB, 1 * MiB)]


@pytest.mark.parametrize(("status", "content_range", "action"), [
    (206, "bytes 100-199/1000", decision.Append),
    (206, "bytes 0-999/1000", decision.StartOver),  # another part
    (206, "bytes 100-199/2000", decision.StartOver),  # another length
    (200, None, decision.StartOver),  # the whole body: a new entity, or Range not honoured
    (416, "bytes */50", decision.StartOver),
    (403, None, decision.KeepAndPause),
    (503, None, decision.BadStatus),
])
def test_what_an_answer_to_a_part_means(status, content_range, action):
    assert type(decision.decide_part("http://a/", 100, 1000, status, content_range)) is action


# -- fetching in parts ---------------------------------------------------------------------


def fetched(tmp_path, handler, **record) -> bytes:
    """The body stored by a fetch through `handler`, with bgfetch_segments=4, once it succeeded."""

    async def scenario() -> bytes:
        async with running(tmp_path, handler, segments=4) as store:
            await start(store, **record)
            await until(store, "f", result="success")
            return stored_body(store)

    return asyncio.run(scenario())


def test_a_body_comes_in_parts_side_by_side(tmp_path):
    origin = PartOrigin()
    assert fetched(tmp_path, origin) == DATA
    assert origin.ranges() == [None, "bytes=262144-524287", "bytes=524288-786431", "bytes=786432-1048575"]
    assert all(r.headers["if-range"] == '"p1"' for r in origin.requests[1:])


@pytest.mark.parametrize("origin", [PartOrigin(accept_ranges=False), PartOrigin(etag=None), PartOrigin(etag='W/"p1"'),
                                    PartOrigin(data=DATA[:100 * KiB])], ids=["no ranges", "no etag", "weak etag", "small"])
def test_a_body_that_cannot_be_asked_in_parts_comes_over_one_connection(tmp_path, origin):
    assert fetched(tmp_path, origin) == origin.data
    assert origin.ranges() == [None]


def test_a_record_asks_for_its_own_number_of_parts(tmp_path):
    origin = PartOrigin()
    assert fetched(tmp_path, origin, segments=2) == DATA
    assert origin.ranges() == [None, "bytes=524288-1048575"]


def test_a_storage_that_takes_no_parts_gets_every_body_over_one_connection(tmp_path, monkeypatch):
    from store.db.postgres.storage import PostgresStorage  # a fleet's: chunks commit at the end only
    from store.db.sqlite import SqliteStorage

    monkeypatch.setattr(SqliteStorage, "parts", PostgresStorage.parts)
    origin = PartOrigin()
    assert fetched(tmp_path, origin, segments=4) == DATA
    assert origin.ranges() == [None]


def test_a_part_cut_short_resumes_where_it_stopped_and_the_others_are_not_asked_again(tmp_path):
    origin = PartOrigin()
    origin.cut[512 * KiB] = 100 * KiB  # the third part, once
    assert fetched(tmp_path, origin) == DATA
    first, again = origin.ranges()[:4], origin.ranges()[4:]
    assert first == [None, "bytes=262144-524287", "bytes=524288-786431", "bytes=786432-1048575"]
    assert again == ["bytes=626688-786431"]  # the cut part's rest: 512 KiB + 100 KiB onwards


def test_a_file_changed_under_the_parts_starts_again_over_one_connection(tmp_path):
    origin = PartOrigin()
    new = hashlib.shake_256(b"new").digest(len(DATA))

    def changed(request: httpx.Request) -> httpx.Response:
        if request.headers.get("range"):  # after the first answer: the file is another now
            origin.data, origin.etag = new, '"p2"'
        return PartOrigin.__call__(origin, request)

    assert fetched(tmp_path, changed) == new
    assert origin.ranges()[-1] is None  # the last try: the whole new body, over one connection


def test_readers_get_the_contiguous_bytes_only_while_later_parts_are_in(tmp_path):
    origin = PartOrigin()

    async def scenario():
        origin.hold = asyncio.Event()
        async with running(tmp_path, origin, segments=4) as store:
            await start(store)
            record = await until_stored(store, len(DATA) - 256 * KiB)  # the three later parts are in
            assert 128 * KiB <= record.stored < 256 * KiB  # the first part still misses its last bytes
            read = b"".join([data async for data in store.read(record.id, 0, len(DATA))])
            assert read == DATA[:record.stored]
            origin.hold.set()
            await until(store, "f", result="success")
            assert stored_body(store) == DATA

    asyncio.run(scenario())


async def until_stored(store, held: int):
    """The record once its chunks hold `held` bytes beyond its first part, and some of that."""
    for _ in range(500):
        record = store.records("f")[0]
        later = sum(end - start for start, end in await store.storage.spans(record.id, record.generation) if start > 0)
        if later >= held and record.stored:
            return record
        await asyncio.sleep(0.01)
    raise AssertionError("the later parts never came")
