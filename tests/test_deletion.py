"""DELETE removes a registration at once and its bodies a bounded piece per writer turn, under a
stand-in registration that no reader sees; a crash (kill -9 of the store) at any moment leaves a
store that finishes the removal by itself and holds every other body whole."""

import hashlib
import threading
import time

import httpx

from harness.poll import eventually
from harness.proxy import Proxy
from store.db import lookups, registrations, schema
from store.db.storage import NewRecord, NotFound
from tests.stores import MiB, kill_store, read_only, stored


def test_deleted_at_once_for_readers_and_removed_a_piece_at_a_time(tmp_path):
    conn = schema.connect(str(tmp_path / "db.sqlite3"))
    schema.migrate(conn)
    try:
        for name, size in (("a", 3 * MiB), ("big", 20 * MiB), ("z", 2 * MiB)):
            stored(conn, name, size)
        assert registrations.delete(conn, "big") == 1
        try:
            registrations.registration(conn, "big")
            raise AssertionError("still there")
        except NotFound:
            pass
        assert registrations.ids(conn, active_only=False) == ["a", "z"]
        assert registrations.page(conn, False, 10, None, True).ids == ["z", "a"]
        assert lookups.servable_record(conn, "http://a/big", "") is None
        stored(conn, "big", MiB)  # the id is free again at once
        assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 3 + 20 + 2 + 1
        turns = []
        while registrations.purge_some(conn, 8):
            turns.append(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
        assert turns == [18, 10, 6, 6]  # 8, 8, then the last 4; then the stand-in itself goes
        assert not registrations.purge_some(conn, 8)
        assert conn.execute("SELECT count(*) FROM registrations").fetchone()[0] == 3
        assert registrations.registration(conn, "big")["downloaded"] == MiB
        assert registrations.registration(conn, "z")["downloaded"] == 2 * MiB
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def chunk_bytes(db) -> int:
    return read_only(db, "SELECT COALESCE(SUM(size), 0) FROM chunks")


def integrity(db) -> str:
    return read_only(db, "PRAGMA integrity_check")


def body_of(proxy: Proxy, url: str) -> str:
    with proxy.client() as client:
        response = client.get(url)
    assert response.status_code == 200, response.text
    return hashlib.sha256(response.content).hexdigest()


def test_a_removal_left_by_a_crash_is_finished_at_the_next_start(tmp_path, origin):
    proxy = Proxy(tmp_path)
    conn = schema.connect(str(proxy.db))
    schema.migrate(conn)
    for name, size in (("keep", MiB), ("big", 30 * MiB)):
        stored(conn, name, size)
    registrations.delete(conn, "big")  # committed, nothing removed yet: the store died right after
    conn.close()
    assert chunk_bytes(proxy.db) == 31 * MiB
    try:
        proxy.start()
        eventually(lambda: chunk_bytes(proxy.db), 30, until=lambda left: left == MiB, what="the removal to finish")
        assert proxy.api("GET", "/api/fetches/big").status_code == 404
        assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": ["keep"]}
        assert proxy.api("GET", "/api/fetches/keep/records/0/body").content == b"\0" * MiB
    finally:
        proxy.stop()
    assert integrity(proxy.db) == "ok"


def test_kill_9_of_the_store_at_any_moment_of_a_delete(tmp_path, origin):
    origin.add("/keep.bin", size=3 * MiB)
    origin.add("/big.bin", size=200 * MiB)
    proxy = Proxy(tmp_path).start()
    try:
        proxy.background(origin.url("/keep.bin"), 'id="keep"')
        proxy.wait_for("keep", result="success")
        for delay in (0.0, 0.005, 0.02, 0.1):
            proxy.background(origin.url("/big.bin"), 'id="big"')
            proxy.wait_for("big", result="success", timeout=60)
            store = proxy.store_pid()
            answer = threading.Thread(target=lambda: _delete(proxy, "big"), daemon=True)
            answer.start()
            time.sleep(delay)
            kill_store(proxy, store)
            answer.join(15)
            assert proxy.api("GET", "/api/fetches/big").status_code in (200, 404)  # before or after the commit
            proxy.api("DELETE", "/api/fetches/big")
            eventually(lambda: chunk_bytes(proxy.db), 30, until=lambda left: left == 3 * MiB,
                       what=f"the removal to finish after a kill {delay * 1000:.0f} ms into the DELETE")
            assert body_of(proxy, origin.url("/keep.bin")) == origin.sha256("/keep.bin")
            assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": ["keep"]}
    finally:
        proxy.stop()
    assert integrity(proxy.db) == "ok"


def _delete(proxy: Proxy, reg_id: str) -> None:
    try:
        proxy.api("DELETE", f"/api/fetches/{reg_id}")
    except httpx.HTTPError:
        pass  # the store was killed under it


def test_a_registration_replaced_by_one_of_its_id_leaves_its_bodies_to_the_removal(tmp_path):
    conn = schema.connect(str(tmp_path / "db.sqlite3"))
    schema.migrate(conn)
    try:
        stored(conn, "again", 5 * MiB)
        registrations.create(conn, {"id": "again", "owner": "api"}, [NewRecord(url="http://a/new")], lambda *_: True)
        assert registrations.registration(conn, "again")["downloaded"] == 0  # the new one, at once
        assert conn.execute("SELECT COALESCE(SUM(size), 0) FROM chunks").fetchone()[0] == 5 * MiB
        while registrations.purge_some(conn, 2):
            pass
        assert conn.execute("SELECT COALESCE(SUM(size), 0) FROM chunks").fetchone()[0] == 0
        assert registrations.ids(conn, active_only=False) == ["again"]
    finally:
        conn.close()
