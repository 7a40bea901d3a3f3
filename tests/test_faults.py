"""Faults are pauses, end to end: a full disk (a real tmpfs) and a lock held by another process.

A real mitmdump, the real origin; every body checked by SHA-256, and `downloaded` sampled
all along: it never goes back.
"""

import asyncio
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from harness.poll import eventually, eventually_async
from harness.proxy import Proxy
from store.db import chunks, faults, schema
from store.db.sqlite import SqliteStorage
from store.engine.service import Store
from tests.disk import MiB, fill, free, small_disk

DISK_FULL = re.compile(r"^disk full: (\d+) bytes free at (.+?)(?: \((\d+) of them held back for the write-ahead log and the reserve\))?$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Sampler:
    """Reads a registration in the background, every 50 ms, until stopped: what it went through."""

    def __init__(self, proxy: Proxy, reg_id: str) -> None:
        self.proxy, self.reg_id = proxy, reg_id
        self.seen: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                response = self.proxy.api("GET", f"/api/fetches/{self.reg_id}")
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                self.seen.append(response.json())

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(10)
        return self.seen

    def downloaded(self) -> list[int]:
        return [r["downloaded"] for r in self.seen]


def served(proxy: Proxy, url: str) -> bytes:
    with proxy.client() as client:
        response = client.get(url)
    assert response.status_code == 200, response.text
    return response.content


def ranges(origin, path: str) -> list[str | None]:
    return [r.headers.get("Range") for r in origin.requests if r.path == path]


def read_until_it_ends(proxy: Proxy, url: str) -> tuple[bytes, float]:
    """Stream `url` through the proxy until the response ends, whole or short: (bytes, seconds)."""
    started, got = time.monotonic(), bytearray()
    with proxy.client() as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        try:
            for piece in response.iter_raw():
                got += piece
        except httpx.RemoteProtocolError:
            pass  # the short body: it ended where the stored bytes end
    return bytes(got), time.monotonic() - started


def test_a_full_disk_pauses_keeps_the_bytes_the_api_answers_and_it_resumes_by_itself(tmp_path, origin, make_proxy):
    with small_disk(tmp_path / "disk", 64 * MiB) as disk:
        proxy = make_proxy("bgfetch_paused_read_timeout=10")  # readers of the paused fetch: the end in 10 s
        proxy.db = disk / "bgfetch.sqlite3"
        proxy.start()
        origin.add("/keep.bin", size=6 * MiB)
        origin.add("/big.bin", size=24 * MiB)
        origin.add("/late.bin", size=4 * MiB)
        proxy.background(origin.url("/keep.bin"), 'id="keep"')
        proxy.wait_for("keep", result="success")
        filler = fill(disk, 12 * MiB)

        proxy.background(origin.url("/big.bin"), 'id="big"')
        sampler = Sampler(proxy, "big")
        paused = proxy.wait_until("big", lambda r: r["state"] == "paused" and r["lastError"].startswith("disk full"))
        found = DISK_FULL.match(paused["lastError"])
        assert found and found.group(2) == str(proxy.db), paused["lastError"]
        usable = int(found.group(1)) - int(found.group(3) or 0)  # a WAL not yet copied holds some back
        assert usable < 12 * MiB and paused["downloaded"] > 0 and paused["result"] == ""

        # the API keeps answering while the disk is full: reads, a new fetch (it pauses), abort
        assert proxy.api("GET", "/api/fetches/keep").status_code == 200
        body = proxy.api("GET", "/api/fetches/keep/records/0/body")
        assert body.status_code == 200 and sha256(body.content) == origin.sha256("/keep.bin")
        late = proxy.api("POST", "/api/fetches", json={"id": "late", "requests": [origin.url("/late.bin")]})
        assert late.status_code == 201, late.text
        proxy.wait_until("late", lambda r: r["state"] == "paused" and r["lastError"].startswith("disk full"))
        aborted = proxy.api("POST", "/api/fetches/late/abort", json={})
        assert aborted.status_code == 200 and aborted.json()["failureReason"] == "aborted"

        # a client asking through the proxy while the disk is full: 503 paused when no byte could be
        # stored, or the bytes that could (a checkpoint may have given a little space back), then
        # the end: never a hang
        started = time.monotonic()
        got = bytearray()
        with proxy.client() as client, client.stream(
            "GET", origin.url("/late.bin"), headers={"Background-Fetch": 'id="asked"'}
        ) as asked:
            try:
                for piece in asked.iter_raw():
                    got += piece
            except httpx.RemoteProtocolError:
                pass  # the short body
        if asked.status_code == 503:
            assert asked.headers["Retry-After"] and json.loads(got)["registration"]["lastError"].startswith("disk full")
        else:
            assert asked.status_code == 200 and len(got) < 4 * MiB and got == origin.data("/late.bin")[: len(got)]
        assert time.monotonic() - started < 30
        assert proxy.registration("asked")["state"] == "paused"
        assert proxy.api("POST", "/api/fetches/asked/abort", json={}).status_code == 200

        # a client streaming the paused fetch gets what is stored, then the end: never a hang
        stored = proxy.registration("big")["downloaded"]
        got, seconds = read_until_it_ends(proxy, origin.url("/big.bin"))
        assert stored <= len(got) < 24 * MiB and got == origin.data("/big.bin")[: len(got)]
        assert seconds < 30

        # DELETE gives space back to the file system (the origin is away, so nothing takes it)
        origin.stop()
        before = free(disk)
        deleted = proxy.api("DELETE", "/api/fetches/keep")
        assert deleted.status_code == 204, (deleted.text, proxy.log.read_text()[-4000:])
        eventually(lambda: free(disk), 30, until=lambda now: now - before >= 5 * MiB, interval=0.1,
                   what="5 MiB given back to the file system", explain=lambda now: (before, now))
        assert free(disk) - before >= 5 * MiB, (before, free(disk))  # most of the 6 MiB body

        # space returns: it resumes by itself, with Range, and completes byte for byte
        origin.start()
        filler.unlink()
        proxy.wait_for("big", timeout=60, result="success", downloaded=24 * MiB)
        assert sha256(served(proxy, origin.url("/big.bin"))) == origin.sha256("/big.bin")
        resumed = [r for r in ranges(origin, "/big.bin") if r]
        assert resumed and all(r != "bytes=0-" for r in resumed), ranges(origin, "/big.bin")
        seen = sampler.stop()
        assert sampler.downloaded() == sorted(sampler.downloaded()), "downloaded went back"
        assert not any(r["result"] == "failure" for r in seen)
        proxy.stop()


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def hold_lock(db, seconds: float) -> subprocess.Popen:
    """Another process that holds the database's write lock for `seconds`, once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db), str(seconds)], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"locked\n"
    return holder


def test_a_lock_held_by_another_process_pauses_and_the_fetch_completes(origin, proxy):
    origin.add("/lk.bin", size=8 * MiB)
    origin.behave("/lk.bin", throttle=2 * MiB)
    proxy.background(origin.url("/lk.bin"), 'id="lk"')
    proxy.wait_until("lk", lambda r: r["downloaded"] >= MiB)
    sampler = Sampler(proxy, "lk")
    holder = hold_lock(proxy.db, 8)
    try:
        paused = proxy.wait_until("lk", lambda r: r["state"] == "paused", timeout=20)
        assert paused["lastError"] == f"database locked by another process: {proxy.db}"
        assert paused["downloaded"] >= MiB and paused["result"] == ""
        assert holder.wait(20) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        holder.stdout.close()
    origin.reset_behaviour("/lk.bin")
    proxy.wait_for("lk", result="success", downloaded=8 * MiB)
    seen = sampler.stop()
    assert sha256(served(proxy, origin.url("/lk.bin"))) == origin.sha256("/lk.bin")
    assert sampler.downloaded() == sorted(sampler.downloaded()), "downloaded went back"
    assert not any(r["result"] == "failure" for r in seen)
    first, *resumed = ranges(origin, "/lk.bin")
    assert first is None and resumed and all(r.startswith("bytes=") and r != "bytes=0-" for r in resumed)


def test_a_pause_that_cannot_be_written_is_held_in_memory_and_written_later(tmp_path, origin, monkeypatch):
    """The lock outlasts two busy timeouts: the chunk and then the pause itself cannot be
    written. The store still tells the truth (paused, the lock as lastError, in the API's
    reads and in events) while the database says otherwise; an abort cannot be written either
    and leaves the fetch going; when the lock goes, it resumes and completes."""
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 300)
    origin.add("/held.bin", size=4 * MiB)
    origin.behave("/held.bin", throttle=2 * MiB)
    db = tmp_path / "bgfetch.sqlite3"

    async def until(store: Store, test, what: str, timeout: float = 20) -> dict:
        return await eventually_async(lambda: store.get("held"), timeout, until=test, interval=0.02, what=what)

    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            store = Store(SqliteStorage.open(str(db)), client, retry_cap=0.2)
            try:
                await store.fetch({"id": "held", "title": ""}, [{"url": origin.url("/held.bin")}])
                await until(store, lambda r: r["downloaded"] >= MiB // 2, "half a MiB stored")
                holder = await asyncio.to_thread(hold_lock, db, 3)
                held = await until(store, lambda r: r["state"] == "paused", "a pause")
                assert held["lastError"] == f"database locked by another process: {db}" and held["result"] == ""
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    written = conn.execute("SELECT state FROM registrations WHERE id = 'held'").fetchone()[0]
                assert written in ("fetching", "pending")  # the pause lives in memory only
                with pytest.raises(faults.StorageBusy):
                    await store.abort("held")
                assert store.get("held")["state"] == "paused"
                assert await asyncio.to_thread(holder.wait, 20) == 0
                holder.stdout.close()
                done = await until(store, lambda r: r["state"] == "done", "the end")
                assert done["result"] == "success" and done["downloaded"] == 4 * MiB
                record = store.records("held")[0]
                body = b"".join(chunks.read(store.storage.db, record.id, 0, 2**62))
                assert sha256(body) == origin.sha256("/held.bin")
                shown = [r for _, kind, r in store.events.log if kind == "progress" and r["state"] == "paused"]
                assert any(r["lastError"].startswith("database locked by another process") for r in shown)
            finally:
                await store.close()

    asyncio.run(scenario())
    first, *resumed = ranges(origin, "/held.bin")
    assert first is None and resumed and all(r != "bytes=0-" for r in resumed)


def test_a_write_the_store_cannot_do_now_answers_503_and_reads_go_on(origin, proxy):
    origin.add("/w.bin", size=MiB)
    proxy.background(origin.url("/w.bin"), 'id="w"')
    proxy.wait_for("w", result="success")
    holder = hold_lock(proxy.db, 12)
    try:
        started = time.monotonic()
        refused = proxy.api("POST", "/api/fetches", json={"id": "x", "requests": [origin.url("/w.bin")]})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5", refused.text
        problem = refused.json()
        assert problem["type"].endswith("/storage-unavailable")
        assert f"database locked by another process: {proxy.db}" in problem["detail"]
        assert time.monotonic() - started < 10
        assert proxy.api("GET", "/api/fetches/w").json()["result"] == "success"  # reads go on
        assert sha256(served(proxy, origin.url("/w.bin"))) == origin.sha256("/w.bin")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    created = proxy.api("POST", "/api/fetches", json={"id": "x", "requests": [origin.url("/w.bin")]})
    assert created.status_code == 201, created.text
    assert "Traceback" not in proxy.log.read_text()


def test_a_store_started_under_another_process_lock_waits_paused_then_resumes(origin, proxy):
    origin.add("/s.bin", size=2 * MiB)
    origin.stop()
    proxy.background(origin.url("/s.bin"), 'id="s"')
    proxy.wait_for("s", state="paused")
    proxy.stop()
    holder = hold_lock(proxy.db, 10)
    try:
        proxy.start()  # it answers at once; it cannot write its start-up's state changes yet
        held = proxy.wait_until("s", lambda r: r["lastError"].startswith("database locked"), timeout=20)
        assert held["state"] == "paused" and held["result"] == ""
        origin.start()
        assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        holder.stdout.close()
    proxy.wait_for("s", timeout=60, result="success", downloaded=2 * MiB)
    assert sha256(served(proxy, origin.url("/s.bin"))) == origin.sha256("/s.bin")
