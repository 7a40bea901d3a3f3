"""SQL of registrations: create, change state, update, delete, and read them as the spec names them.

Write functions take the writer's connection as first argument and run inside its
transaction (`writer.Writer.submit`); read functions run on any connection.
"""

import json
import secrets
import sqlite3
import time
from datetime import UTC, datetime

from store.db.reports import Tally
from store.db.storage import Conflict, MayReplace, NewRecord, NotFound, NotPaused, Page, RequestChange, Step

ACTIVE_SQL = "state != 'done'"
# The planner would walk every row in rowid order rather than sort the few active ones.
ACTIVE_INDEX = "INDEXED BY registrations_active"


def create(conn: sqlite3.Connection, registration: dict, records: list[NewRecord], may_replace: MayReplace) -> None:
    """Insert a registration and its records; an inactive one of the same id goes first when
    `may_replace(owner, state, result, its owner)` says so (as `delete` removes it: its bodies
    wait for `purge_some`), else Conflict."""
    reg_id, owner = registration["id"], registration["owner"]
    row = conn.execute("SELECT state, result, owner FROM registrations WHERE id = ?", [reg_id]).fetchone()
    if row and not may_replace(owner, row["state"], row["result"], row["owner"]):
        raise Conflict(reg_id)
    if row:
        delete(conn, reg_id)
    now = time.time()
    conn.execute(
        "INSERT INTO registrations (id, title, icons, download_total, upload_total,"
        " created_at, updated_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [reg_id, registration.get("title", ""), json.dumps(registration.get("icons", [])),
         registration.get("download_total"), sum(len(r.body or b"") for r in records), now, now, owner],
    )
    conn.executemany(
        "INSERT INTO records (registration_id, idx, method, url, credential,"
        " request_headers, request_body, body_hash, integrity, revalidate, segments)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [[reg_id, idx, r.method, r.url, r.credential, json.dumps(list(r.headers)), r.body, r.body_hash, r.integrity,
          r.revalidate, r.segments] for idx, r in enumerate(records)],
    )


def transition(conn: sqlite3.Connection, reg_id: str, event: str, step: Step, reason: str = "",
               error: str = "", held_pause: str | None = None) -> str:
    """Apply a lifecycle event; returns the new state. Ending drops the request headers and
    bodies; a failure (an abort too) drops the partial bodies and keeps the complete ones, whose
    records stay readable through the API until DELETE. A pause the engine held in memory
    (`held_pause`, its lastError) is written first: the row is brought to `paused`."""
    row = conn.execute("SELECT state FROM registrations WHERE id = ?", [reg_id]).fetchone()
    if row is None:
        raise NotFound(reg_id)
    state = row["state"]
    if held_pause is not None and state != "done":
        state = _write_state(conn, reg_id, *step(state, "hold", ""), error if event == "pause" else held_pause)
        if event == "pause":
            return state
    state, result, failure = step(state, event, reason)
    _write_state(conn, reg_id, state, result, failure, error)
    if state == "done":
        conn.execute(
            "UPDATE records SET request_headers = NULL, request_body = NULL WHERE registration_id = ?", [reg_id]
        )
    if result == "failure":
        conn.execute(
            "DELETE FROM chunks WHERE record_id IN (SELECT id FROM records WHERE registration_id = ? AND NOT complete)",
            [reg_id],
        )
        conn.execute("UPDATE records SET stored = 0 WHERE registration_id = ? AND NOT complete", [reg_id])
    return state


def _write_state(conn: sqlite3.Connection, reg_id: str, state: str, result: str, failure: str, error: str) -> str:
    conn.execute(
        "UPDATE registrations SET state = ?, result = ?, failure_reason = ?, last_error = ?, updated_at = ?"
        " WHERE id = ?",
        [state, result, failure, error, time.time(), reg_id],
    )
    return state


def requeue_active(conn: sqlite3.Connection, step: Step) -> list[str]:
    """Every active registration takes the `requeue` event (start-up); their ids, in order."""
    found = ids(conn, active_only=True)
    for reg_id in found:
        state = conn.execute("SELECT state FROM registrations WHERE id = ?", [reg_id]).fetchone()["state"]
        next_state, _, _ = step(state, "requeue", "")
        conn.execute("UPDATE registrations SET state = ? WHERE id = ?", [next_state, reg_id])
    return found


def update(conn: sqlite3.Connection, reg_id: str, title: str | None, icons: list | None,
           changes: list[RequestChange]) -> None:
    """`updateUI(title, icons)`; `changes` (new request headers, credential key and URL per
    record) only while paused, NotPaused otherwise."""
    row = conn.execute("SELECT state FROM registrations WHERE id = ?", [reg_id]).fetchone()
    if row is None:
        raise NotFound(reg_id)
    if changes and row["state"] != "paused":
        raise NotPaused(f"background fetch {reg_id!r} is {row['state']}, not paused")
    for change in changes:
        updated = conn.execute(
            "UPDATE records SET request_headers = ?, credential = ?, url = COALESCE(?, url)"
            " WHERE registration_id = ? AND idx = ?",
            [json.dumps(change.headers), change.credential, change.url, reg_id, change.index],
        ).rowcount
        if not updated:
            raise NotFound(f"{reg_id} record {change.index}")
    if title is not None:
        conn.execute("UPDATE registrations SET title = ? WHERE id = ?", [title, reg_id])
    if icons is not None:
        conn.execute("UPDATE registrations SET icons = ? WHERE id = ?", [json.dumps(icons), reg_id])
    conn.execute("UPDATE registrations SET updated_at = ? WHERE id = ?", [time.time(), reg_id])


def delete(conn: sqlite3.Connection, reg_id: str) -> int:
    """Remove a registration at once, for every reader; how many records it had. Its records
    (and their chunks) move to a stand-in registration marked `deleting` that no reader sees
    (done, failure: never served; its id, which no API id can be, never listed), whose chunks
    `purge_some` removes a piece at a time. The id is free again as soon as this commits."""
    count = conn.execute("SELECT count(*) FROM records WHERE registration_id = ?", [reg_id]).fetchone()[0]
    if not conn.execute("SELECT 1 FROM registrations WHERE id = ? AND NOT deleting", [reg_id]).fetchone():
        raise NotFound(reg_id)
    if count:
        # a new generation under way is given up with them (its chunks go with the records')
        conn.execute("DELETE FROM renewals WHERE record_id IN (SELECT id FROM records WHERE registration_id = ?)",
                     [reg_id])
        stand_in, now = f"\0deleted-{secrets.token_hex(8)}", time.time()
        conn.execute("INSERT INTO registrations (id, state, result, created_at, updated_at, deleting)"
                     " VALUES (?, 'done', 'failure', ?, ?, 1)", [stand_in, now, now])
        conn.execute("UPDATE records SET registration_id = ? WHERE registration_id = ?", [stand_in, reg_id])
    conn.execute("DELETE FROM registrations WHERE id = ?", [reg_id])
    return count


def purge_some(conn: sqlite3.Connection, most: int) -> bool:
    """Remove up to `most` chunks of deleted registrations, or a stand-in whose chunks are all
    gone (with its records); whether any work is left."""
    stand_in = conn.execute("SELECT id FROM registrations WHERE deleting LIMIT 1").fetchone()
    if stand_in is None:
        return False
    removed = conn.execute(
        "DELETE FROM chunks WHERE id IN (SELECT id FROM chunks WHERE record_id IN"
        " (SELECT id FROM records WHERE registration_id = ?) LIMIT ?)", [stand_in[0], most],
    ).rowcount
    if not removed:
        conn.execute("DELETE FROM registrations WHERE id = ?", [stand_in[0]])
    return True


REGISTRATION_SQL = """
SELECT g.*, COUNT(r.id) AS record_count, COALESCE(SUM(r.stored), 0) AS downloaded
FROM registrations g LEFT JOIN records r ON r.registration_id = g.id
WHERE g.id = ? AND NOT g.deleting GROUP BY g.id
"""


def registration(conn: sqlite3.Connection, reg_id: str) -> dict:
    """The registration as the API shows it, with the spec's names."""
    row = conn.execute(REGISTRATION_SQL, [reg_id]).fetchone()
    if row is None:
        raise NotFound(reg_id)
    return view(row, row["record_count"], row["downloaded"])


def view(row, record_count: int, downloaded: int) -> dict:
    """A registration's row (any mapping of its columns) as the API shows it, with the spec's names."""
    return {
        "id": row["id"],
        "title": row["title"],
        "icons": json.loads(row["icons"]),
        "downloadTotal": row["download_total"] or 0,
        "downloaded": downloaded,
        "uploadTotal": row["upload_total"],
        "uploaded": row["uploaded"],
        "result": row["result"],
        "failureReason": row["failure_reason"],
        "recordsAvailable": True,  # records stay, whatever the result, until DELETE (README: Conformance)
        "state": row["state"],
        "records": record_count,
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "lastError": row["last_error"],
    }


def ids(conn: sqlite3.Connection, active_only: bool = True) -> list[str]:
    where = f"{ACTIVE_INDEX} WHERE {ACTIVE_SQL}" if active_only else "WHERE NOT deleting"
    return [r[0] for r in conn.execute(f"SELECT id FROM registrations {where} ORDER BY rowid")]


def page(conn: sqlite3.Connection, active_only: bool, limit: int, after: int | None, newest_first: bool) -> Page:
    """Up to `limit` ids by rowid (the order they were made; newest first when told) after the
    rowid `after`. The active ones come from their own index (`registrations_active`), so a page
    of them costs the same beside 100,000 finished ones."""
    where = [ACTIVE_SQL if active_only else "NOT deleting"]  # deleted ones are done: never active
    if after is not None:
        where.append("rowid < ?" if newest_first else "rowid > ?")
    sql = (f"SELECT rowid, id FROM registrations {ACTIVE_INDEX if active_only else ''}"
           f" WHERE {' AND '.join(where)}"
           f" ORDER BY rowid {'DESC' if newest_first else ''} LIMIT ?")
    rows = conn.execute(sql, [*([after] if after is not None else []), limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([row[1] for row in rows], rows[-1][0] if more else None)


def tally(conn: sqlite3.Connection) -> Tally:
    """How many registrations are in each (state, result, failure reason)."""
    rows = conn.execute(
        "SELECT state, result, failure_reason, count(*) FROM registrations GROUP BY state, result, failure_reason"
    )
    return {(state, result, reason): count for state, result, reason, count in rows}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
