"""SQL of records: their responses, their bytes' accounting, and reading them as `Record`s."""

import json
import sqlite3

from store.db.storage import NotFound, Record


def as_record(row: sqlite3.Row) -> Record:
    return Record(
        id=row["id"],
        registration_id=row["registration_id"],
        index=row["idx"],
        method=row["method"],
        url=row["url"],
        credential=row["credential"],
        request_headers=header_fields(row["request_headers"]),
        request_body=row["request_body"],
        body_hash=row["body_hash"],
        integrity=row["integrity"],
        status=row["status"],
        response_headers=header_fields(row["response_headers"]),
        size=row["size"],
        stored=row["stored"],
        received=row["received"],
        generation=row["generation"],
        complete=bool(row["complete"]),
        revalidate=row["revalidate"],
        segments=row["segments"],
        reusable=bool(row["reusable"]),
        selecting=row["selecting"],
    )


def header_fields(text: str | None) -> list[tuple[str, str]]:
    """Header fields as stored: a JSON list of [name, value] pairs."""
    return [(k, v) for k, v in json.loads(text or "[]")]


def records(conn: sqlite3.Connection, reg_id: str) -> list[Record]:
    rows = conn.execute("SELECT * FROM records WHERE registration_id = ? ORDER BY idx", [reg_id])
    return [as_record(row) for row in rows]


def record(conn: sqlite3.Connection, record_id: int) -> Record:
    row = conn.execute("SELECT * FROM records WHERE id = ?", [record_id]).fetchone()
    if row is None:
        raise NotFound(record_id)
    return as_record(row)


def record_at(conn: sqlite3.Connection, reg_id: str, index: int) -> Record | None:
    row = conn.execute("SELECT * FROM records WHERE registration_id = ? AND idx = ?", [reg_id, index]).fetchone()
    return as_record(row) if row else None


def received(conn: sqlite3.Connection, reg_id: str) -> int:
    return conn.execute(
        "SELECT COALESCE(SUM(received), 0) FROM records WHERE registration_id = ?", [reg_id]
    ).fetchone()[0]


def download_room(conn: sqlite3.Connection, reg_id: str, record_id: int) -> int | None:
    """How many bytes `record_id` may hold before the registration exceeds downloadTotal."""
    return conn.execute(
        "SELECT g.download_total - COALESCE(SUM(r.stored), 0) FROM registrations g"
        " LEFT JOIN records r ON r.registration_id = g.id AND r.id != ? WHERE g.id = ?",
        [record_id, reg_id],
    ).fetchone()[0]


# Every record is read (no join per row: half the time beside 100,000 records, about 20 ms).
HELD_SQL = """
SELECT (SELECT COALESCE(SUM(MAX(stored, COALESCE(size, 0))), 0) FROM records
        WHERE id IS NOT ? AND (complete OR registration_id NOT IN (SELECT id FROM registrations WHERE result = 'failure')))
     + (SELECT COALESCE(SUM(MAX(stored, COALESCE(size, 0))), 0) FROM renewals WHERE record_id IS NOT ?)
"""


def held(conn: sqlite3.Connection, record_id: int | None = None) -> int:
    """Bytes every record but `record_id` (None: every record) holds, or will hold once its
    announced size has come (their renewals too); of a failed registration, only its complete
    records hold any."""
    return conn.execute(HELD_SQL, [record_id, record_id]).fetchone()[0]


# A response has come, so the request's body was sent: the record's first response counts it
# into its registration's `uploaded` (a retry that sends it again does not count it twice).
UPLOADED_SQL = """
UPDATE registrations SET uploaded = MIN(upload_total, uploaded + COALESCE(
    (SELECT length(request_body) FROM records WHERE id = :record AND status IS NULL), 0))
WHERE id = (SELECT registration_id FROM records WHERE id = :record)
"""


def set_response(conn: sqlite3.Connection, record_id: int, status: int, fields: list, size: int | None,
                 reusable: bool = True, selecting: str = "", count_held: bool = True) -> int:
    """Store the response's status, header fields, announced size, whether later requests may be
    served it and the request fields it varies on, and count the request's body as uploaded;
    returns `held` as of this transaction (the writer runs one at a time, so two transfers never
    share the room), or 0 when not `count_held` (no quota: a store of 100,000 records need not
    read them all)."""
    conn.execute(UPLOADED_SQL, {"record": record_id})
    conn.execute(
        "UPDATE records SET status = ?, response_headers = ?, size = ?, reusable = ?, selecting = ? WHERE id = ?",
        [status, json.dumps(fields), size, int(reusable), selecting, record_id],
    )
    return held(conn, record_id) if count_held else 0


def refresh_response(conn: sqlite3.Connection, record_id: int, generation: int, fields: list) -> bool:
    """New header fields for the stored response of a complete record, if still of `generation`."""
    return bool(conn.execute(
        "UPDATE records SET response_headers = ? WHERE id = ? AND generation = ? AND complete = 1",
        [json.dumps(fields), record_id, generation],
    ).rowcount)


def restart(conn: sqlite3.Connection, record_id: int) -> int:
    """Forget a record's bytes: the entity changed. Returns the new generation."""
    conn.execute("DELETE FROM chunks WHERE record_id = ?", [record_id])
    conn.execute(
        "UPDATE records SET stored = 0, complete = 0, generation = generation + 1 WHERE id = ?", [record_id]
    )
    return conn.execute("SELECT generation FROM records WHERE id = ?", [record_id]).fetchone()[0]


def complete(conn: sqlite3.Connection, record_id: int) -> None:
    conn.execute("UPDATE records SET complete = 1, size = stored WHERE id = ?", [record_id])
