"""SQL of body chunks: appending them without a copy, reading them back, giving their space back."""

import hashlib
import sqlite3
from collections.abc import Iterator

# A response reads and sends 256 KiB at a time: with two pieces in flight per client, 100
# clients reading at once hold about 50 MB, not the 200 MB that whole chunks would.
READ_BYTES = 256 * 1024


def append(conn: sqlite3.Connection, record_id: int, generation: int, offset: int, pieces: list[bytes]) -> bool:
    """Store the bytes of `pieces` at `offset` of the record's body (or of its renewal, by
    `generation`); a chunk of a generation that is neither (the body restarted) is dropped. The pieces are copied straight into SQLite's pages with the GIL
    released (incremental blob I/O), so the event loop never pays for joining them."""
    size = sum(map(len, pieces))
    updated = conn.execute(
        "UPDATE records SET stored = ?, received = received + ?"
        " WHERE id = ? AND generation = ? AND stored = ?",
        [offset + size, size, record_id, generation, offset],
    ).rowcount or conn.execute(  # or the record's renewal (renewals.py)
        "UPDATE renewals SET stored = ? WHERE record_id = ? AND generation = ? AND stored = ?",
        [offset + size, record_id, generation, offset],
    ).rowcount
    if updated:
        rowid = conn.execute(
            "INSERT INTO chunks (record_id, generation, offset, size, data) VALUES (?, ?, ?, ?, zeroblob(?))",
            [record_id, generation, offset, size, size],
        ).lastrowid
        with conn.blobopen("chunks", "data", rowid) as blob:
            for piece in pieces:
                blob.write(piece)
    return bool(updated)


def chunks_from(conn: sqlite3.Connection, record_id: int, generation: int, offset: int) -> list[sqlite3.Row]:
    """The committed chunks of a generation that hold bytes at or after `offset`, in order.
    (Only columns the index or the row's head hold: `generation` sits after the bytes.)"""
    return conn.execute(
        "SELECT id, offset, size FROM chunks WHERE record_id = ? AND generation = ? AND offset + size > ?"
        " AND offset >= (SELECT COALESCE(MAX(offset), 0) FROM chunks"
        "                WHERE record_id = ? AND generation = ? AND offset <= ?)"
        " ORDER BY offset LIMIT 64",
        [record_id, generation, offset, record_id, generation, offset],
    ).fetchall()


def current_generation(conn: sqlite3.Connection, record_id: int) -> int:
    row = conn.execute("SELECT generation FROM records WHERE id = ?", [record_id]).fetchone()
    return row[0] if row else -1


def read(conn: sqlite3.Connection, record_id: int, start: int, end: int, generation: int | None = None) -> Iterator[bytes]:
    """Committed bytes of a record's body (of `generation`; None: the one it serves) from
    `start` up to `end` (exclusive), READ_BYTES at a time.

    Stops early where the committed bytes end; the caller waits for more and asks again.
    No blob stays open across a `yield`: the connection is shared, and an open blob would
    hold its read transaction — and every reader's view of the store — in the past.
    """
    pos = start
    if generation is None:
        generation = current_generation(conn, record_id)
    while pos < end:
        rows = chunks_from(conn, record_id, generation, pos)
        if not rows or rows[0]["offset"] > pos:
            return
        for row in rows:
            if row["offset"] > pos:
                return
            stop = min(row["offset"] + row["size"], end)
            while pos < stop:
                with conn.blobopen("chunks", "data", row["id"], readonly=True) as blob:
                    blob.seek(pos - row["offset"])
                    data = blob.read(min(READ_BYTES, stop - pos))
                pos += len(data)
                yield data
            if pos >= end:
                return


def sha256(conn: sqlite3.Connection, record_id: int, size: int) -> bytes:
    digest = hashlib.sha256()
    for data in read(conn, record_id, 0, size):
        digest.update(data)
    return digest.digest()


def reclaim_space(conn: sqlite3.Connection, pages: int) -> int:
    """Give up to `pages` free pages back to the file system; returns how many it gave
    (none in a database made without auto-vacuum)."""
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    return free - conn.execute("PRAGMA freelist_count").fetchone()[0]


def nothing(conn: sqlite3.Connection) -> None:
    """A chunk's place in a batch with no bytes: asks the writer whether a chunk would fit."""
