"""store/db/writer.py, faults.py and room.py: every SQLite error survived, storage ones translated once.

The full disk is a real tmpfs, the lock a real second connection holding BEGIN IMMEDIATE.
"""

import asyncio
import os
import re
import sqlite3
import threading

import pytest

from store.db import faults, room, schema
from store.db.writer import Writer
from tests.disk import MiB, fill, small_disk

PIECE = os.urandom(MiB)


def _table(conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS pieces (id INTEGER PRIMARY KEY, data BLOB)")
    conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")


def _note(conn, text: str) -> int:
    return conn.execute("INSERT INTO notes (text) VALUES (?)", [text]).lastrowid


def _pieces(conn, count: int) -> None:
    for _ in range(count):
        conn.execute("INSERT INTO pieces (data) VALUES (?)", [PIECE])


def _error(code: int) -> sqlite3.Error:
    error = sqlite3.OperationalError(f"error {code}")
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (13, faults.StorageFull),  # SQLITE_FULL
        (5, faults.StorageBusy),  # SQLITE_BUSY
        (5 | (2 << 8), faults.StorageBusy),  # SQLITE_BUSY_SNAPSHOT
        (6, faults.StorageBusy),  # SQLITE_LOCKED
        (10 | (3 << 8), faults.StorageUnavailable),  # SQLITE_IOERR_WRITE, with room on the disk
        (14, faults.StorageUnavailable),  # SQLITE_CANTOPEN
        (19, None),  # SQLITE_CONSTRAINT: the work's own error
        (1, None),  # SQLITE_ERROR
    ],
)
def test_the_table_of_storage_faults(tmp_path, code, kind):
    error = _error(code)
    translated = faults.translate(error, str(tmp_path / "store.sqlite3"))
    if kind is None:
        assert translated is error
    else:
        assert type(translated) is kind and translated.__cause__ is error
        assert str(tmp_path / "store.sqlite3") in str(translated)


def test_an_io_error_on_a_full_disk_is_a_full_disk(tmp_path):
    with small_disk(tmp_path / "disk", 4 * MiB) as disk:
        fill(disk, 0)
        fault = faults.translate(_error(10 | (3 << 8)), str(disk / "store.sqlite3"))  # SQLITE_IOERR_WRITE
        assert isinstance(fault, faults.StorageFull) and fault.free < MiB


def test_full_and_busy_say_what_and_where(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    full = faults.StorageFull(path, 12345)
    assert str(full) == f"disk full: 12345 bytes free at {path}" and full.free == 12345
    assert str(faults.StorageBusy(path)) == f"database locked by another process: {path}"


def test_the_reserve_is_a_sixteenth_of_a_small_disk_and_at_most_64_mib(tmp_path, monkeypatch):
    def reserve(total: int) -> int:
        monkeypatch.setattr(room.shutil, "disk_usage", lambda _path: type("U", (), {"total": total})())
        return room.reserve_for(str(tmp_path / "store.sqlite3"))

    assert reserve(64 * MiB) == 4 * MiB
    assert reserve(16 * MiB) == MiB
    assert reserve(1 << 40) == room.RESERVE_MOST == 64 * MiB


def test_a_lost_transaction_fails_only_the_call_that_did_not_fit(tmp_path):
    """SQLite rolls the whole transaction back on SQLITE_FULL; the savepoint is gone with it.
    The writer used to die on `ROLLBACK TO work`; now the state changes of the batch commit
    and only the call that did not fit fails, as StorageFull naming the path."""
    with small_disk(tmp_path / "disk", 8 * MiB) as disk:
        path = str(disk / "store.sqlite3")

        async def main():
            writer = Writer(path, asyncio.get_running_loop())
            try:
                await writer.submit(_table)
                gate = threading.Event()
                held = writer.submit(lambda _conn: gate.wait(10))  # so that the next three share a transaction
                batch = [writer.submit(_note, "before"), writer.submit(_pieces, 12), writer.submit(_note, "after")]
                gate.set()
                await held
                outcomes = await asyncio.gather(*batch, return_exceptions=True)
                later = await writer.submit(_note, "later")  # the writer lives on
                return outcomes, later
            finally:
                writer.close()

        (before, lost, after), later = asyncio.run(main())
        assert isinstance(before, int) and isinstance(after, int) and isinstance(later, int)
        assert isinstance(lost, faults.StorageFull), lost
        assert re.fullmatch(rf"disk full: \d+ bytes free at {re.escape(path)}", str(lost))
        conn = schema.connect(path, readonly=True)
        assert [r[0] for r in conn.execute("SELECT text FROM notes ORDER BY id")] == ["before", "after", "later"]
        assert conn.execute("SELECT count(*) FROM pieces").fetchone()[0] == 0
        conn.close()


def test_chunks_stop_above_the_reserve_and_state_changes_still_commit(tmp_path):
    with small_disk(tmp_path / "disk", 32 * MiB) as disk:
        path = str(disk / "store.sqlite3")
        fill(disk, 12 * MiB)

        async def main():
            writer = Writer(path, asyncio.get_running_loop())
            try:
                await writer.submit(_table)
                stored, refused = 0, None
                while refused is None and stored < 64:
                    try:
                        await writer.submit(_pieces, 1, size=MiB)
                        stored += 1
                    except faults.StorageFull as exc:
                        refused = exc
                free_then = faults.free_bytes(path)
                notes = [await writer.submit(_note, str(n)) for n in range(20)]
                return stored, refused, free_then, notes, writer.room.reserve
            finally:
                writer.close()

        stored, refused, free_then, notes, reserve = asyncio.run(main())
        assert reserve == 2 * MiB  # a sixteenth of 32 MiB
        assert 0 < stored < 12 and refused is not None, (stored, refused)
        assert f"bytes free at {path}" in str(refused)
        assert free_then >= reserve  # the chunks left the reserve alone
        assert len(notes) == 20  # and the state changes fit in it


def test_a_lock_held_by_another_connection_is_storage_busy_and_passes(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 200)
    path = str(tmp_path / "store.sqlite3")

    async def main():
        writer = Writer(path, asyncio.get_running_loop())
        try:
            await writer.submit(_table)
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                locked = await asyncio.gather(writer.submit(_note, "a"), writer.submit(_note, "b"), return_exceptions=True)
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            return locked, await writer.submit(_note, "c")
        finally:
            writer.close()

    locked, after = asyncio.run(main())
    assert all(isinstance(outcome, faults.StorageBusy) for outcome in locked), locked
    assert str(locked[0]) == f"database locked by another process: {path}"
    assert isinstance(after, int)


def test_a_failing_call_rolls_back_alone(tmp_path):
    path = str(tmp_path / "store.sqlite3")

    def broken(conn) -> None:
        conn.execute("INSERT INTO notes (text) VALUES ('half')")
        raise ValueError("broken on purpose")

    async def main():
        writer = Writer(path, asyncio.get_running_loop())
        try:
            await writer.submit(_table)
            return await asyncio.gather(
                writer.submit(_note, "a"), writer.submit(broken), writer.submit(_note, "b"), return_exceptions=True
            )
        finally:
            writer.close()

    first, error, second = asyncio.run(main())
    assert isinstance(error, ValueError) and isinstance(first, int) and isinstance(second, int)
    conn = schema.connect(path, readonly=True)
    assert [r[0] for r in conn.execute("SELECT text FROM notes ORDER BY id")] == ["a", "b"]
    conn.close()
