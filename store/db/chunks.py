"""SQL of body chunks: appending them without a copy, reading them back, giving their space back,
and making the two files agree after a crash.

The chunks are in the bodies file (`schema.BODIES`), the records that count them in the database.
"""

import hashlib
import sqlite3
from collections.abc import Iterator

from store.db.schema import BODIES

# A response reads and sends 256 KiB at a time: with two pieces in flight per client, 100
# clients reading at once hold about 50 MB, not the 200 MB that whole chunks would.
READ_BYTES = 256 * 1024


def append(conn: sqlite3.Connection, record_id: int, generation: int, offset: int, pieces: list[bytes]) -> bool:
    """Store the bytes of `pieces` at `offset`; a chunk of an older generation (the body
    restarted) is dropped. The pieces are copied straight into SQLite's pages with the GIL
    released (incremental blob I/O), so the event loop never pays for joining them."""
    size = sum(map(len, pieces))
    updated = conn.execute(
        "UPDATE records SET stored = ?, received = received + ?"
        " WHERE id = ? AND generation = ? AND stored = ?",
        [offset + size, size, record_id, generation, offset],
    ).rowcount
    if updated:
        rowid = conn.execute(
            "INSERT INTO chunks (record_id, offset, size, data) VALUES (?, ?, ?, zeroblob(?))",
            [record_id, offset, size, size],
        ).lastrowid
        with conn.blobopen("chunks", "data", rowid, name=BODIES) as blob:
            for piece in pieces:
                blob.write(piece)
    return bool(updated)


def chunks_from(conn: sqlite3.Connection, record_id: int, offset: int) -> list[sqlite3.Row]:
    """The committed chunks that hold bytes at or after `offset`, in order."""
    return conn.execute(
        "SELECT id, offset, size FROM chunks WHERE record_id = ? AND offset + size > ?"
        " AND offset >= (SELECT COALESCE(MAX(offset), 0) FROM chunks"
        "                WHERE record_id = ? AND offset <= ?)"
        " ORDER BY offset LIMIT 64",
        [record_id, offset, record_id, offset],
    ).fetchall()


def read(conn: sqlite3.Connection, record_id: int, start: int, end: int) -> Iterator[bytes]:
    """Committed bytes of a record from `start` up to `end` (exclusive), READ_BYTES at a time.

    Stops early where the committed bytes end; the caller waits for more and asks again.
    No blob stays open across a `yield`: the connection is shared, and an open blob would
    hold its read transaction — and every reader's view of the store — in the past.
    """
    pos = start
    while pos < end:
        rows = chunks_from(conn, record_id, pos)
        if not rows or rows[0]["offset"] > pos:
            return
        for row in rows:
            if row["offset"] > pos:
                return
            stop = min(row["offset"] + row["size"], end)
            while pos < stop:
                with conn.blobopen("chunks", "data", row["id"], readonly=True, name=BODIES) as blob:
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
    """Give up to `pages` free pages back to the file system, the bodies file's first; returns
    how many it gave (none in a file made without auto-vacuum)."""
    given = 0
    for schema in (BODIES, "main"):
        free = conn.execute(f"PRAGMA {schema}.freelist_count").fetchone()[0]
        conn.execute(f"PRAGMA {schema}.incremental_vacuum({int(pages - given)})").fetchall()
        given += free - conn.execute(f"PRAGMA {schema}.freelist_count").fetchone()[0]
        if given >= pages:
            break
    return given


def reconcile(conn: sqlite3.Connection) -> int:
    """After a crash, make the records that are not complete agree with their chunks; how many
    needed it. A transaction over both files commits in each alone: one may hold a chunk the
    other does not count, or count one it does not hold. A record then keeps the bytes that
    are both counted and there, from its start, and drops every other chunk (the transfer asks
    the origin for the rest)."""
    fixed = 0
    for record_id, stored in conn.execute("SELECT id, stored FROM records WHERE NOT complete").fetchall():
        there = contiguous(conn, record_id, stored)
        dropped = conn.execute("DELETE FROM chunks WHERE record_id = ? AND offset >= ?", [record_id, there]).rowcount
        if there != stored or dropped:
            conn.execute("UPDATE records SET stored = ? WHERE id = ?", [there, record_id])
            fixed += 1
    return fixed


def contiguous(conn: sqlite3.Connection, record_id: int, most: int) -> int:
    """Where the chunks of a record stop following each other from byte 0, up to `most`."""
    end = 0
    for offset, size in conn.execute("SELECT offset, size FROM chunks WHERE record_id = ? ORDER BY offset", [record_id]):
        if offset != end or end >= most:
            break
        end += size
    return min(end, most)


def nothing(conn: sqlite3.Connection) -> None:
    """A chunk's place in a batch with no bytes: asks the writer whether a chunk would fit."""
