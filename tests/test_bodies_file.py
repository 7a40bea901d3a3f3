"""The bodies in a file of their own (store/db/schema.py): written once, in rollback-journal mode;
the two files made to agree after a crash (chunks.reconcile); a store that held its bodies in
the database moves them over once; kill -9 of the store while it writes loses no byte."""

import hashlib
import os
import sqlite3
import time

import httpx
import sqlite_utils

from harness.poll import eventually
from harness.proxy import Proxy
from store.db import chunks, schema
from tests.stores import MiB, kill_store, read_only, stored


def record_of(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute("SELECT id FROM records WHERE registration_id = ?", [name]).fetchone()[0]


def test_the_bodies_file_is_a_journal_file_beside_a_wal_database(tmp_path):
    path = str(tmp_path / "db.sqlite3")
    conn = schema.connect(path)
    schema.migrate(conn)
    try:
        stored(conn, "a", 3 * MiB)
        assert conn.execute("PRAGMA main.journal_mode").fetchone()[0] == "wal"
        assert conn.execute(f"PRAGMA {schema.BODIES}.journal_mode").fetchone()[0] == "truncate"
        assert conn.execute(f"PRAGMA {schema.BODIES}.page_size").fetchone()[0] == schema.PAGE_SIZE
        assert conn.execute(f"PRAGMA {schema.BODIES}.auto_vacuum").fetchone()[0] == 2
        assert not conn.execute("SELECT 1 FROM main.sqlite_master WHERE name = 'chunks'").fetchone()
    finally:
        conn.close()
    assert os.path.getsize(schema.bodies_path(path)) >= 3 * MiB > os.path.getsize(path)
    assert read_only(path, "SELECT COALESCE(SUM(size), 0) FROM chunks") == 3 * MiB


def test_after_a_crash_each_record_keeps_what_both_files_hold(tmp_path):
    conn = schema.connect(str(tmp_path / "db.sqlite3"))
    schema.migrate(conn)
    try:
        for name in ("ahead", "behind", "whole", "restarted", "segmented"):
            stored(conn, name, 3 * MiB)
        ahead, behind, whole, restarted, segmented = (
            record_of(conn, n) for n in ("ahead", "behind", "whole", "restarted", "segmented"))
        conn.execute("UPDATE records SET complete = 0 WHERE id != ?", [whole])
        conn.execute("UPDATE records SET stored = 5 * 1048576 WHERE id = ?", [ahead])  # its chunks rolled back
        conn.execute("UPDATE records SET stored = 2 * 1048576 WHERE id = ?", [behind])  # its count rolled back
        conn.execute("UPDATE records SET stored = 0, generation = 1 WHERE id = ?", [restarted])  # a new entity
        conn.execute("DELETE FROM chunks WHERE record_id = ? AND offset = 1048576", [segmented])  # a gap
        assert chunks.reconcile(conn) == 4
        found = dict(conn.execute("SELECT registration_id, stored FROM records").fetchall())
        assert found == {"ahead": 3 * MiB, "behind": 3 * MiB, "whole": 3 * MiB, "restarted": 0, "segmented": MiB}
        held = dict(conn.execute("SELECT record_id, SUM(size) FROM chunks GROUP BY record_id").fetchall())
        assert held == {ahead: 3 * MiB, behind: 3 * MiB, whole: 3 * MiB, segmented: 2 * MiB}  # the old entity's went
        assert chunks.spans(conn, segmented, 0) == [(0, MiB), (2 * MiB, 3 * MiB)]  # the far segment is kept
        assert chunks.reconcile(conn) == 0
    finally:
        conn.close()


def test_a_store_with_bodies_in_the_database_moves_them_over_once(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    conn = schema.connect(path, bodies=False)
    schema.migrations.apply(sqlite_utils.Database(conn), stop_before="m009_bodies_apart")
    conn.execute("INSERT INTO registrations (id, state, result, created_at, updated_at) VALUES ('r', 'done', 'success', 0, 0)")
    conn.execute("INSERT INTO records (registration_id, idx, url, status, stored, size, complete)"
                 " VALUES ('r', 0, 'http://a/r', 200, 4, 4, 1)")
    conn.execute("INSERT INTO chunks (record_id, offset, size, data) VALUES (1, 0, 4, x'01020304')")
    conn.close()
    conn = schema.connect(path)
    try:
        schema.migrate(conn)
        assert b"".join(chunks.read(conn, 1, 0, 4)) == b"\1\2\3\4"
        assert not conn.execute("SELECT 1 FROM main.sqlite_master WHERE name = 'chunks'").fetchone()
    finally:
        conn.close()


def test_kill_9_of_the_store_while_it_writes_loses_no_byte(tmp_path, origin):
    origin.add("/big.bin", size=120 * MiB)
    origin.behave("/big.bin", throttle=40 * MiB)
    proxy = Proxy(tmp_path).start()
    try:
        proxy.background(origin.url("/big.bin"), 'id="big"')
        for moment in (0.4, 0.9, 1.3):
            eventually(lambda: proxy.registration("big").get("downloaded", 0), 30, until=lambda n: n > 0,
                       what="bytes stored")
            time.sleep(moment)
            kill_store(proxy)
        done = proxy.wait_for("big", result="success", timeout=120)
        assert done["downloaded"] == 120 * MiB
        body = httpx.get(proxy.api_url("/api/fetches/big/records/0/body"), timeout=60).content
        assert hashlib.sha256(body).hexdigest() == origin.sha256("/big.bin")
    finally:
        proxy.stop()
    assert read_only(proxy.db, "PRAGMA integrity_check") == "ok"
    assert read_only(proxy.db, f"PRAGMA {schema.BODIES}.integrity_check") == "ok"



def test_what_a_record_holds_is_read_while_the_writer_commits_into_the_bodies_file(tmp_path, monkeypatch):
    """The bodies file is in rollback-journal mode: while a commit holds its lock a reader is
    BUSY at once. `spans` waits for the commit (it failed the transfer before), and a lock held
    past the busy timeout is StorageBusy, a pause."""
    import asyncio

    from store.db import faults, sqlite

    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 500)
    path = str(tmp_path / "db.sqlite3")
    conn = schema.connect(path)
    schema.migrate(conn)
    stored(conn, "a", 2 * MiB)
    record = record_of(conn, "a")
    conn.close()
    holder = sqlite3.connect(schema.bodies_path(path), isolation_level=None)

    async def scenario():
        storage = sqlite.SqliteStorage.open(path)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            asyncio.get_running_loop().call_later(0.2, holder.execute, "COMMIT")
            assert await storage.spans(record, 0) == [(0, 2 * MiB)]
            holder.execute("BEGIN EXCLUSIVE")
            try:
                await storage.spans(record, 0)
            except faults.StorageBusy as exc:
                return str(exc)
            finally:
                holder.execute("COMMIT")
        finally:
            await storage.close()

    try:
        assert "locked" in asyncio.run(scenario())
    finally:
        holder.close()
