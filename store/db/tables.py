"""Reads and writes of registrations, records and chunks: plain functions over a connection.

Write functions take the writer's connection as first argument and run inside its
transaction (see `writer.Writer.submit`); read functions run on any connection.
"""

import json
import sqlite3
import time
from datetime import UTC, datetime

from store.engine import headers, lifecycle, ownership


class Conflict(Exception):
    """A registration with that id is still active, or is not the creator's to replace."""


class NotFound(Exception):
    """No registration or record with that id."""


class NotPaused(Exception):
    """Only a paused registration takes new request headers or URLs."""


def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- writes -----------------------------------------------------------------


def create(conn: sqlite3.Connection, registration: dict, records: list[dict]) -> None:
    """Insert a registration and its records. Its `owner` (default: the API) may replace an
    inactive one of the same id as `ownership.may_replace` says; Conflict otherwise."""
    owner = registration.get("owner", ownership.API)
    row = conn.execute(
        "SELECT state, result, owner FROM registrations WHERE id = ?", [registration["id"]]
    ).fetchone()
    if row and row["state"] in lifecycle.ACTIVE:
        raise Conflict(registration["id"])
    if row and not ownership.may_replace(owner, row["owner"], row["result"]):
        raise Conflict(registration["id"])
    if row:
        conn.execute("DELETE FROM registrations WHERE id = ?", [registration["id"]])
    now = _now()
    conn.execute(
        "INSERT INTO registrations (id, title, icons, download_total, upload_total,"
        " created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            registration["id"],
            registration.get("title", ""),
            json.dumps(registration.get("icons", [])),
            registration.get("download_total"),
            sum(len(r.get("body") or b"") for r in records),
            now,
            now,
            owner,
        ],
    )
    for idx, record in enumerate(records):
        conn.execute(
            "INSERT INTO records (registration_id, idx, method, url, credential,"
            " request_headers, request_body, body_hash, integrity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                registration["id"],
                idx,
                record.get("method", "GET"),
                record["url"],
                record.get("credential", ""),
                json.dumps(record.get("headers", [])),
                record.get("body"),
                ownership.body_hash(record.get("body")),
                record.get("integrity"),
            ],
        )


def transition(
    conn: sqlite3.Connection, reg_id: str, event: str, reason: str = "", error: str = ""
) -> str:
    """Apply a lifecycle event; returns the new state. Finishing drops credentials and,
    on failure, the partial bodies."""
    row = conn.execute("SELECT state FROM registrations WHERE id = ?", [reg_id]).fetchone()
    if row is None:
        raise NotFound(reg_id)
    state = lifecycle.next_state(row["state"], event)
    result, failure = lifecycle.outcome(event, reason)
    conn.execute(
        "UPDATE registrations SET state = ?, result = ?, failure_reason = ?, last_error = ?,"
        " updated_at = ? WHERE id = ?",
        [state, result, failure, error, _now(), reg_id],
    )
    if state == "done":
        conn.execute(
            "UPDATE records SET request_headers = NULL, request_body = NULL"
            " WHERE registration_id = ?",
            [reg_id],
        )
    if result == "failure":
        conn.execute(
            "DELETE FROM chunks WHERE record_id IN"
            " (SELECT id FROM records WHERE registration_id = ?)",
            [reg_id],
        )
        conn.execute(
            "UPDATE records SET stored = 0, complete = 0 WHERE registration_id = ?", [reg_id]
        )
    return state


def set_last_error(conn: sqlite3.Connection, reg_id: str, error: str) -> None:
    conn.execute(
        "UPDATE registrations SET last_error = ?, updated_at = ? WHERE id = ?",
        [error, _now(), reg_id],
    )


def set_response(
    conn: sqlite3.Connection, record_id: int, status: int, headers: list, size: int | None
) -> int:
    """Store the response's status, headers and announced size; returns `held_bytes` as of
    this transaction (the writer runs one at a time, so two transfers never share the room)."""
    conn.execute(
        "UPDATE records SET status = ?, response_headers = ?, size = ? WHERE id = ?",
        [status, json.dumps(headers), size, record_id],
    )
    return held_bytes(conn, record_id)


def append_chunk(
    conn: sqlite3.Connection, record_id: int, generation: int, offset: int, pieces: list[bytes]
) -> bool:
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
        with conn.blobopen("chunks", "data", rowid) as blob:
            for piece in pieces:
                blob.write(piece)
    return bool(updated)


def restart_record(conn: sqlite3.Connection, record_id: int) -> int:
    """Forget a record's bytes: the entity changed. Returns the new generation."""
    conn.execute("DELETE FROM chunks WHERE record_id = ?", [record_id])
    conn.execute(
        "UPDATE records SET stored = 0, complete = 0, generation = generation + 1 WHERE id = ?",
        [record_id],
    )
    return conn.execute("SELECT generation FROM records WHERE id = ?", [record_id]).fetchone()[0]


def complete_record(conn: sqlite3.Connection, record_id: int) -> None:
    conn.execute("UPDATE records SET complete = 1, size = stored WHERE id = ?", [record_id])


def update_ui(conn: sqlite3.Connection, reg_id: str, title: str | None, icons: list | None) -> None:
    if conn.execute("SELECT 1 FROM registrations WHERE id = ?", [reg_id]).fetchone() is None:
        raise NotFound(reg_id)
    if title is not None:
        conn.execute("UPDATE registrations SET title = ? WHERE id = ?", [title, reg_id])
    if icons is not None:
        conn.execute("UPDATE registrations SET icons = ? WHERE id = ?", [json.dumps(icons), reg_id])
    conn.execute("UPDATE registrations SET updated_at = ? WHERE id = ?", [_now(), reg_id])


def change_requests(conn: sqlite3.Connection, reg_id: str, changes: list[dict]) -> None:
    """Give records of a paused registration new request headers (merged: a None value
    removes the field) or a new URL, for example when its credentials expired."""
    row = conn.execute("SELECT state FROM registrations WHERE id = ?", [reg_id]).fetchone()
    if row is None:
        raise NotFound(reg_id)
    if row["state"] != "paused":
        raise NotPaused(f"background fetch {reg_id!r} is {row['state']}, not paused")
    for change in changes:
        record = conn.execute(
            "SELECT id, url, request_headers FROM records WHERE registration_id = ? AND idx = ?",
            [reg_id, change["index"]],
        ).fetchone()
        if record is None:
            raise NotFound(f"{reg_id} record {change['index']}")
        fields = headers.merged(headers.parse(record["request_headers"]), change["headers"])
        conn.execute(
            "UPDATE records SET request_headers = ?, credential = ?, url = ? WHERE id = ?",
            [json.dumps(fields), headers.credential_key(fields), change.get("url", record["url"]), record["id"]],
        )


def delete(conn: sqlite3.Connection, reg_id: str) -> None:
    if not conn.execute("DELETE FROM registrations WHERE id = ?", [reg_id]).rowcount:
        raise NotFound(reg_id)


def reclaim_space(conn: sqlite3.Connection, pages: int) -> int:
    """Give up to `pages` free pages back to the file system; returns how many it gave
    (none in a database made without auto-vacuum)."""
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    conn.execute(f"PRAGMA incremental_vacuum({int(pages)})").fetchall()
    return free - conn.execute("PRAGMA freelist_count").fetchone()[0]


# -- reads ------------------------------------------------------------------

REGISTRATION_SQL = """
SELECT g.*, COUNT(r.id) AS record_count, COALESCE(SUM(r.stored), 0) AS downloaded
FROM registrations g LEFT JOIN records r ON r.registration_id = g.id
WHERE g.id = ? GROUP BY g.id
"""


def registration(conn: sqlite3.Connection, reg_id: str) -> dict:
    """The registration as the API shows it, with the spec's names."""
    row = conn.execute(REGISTRATION_SQL, [reg_id]).fetchone()
    if row is None:
        raise NotFound(reg_id)
    return {
        "id": row["id"],
        "title": row["title"],
        "icons": json.loads(row["icons"]),
        "downloadTotal": row["download_total"] or 0,
        "downloaded": row["downloaded"],
        "uploadTotal": row["upload_total"],
        "uploaded": row["uploaded"],
        "result": row["result"],
        "failureReason": row["failure_reason"],
        "recordsAvailable": row["result"] != "failure",
        "state": row["state"],
        "records": row["record_count"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "lastError": row["last_error"],
    }


def ids(conn: sqlite3.Connection, active_only: bool = True) -> list[str]:
    where = "WHERE state != 'done'" if active_only else ""
    return [r[0] for r in conn.execute(f"SELECT id FROM registrations {where} ORDER BY rowid")]


def records(conn: sqlite3.Connection, reg_id: str) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT * FROM records WHERE registration_id = ? ORDER BY idx", [reg_id]
    ).fetchall()


def record(conn: sqlite3.Connection, record_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM records WHERE id = ?", [record_id]).fetchone()
    if row is None:
        raise NotFound(record_id)
    return row


HELD_SQL = """
SELECT COALESCE(SUM(MAX(r.stored, COALESCE(r.size, 0))), 0)
FROM records r JOIN registrations g ON g.id = r.registration_id
WHERE g.result != 'failure' AND r.id != ?
"""


def held_bytes(conn: sqlite3.Connection, record_id: int) -> int:
    """Bytes every record but `record_id` holds, or will hold once its announced size has come."""
    return conn.execute(HELD_SQL, [record_id]).fetchone()[0]


def chunks_from(conn: sqlite3.Connection, record_id: int, offset: int) -> list[sqlite3.Row]:
    """The committed chunks that hold bytes at or after `offset`, in order."""
    return conn.execute(
        "SELECT id, offset, size FROM chunks WHERE record_id = ? AND offset + size > ?"
        " AND offset >= (SELECT COALESCE(MAX(offset), 0) FROM chunks"
        "                WHERE record_id = ? AND offset <= ?)"
        " ORDER BY offset LIMIT 64",
        [record_id, offset, record_id, offset],
    ).fetchall()
