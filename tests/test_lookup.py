"""store/proxyside/bloom.py and lookup.py: a fixed-size filter of URL digests before an indexed query; end to
end, 100,000 URLs created and deleted through the API leave mitmdump's memory flat, and lookups right."""

import asyncio
import logging
import os
import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from harness.poll import eventually_async
from store.db import lookups, schema
from store.proxyside import bloom, protocol
from store.proxyside.bloom import BloomFilter
from store.proxyside.lookup import STALE_MIN, Lookup
from store.proxyside.process import StoreProcess
from store.proxyside.protocol import url_digest


def test_every_url_added_is_maybe_there():
    found = BloomFilter()
    urls = [f"http://example.com/{n}" for n in range(50_000)]
    for url in urls:
        found.add(url_digest(url))
    assert all(url_digest(url) in found for url in urls)
    assert found.added == 50_000


def test_at_capacity_a_false_maybe_is_rare_and_the_memory_is_what_it_was():
    found = BloomFilter(1 << 20)
    size = len(found.array)
    for _ in range(found.capacity):
        found.add(random.randbytes(16))
    assert not found.full
    false = sum(random.randbytes(16) in found for _ in range(50_000))
    assert false / 50_000 < 0.02
    assert len(found.array) == size == (1 << 20) // 8
    found.add(random.randbytes(16))
    assert found.full


def test_sizes_are_powers_of_two_within_bounds():
    assert bloom.bits_for(0) == bloom.MIN_BITS
    assert bloom.bits_for(10**9) == bloom.MAX_BITS
    assert bloom.bits_for(1_000_000) == 1 << 25  # 20 bits a URL, rounded up
    with pytest.raises(ValueError):
        BloomFilter(1000)


def test_a_digest_is_fixed_size_whatever_the_url():
    assert len(url_digest("http://a/")) == len(url_digest("http://a/" + "x" * 100_000)) == protocol.DIGEST_BYTES
    assert url_digest("http://a/\udc80") != url_digest("http://a/")  # lone surrogates do not raise


# -- the lookup over a real database ------------------------------------------------


def database(path: Path, urls: list[str], start: int = 0) -> None:
    """Add one successful registration per URL (what the store writes)."""
    conn = schema.connect(str(path))
    schema.migrate(conn)
    conn.execute("BEGIN")
    for n, url in enumerate(urls, start):
        conn.execute("INSERT INTO registrations (id, state, result, created_at, updated_at)"
                     " VALUES (?, 'done', 'success', 0, 0)", [f"r{n}"])
        conn.execute("INSERT INTO records (registration_id, idx, url, status, complete) VALUES (?, 0, ?, 200, 1)",
                     [f"r{n}", url])
    conn.execute("COMMIT")
    conn.close()


def delete(path: Path, urls: list[str]) -> None:
    conn = schema.connect(str(path))
    conn.executemany("DELETE FROM registrations WHERE id IN (SELECT registration_id FROM records WHERE url = ?)",
                     [[url] for url in urls])
    conn.close()


async def settled(lookup: Lookup) -> None:
    await eventually_async(lambda: lookup._build is None or lookup._build.done(), 10, interval=0.01,
                           what="the filter's rebuild to end")


def test_a_url_never_stored_costs_no_query_and_a_stored_one_is_found(tmp_path):
    db = tmp_path / "db.sqlite3"
    database(db, ["http://a/stored"])

    async def scenario():
        lookup = Lookup(str(db))
        assert lookup.find("http://a/stored", []) is None  # nothing known before the database is open
        await lookup.open()
        assert lookup.find("http://a/stored", []) is not None  # the index answers until the filter is built
        await settled(lookup)
        queries = []
        lookup.conn.set_trace_callback(queries.append)
        try:
            assert all(lookup.find(f"http://a/never/{n}", []) is None for n in range(10_000))
            assert queries == []
            assert lookup.find("http://a/stored", []) is not None
            assert len(queries) == 1
            assert lookup.find("http://a/stored", [("Cookie", "a=b")]) is None  # credentials are part of the key
        finally:
            lookup.close()

    asyncio.run(scenario())


def test_repeated_requests_of_a_url_resolve_to_one_complete_verified_record(tmp_path):
    """A registration may hold a request more than once (as the spec allows): the lookup serves
    one record of the URL, the same every time: a complete one before one still arriving, never
    one whose integrity is unchecked, the newest of equals, and nothing of a failed fetch."""
    db, url = tmp_path / "db.sqlite3", "http://a/repeated"
    database(db, [])
    conn = schema.connect(str(db))
    try:
        conn.execute("INSERT INTO registrations (id, state, result, created_at, updated_at) VALUES ('d', 'fetching', '', 0, 0)")
        for idx, complete, integrity in [(0, 1, None), (1, 0, None), (2, 0, "sha256-" + "A" * 43 + "=")]:
            conn.execute("INSERT INTO records (registration_id, idx, url, status, complete, integrity)"
                         " VALUES ('d', ?, ?, 200, ?, ?)", [idx, url, complete, integrity])
        ids = [row[0] for row in conn.execute("SELECT id FROM records ORDER BY idx")]
        assert {lookups.servable_record(conn, url, "") for _ in range(5)} == {ids[0]}
        conn.execute("UPDATE records SET complete = 1 WHERE id = ?", [ids[1]])
        assert lookups.servable_record(conn, url, "") == ids[1]
        conn.execute("UPDATE records SET complete = 1 WHERE id = ?", [ids[2]])  # verified: now it may be served
        assert lookups.servable_record(conn, url, "") == ids[2]
        conn.execute("UPDATE registrations SET state = 'done', result = 'failure'")
        assert lookups.servable_record(conn, url, "") is None
    finally:
        conn.close()


def test_an_announced_url_is_found_at_once(tmp_path):
    db = tmp_path / "db.sqlite3"
    database(db, ["http://a/first"])

    async def scenario():
        lookup = Lookup(str(db))
        await lookup.open()
        await settled(lookup)
        try:
            database(db, ["http://a/later"], start=1)
            assert lookup.find("http://a/later", []) is None
            lookup.add_digest(url_digest("http://a/later"))
            assert lookup.find("http://a/later", []) is not None
        finally:
            lookup.close()

    asyncio.run(scenario())


GARBLED = """import json, sys
sys.stdin.readline()
print(json.dumps({"port": 1, "listen_port": 0}))
print('{"added": "not a digest"}', flush=True)
sys.stdin.read()
"""


def test_a_line_that_is_not_an_announcement_makes_the_lookup_read_the_database_again(tmp_path, caplog):
    """The store stored a URL and its announcement came garbled: the line is an error, and the
    lookup rebuilds from the database and finds the URL (it would not know it otherwise)."""
    db = tmp_path / "db.sqlite3"
    database(db, ["http://a/first"])

    class Told(Lookup):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.told = asyncio.Event()

        def rebuild(self) -> None:
            super().rebuild()
            self.told.set()

    async def scenario():
        lookup = Told(str(db))
        await lookup.open()
        await settled(lookup)
        lookup.told.clear()  # opening built the filter: the rebuild awaited is the garbled line's
        database(db, ["http://a/later"], start=1)
        assert lookup.find("http://a/later", []) is None
        store = StoreProcess([], {"secret": "s"}, lookup, program=[sys.executable, "-c", GARBLED])
        await store.start()
        try:
            await asyncio.wait_for(lookup.told.wait(), 10)
            await settled(lookup)
            assert lookup.find("http://a/later", []) is not None
        finally:
            await store.stop()
            lookup.close()

    asyncio.run(scenario())
    errors = [r for r in caplog.records if "not an announcement" in r.message]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR and "not a digest" in errors[0].message


def test_removals_make_it_rebuild_without_the_removed_urls(tmp_path):
    db = tmp_path / "db.sqlite3"
    urls = [f"http://a/{n}" for n in range(3 * STALE_MIN)]
    database(db, urls)

    async def scenario():
        lookup = Lookup(str(db))
        await lookup.open()
        await settled(lookup)
        try:
            first, built = lookup.filter, lookup._build
            delete(db, urls[:2 * STALE_MIN])
            lookup.forget(STALE_MIN - 1)
            assert lookup._build is built  # too few to be worth a read of the database
            lookup.forget(STALE_MIN + 1)
            await settled(lookup)
            assert lookup.filter is not first
            assert lookup.filter.added == STALE_MIN and lookup.removed == 0
            assert lookup.find(urls[-1], []) is not None and lookup.find(urls[0], []) is None
        finally:
            lookup.close()

    asyncio.run(scenario())


def test_a_full_filter_is_rebuilt_bigger_and_what_came_meanwhile_is_kept(tmp_path):
    db = tmp_path / "db.sqlite3"
    database(db, ["http://a/0"])
    urls = [f"http://a/{n}" for n in range(1, 110_001)]

    async def scenario():
        lookup = Lookup(str(db))
        await lookup.open()
        await settled(lookup)
        try:
            assert len(lookup.filter.array) * 8 == bloom.MIN_BITS
            database(db, urls, start=1)
            for url in urls:  # as the store announces them
                lookup.add_digest(url_digest(url))
            assert lookup._build is not None  # it filled
            lookup.add_digest(url_digest("http://a/not-yet-committed"))
            await settled(lookup)
            assert len(lookup.filter.array) * 8 == bloom.bits_for(110_001) > bloom.MIN_BITS
            assert not lookup.filter.full
            assert all(url_digest(url) in lookup.filter for url in random.sample(urls, 2000))
            assert url_digest("http://a/not-yet-committed") in lookup.filter
            assert lookup.find(urls[-1], []) is not None
        finally:
            lookup.close()

    asyncio.run(scenario())


def test_a_rebuild_that_cannot_read_keeps_the_filter_in_use(tmp_path, caplog):
    db = tmp_path / "db.sqlite3"
    database(db, ["http://a/kept"])

    async def scenario():
        lookup = Lookup(str(db))
        await lookup.open()
        await settled(lookup)
        try:
            kept = lookup.filter
            os.rename(db, tmp_path / "elsewhere")
            lookup.rebuild()
            await settled(lookup)
            assert lookup.filter is kept and url_digest("http://a/kept") in lookup.filter
        finally:
            lookup.close()

    asyncio.run(scenario())
    assert any("was not rebuilt" in r.message for r in caplog.records)


# -- end to end ----------------------------------------------------------------------


def rss(pid: int) -> int:
    """The process's resident memory in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


RSS_GROWTH_BOUND = 16 << 20


def test_100000_urls_created_and_deleted_leave_mitmdump_flat_and_lookups_right(origin, proxy):
    origin.add("/kept.bin", size=20_000)
    origin.add("/gone.bin", size=20_000)
    for name in ("kept", "gone"):
        proxy.background(origin.url(f"/{name}.bin"), f'id="{name}"')
        proxy.wait_for(name, result="success")
    with proxy.client() as client:  # both served from the store once, so the code of every path is loaded
        assert client.get(origin.url("/gone.bin")).content == origin.data("/gone.bin")
    assert proxy.api("DELETE", "/api/fetches/gone").status_code == 204
    before = rss(proxy.proc.pid)
    padding = "q" * 300  # 36 MB of URLs in all, which a set of them would hold
    for round in range(100):
        urls = [origin.url(f"/many/{round}/{n}?{padding}") for n in range(1000)]
        created = proxy.api("POST", "/api/fetches", json={"id": f"many-{round}", "requests": urls})
        assert created.status_code == 201, created.text[:300]
        assert proxy.api("DELETE", f"/api/fetches/many-{round}").status_code == 204
    time.sleep(2)  # the last announcements reach mitmdump
    grown = rss(proxy.proc.pid) - before
    assert grown < RSS_GROWTH_BOUND, f"mitmdump grew by {grown / 2**20:.1f} MiB"
    origin.stop()
    with proxy.client() as client:
        assert client.get(origin.url("/kept.bin")).content == origin.data("/kept.bin")
        assert client.get(origin.url("/gone.bin")).status_code == 502  # not stored: to the origin, which is down
