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
    """Store the bytes of `pieces` at `offset` of the record's body: at the end of its bytes
    that follow each other from byte 0 (`stored`, which then grows over every chunk already
    there after it), or further on (a part of a fetch over several connections, `spans`); or
    at the end of its renewal's (by `generation`, renewals.py). A chunk of a generation that
    is neither (the body restarted) or of bytes already there is dropped. The pieces are
    copied straight into SQLite's pages with the GIL released (incremental blob I/O), so the
    event loop never pays for joining them."""
    size = sum(map(len, pieces))
    row = conn.execute("SELECT stored FROM records WHERE id = ? AND generation = ?", [record_id, generation]).fetchone()
    if row is not None:
        if offset < row[0]:
            return False
        _write(conn, record_id, generation, offset, pieces, size)
        stored = contiguous(conn, record_id, generation, row[0]) if offset == row[0] else row[0]
        conn.execute("UPDATE records SET stored = ?, received = received + ? WHERE id = ?", [stored, size, record_id])
        return True
    if conn.execute(
        "UPDATE renewals SET stored = ? WHERE record_id = ? AND generation = ? AND stored = ?",
        [offset + size, record_id, generation, offset],
    ).rowcount:
        _write(conn, record_id, generation, offset, pieces, size)
        return True
    return False


def _write(conn: sqlite3.Connection, record_id: int, generation: int, offset: int, pieces: list[bytes], size: int) -> None:
    rowid = conn.execute(
        "INSERT INTO chunks (record_id, generation, offset, size, data) VALUES (?, ?, ?, ?, zeroblob(?))",
        [record_id, generation, offset, size, size],
    ).lastrowid
    with conn.blobopen("chunks", "data", rowid, name=BODIES) as blob:
        for piece in pieces:
            blob.write(piece)


def spans(conn: sqlite3.Connection, record_id: int, generation: int) -> list[tuple[int, int]]:
    """The byte ranges [start, end) a record's chunks of this generation hold, in order, those
    that touch merged."""
    found: list[tuple[int, int]] = []
    for offset, size in conn.execute(
        "SELECT offset, size FROM chunks WHERE record_id = ? AND generation = ? ORDER BY offset", [record_id, generation]
    ):
        if found and found[-1][1] == offset:
            found[-1] = (found[-1][0], offset + size)
        else:
            found.append((offset, offset + size))
    return found


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
    needed it. A transaction over both files commits in each alone: the database may count a
    chunk that the bodies file does not hold, the bodies file may hold one the database does
    not count, or still hold the chunks of an entity the record has given up. A record keeps
    the chunks of its generation (bytes an origin sent for it), and its `stored` becomes the
    bytes that follow each other from its start; the transfer asks the origin for the rest."""
    fixed = 0
    rows = conn.execute("SELECT id, generation, stored FROM records WHERE NOT complete").fetchall()
    for record_id, generation, stored in rows:
        dropped = conn.execute("DELETE FROM chunks WHERE record_id = ? AND generation != ?",
                               [record_id, generation]).rowcount
        there = contiguous(conn, record_id, generation, 0)
        if there != stored or dropped:
            conn.execute("UPDATE records SET stored = ? WHERE id = ?", [there, record_id])
            fixed += 1
    return fixed


def contiguous(conn: sqlite3.Connection, record_id: int, generation: int, start: int) -> int:
    """Where the chunks of a record's generation that follow each other from `start` (the end of
    one) stop."""
    end = start
    for offset, size in conn.execute(
        "SELECT offset, size FROM chunks WHERE record_id = ? AND generation = ? AND offset >= ? ORDER BY offset",
        [record_id, generation, start],
    ):
        if offset != end:
            break
        end += size
    return end


def nothing(conn: sqlite3.Connection) -> None:
    """A chunk's place in a batch with no bytes: asks the writer whether a chunk would fit."""
