"""SQL of renewals: a record's next generation, stored beside the one it serves until it is complete.

A renewal is a new entity the origin sent when a stored response was revalidated. Its chunks
carry its generation (`chunks.append` writes them); when it is complete it takes the record's
place in one transaction, and the generation it replaced is left for its last reader, then
deleted (`drop_generation`). Nothing of it survives a restart of the store (`forget`).
"""

import dataclasses
import json
import sqlite3

from store.db import chunks, records
from store.db.storage import NotFound, Record


def renewal(conn: sqlite3.Connection, record_id: int) -> Record | None:
    """The record as its renewal will make it (not complete yet), None if it has none."""
    row = conn.execute("SELECT * FROM renewals WHERE record_id = ?", [record_id]).fetchone()
    if row is None:
        return None
    return dataclasses.replace(
        records.record(conn, record_id), generation=row["generation"], status=row["status"],
        response_headers=records.header_fields(row["response_headers"]), size=row["size"], stored=row["stored"],
        complete=False, selecting=row["selecting"],
    )


def begin(conn: sqlite3.Connection, record_id: int, status: int, fields: list, size: int | None,
          selecting: str = "") -> int:
    """Start storing a new entity for a complete record; its generation (one past any the
    record has had). A renewal that was under way is dropped with its chunks."""
    row = conn.execute(
        "SELECT r.generation, n.generation FROM records r LEFT JOIN renewals n ON n.record_id = r.id WHERE r.id = ?",
        [record_id],
    ).fetchone()
    if row is None:
        raise NotFound(record_id)
    if row[1] is not None:
        drop(conn, record_id, row[1])
    generation = max(row[0], row[1] or 0) + 1
    conn.execute(
        "INSERT INTO renewals (record_id, generation, status, response_headers, size, selecting)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [record_id, generation, status, json.dumps(fields), size, selecting],
    )
    return generation


def complete(conn: sqlite3.Connection, record_id: int, generation: int) -> int | None:
    """The renewal, whole, takes the record's place; the generation it replaced (its chunks
    stay until `drop_generation`), or None when that renewal is gone."""
    row = conn.execute(
        "SELECT * FROM renewals WHERE record_id = ? AND generation = ?", [record_id, generation]
    ).fetchone()
    if row is None:
        return None
    retired = chunks.current_generation(conn, record_id)
    conn.execute(
        "UPDATE records SET generation = ?, status = ?, response_headers = ?, size = ?, stored = ?, complete = 1,"
        " received = received + ?, reusable = 1, selecting = ? WHERE id = ?",  # only one that may be kept is renewed
        [generation, row["status"], row["response_headers"], row["stored"], row["stored"], row["stored"],
         row["selecting"], record_id],
    )
    conn.execute("DELETE FROM renewals WHERE record_id = ?", [record_id])
    return retired


def drop(conn: sqlite3.Connection, record_id: int, generation: int) -> None:
    """Give a renewal up, with its chunks."""
    if conn.execute("DELETE FROM renewals WHERE record_id = ? AND generation = ?", [record_id, generation]).rowcount:
        drop_generation(conn, record_id, generation)


def drop_generation(conn: sqlite3.Connection, record_id: int, generation: int) -> None:
    """Delete the chunks of a generation the record no longer serves (nor is renewing to)."""
    renewing = conn.execute("SELECT generation FROM renewals WHERE record_id = ?", [record_id]).fetchone()
    if generation not in (chunks.current_generation(conn, record_id), renewing and renewing[0]):
        conn.execute("DELETE FROM chunks WHERE record_id = ? AND generation = ?", [record_id, generation])


def forget(conn: sqlite3.Connection) -> int:
    """At start-up: drop every renewal and every chunk of a generation no record serves; how
    many chunks went."""
    conn.execute("DELETE FROM renewals")
    return conn.execute(
        "DELETE FROM chunks WHERE id IN (SELECT c.id FROM chunks c JOIN records r ON r.id = c.record_id"
        " WHERE c.generation != r.generation)"
    ).rowcount
