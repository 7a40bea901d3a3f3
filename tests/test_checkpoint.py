"""store/db/checkpoint.py: the WAL is copied into the database when the writer rests, and stays bounded when it never does."""

import asyncio
import os
import time
from types import SimpleNamespace

from store.db import checkpoint, schema
from store.db.writer import Writer

PIECE = os.urandom(1024 * 1024)


def _table(conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS pieces (id INTEGER PRIMARY KEY, data BLOB)")


def _insert(conn) -> None:
    conn.execute("INSERT INTO pieces (data) VALUES (?)", [PIECE])


def _wal(path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def test_commits_stay_in_the_wal_until_the_writer_rests(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "IDLE_SECONDS", 0.3)
    path = str(tmp_path / "store.sqlite3")

    async def main() -> tuple[int, list[int]]:
        writer = Writer(path, asyncio.get_running_loop())
        try:
            await writer.submit(_table)
            for _ in range(8):
                await writer.submit(_insert)
            busy = _wal(path)  # no checkpoint while commits keep coming
            sizes = []
            for _ in range(40):  # then the writer rests
                await asyncio.sleep(0.05)
                sizes.append(_wal(path))
            return busy, sizes
        finally:
            writer.close()

    busy, sizes = asyncio.run(main())
    assert busy > 8 * len(PIECE)
    assert sizes[-1] == 0, sizes  # copied into the database and truncated
    conn = schema.connect(path, readonly=True)
    assert conn.execute("SELECT count(*), sum(length(data)) FROM pieces").fetchone()[:] == (8, 8 * len(PIECE))
    conn.close()


def test_the_wal_stays_bounded_while_the_writer_never_rests(tmp_path, monkeypatch):
    limit = 6 * 1024 * 1024
    monkeypatch.setattr(checkpoint, "WAL_LIMIT", limit)
    monkeypatch.setattr(checkpoint, "IDLE_SECONDS", 60)  # never idle here
    path = str(tmp_path / "store.sqlite3")

    async def main() -> int:
        writer = Writer(path, asyncio.get_running_loop())
        try:
            await writer.submit(_table)
            largest = 0
            for _ in range(48):
                await writer.submit(_insert)
                largest = max(largest, _wal(path))
            return largest
        finally:
            writer.close()

    started = time.monotonic()
    largest = asyncio.run(main())
    # without the writer's RESTART the WAL would hold all 48 MiB; past the limit it may grow
    # by the commits that come while the checkpoint thread's own PASSIVE keeps RESTART busy
    assert largest <= 4 * limit, largest
    assert time.monotonic() - started < 30


def test_the_wal_limit_leaves_three_quarters_of_the_free_disk(tmp_path, monkeypatch):
    def free(gib: float):
        monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _path: SimpleNamespace(free=int(gib * 1024**3)))
        return checkpoint.wal_limit(str(tmp_path / "store.sqlite3"))

    assert free(1000) == checkpoint.WAL_LIMIT
    assert free(8) == 2 * 1024**3
    # a nearly full disk: a quarter of what is free, never a floor larger than the disk
    assert free(0.01) == int(0.01 * 1024**3) // 4
    assert free(0) == 0


def test_with_no_room_for_a_wal_it_is_copied_back_after_every_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "WAL_LIMIT", 0)  # what a full disk gives
    monkeypatch.setattr(checkpoint, "IDLE_SECONDS", 60)  # never idle here
    path = str(tmp_path / "store.sqlite3")

    async def main() -> int:
        writer = Writer(path, asyncio.get_running_loop())
        try:
            await writer.submit(_table)
            largest = 0
            for _ in range(16):
                await writer.submit(_insert)
                largest = max(largest, _wal(path))
            return largest
        finally:
            writer.close()

    largest = asyncio.run(main())
    assert largest <= 3 * len(PIECE), largest  # one commit's frames, reused: the WAL still works
    conn = schema.connect(path, readonly=True)
    assert conn.execute("SELECT count(*), sum(length(data)) FROM pieces").fetchone()[:] == (16, 16 * len(PIECE))
    conn.close()


def test_closing_while_a_checkpoint_copies_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "WAL_LIMIT", 96 * 1024 * 1024)  # a PASSIVE starts past 48 MiB
    path = str(tmp_path / "store.sqlite3")

    async def main() -> None:
        writer = Writer(path, asyncio.get_running_loop())
        await writer.submit(_table)
        for _ in range(64):
            await writer.submit(_insert)
        writer.close()  # while the checkpoint thread copies the WAL

    asyncio.run(main())
    conn = schema.connect(path, readonly=True)
    assert conn.execute("SELECT count(*), sum(length(data)) FROM pieces").fetchone()[:] == (64, 64 * len(PIECE))
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
