"""SQL of the fleet's registrations and records: create, change state, update, delete, and the responses.

Each function runs inside its caller's transaction (`PostgresStorage._changing`), on a cursor
that returns rows as dicts; the caller reads the registration back in the same transaction
for every node's copy in memory. Transfer writes are fenced by `leases`.
"""

import json
import time

from psycopg import AsyncCursor

from store.db.postgres import leases
from store.db.storage import Conflict, MayReplace, NewRecord, NotFound, NotPaused, RequestChange, Step

ENDING = ("succeed", "fail", "abort")


async def create(cur: AsyncCursor, registration: dict, records: list[NewRecord], may_replace: MayReplace) -> None:
    """Insert a registration and its records; an inactive one of the same id goes first when
    `may_replace(owner, state, result, its owner)` says so, else Conflict (two nodes creating
    the same id at once: the second fails on the key, which the caller makes a Conflict too)."""
    reg_id, owner = registration["id"], registration["owner"]
    await cur.execute("SELECT state, result, owner FROM registrations WHERE id = %s FOR UPDATE", [reg_id])
    row = await cur.fetchone()
    if row and not may_replace(owner, row["state"], row["result"], row["owner"]):
        raise Conflict(reg_id)
    if row:
        await cur.execute("DELETE FROM registrations WHERE id = %s", [reg_id])
    now = time.time()
    await cur.execute(
        "INSERT INTO registrations (id, title, icons, download_total, upload_total, created_at, updated_at, owner)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq",
        [reg_id, registration.get("title", ""), json.dumps(registration.get("icons", [])),
         registration.get("download_total"), sum(len(r.body or b"") for r in records), now, now, owner],
    )
    seq = (await cur.fetchone())["seq"]
    await cur.executemany(
        "INSERT INTO records (registration_id, registration_seq, idx, method, url, credential, request_headers,"
        " request_body, body_hash, integrity, revalidate, segments)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [[reg_id, seq, idx, r.method, r.url, r.credential, json.dumps(list(r.headers)), r.body, r.body_hash,
          r.integrity, r.revalidate, r.segments] for idx, r in enumerate(records)],
    )


async def transition(cur: AsyncCursor, reg_id: str, event: str, step: Step, reason: str, error: str,
                     held_pause: str | None, node: str, tokens: dict[str, int], lease_seconds: float,
                     counts: leases.LeaseCounts) -> str:
    """Apply a lifecycle event under the fleet's leases; returns the new state.

    `start` claims the lease (Elsewhere while another node's runs; a registration whose
    node's lease ran out is requeued first). `abort` may come from any node. Every other
    event is the transfer's and needs this node's lease (`tokens`). Ending clears the lease,
    drops the request headers and bodies; a failure drops the partial bodies (their objects
    are doomed by a trigger) and keeps the complete ones."""
    row = await leases.locked(cur, reg_id)
    state = row["state"]
    if event == "start" and state != "done":
        tokens[reg_id] = await leases.claim(cur, reg_id, row, node, lease_seconds)
        counts.claims += 1
        counts.takeovers += leases.taken_over(row, node)
        if leases.taken_over(row, node) or state != "pending":
            state = step(state, "requeue", "")[0]  # its node died, or this one restarted
    elif event != "abort":
        leases.check(row, node, tokens.get(reg_id))
    if held_pause is not None and state != "done":
        state = await _write_state(cur, reg_id, *step(state, "hold", ""), error if event == "pause" else held_pause)
        if event == "pause":
            return state
    state, result, failure = step(state, event, reason)
    await _write_state(cur, reg_id, state, result, failure, error)
    if event in ENDING:
        await leases.release(cur, reg_id)
        tokens.pop(reg_id, None)
    if state == "done":
        await cur.execute(
            "UPDATE records SET request_headers = NULL, request_body = NULL WHERE registration_id = %s", [reg_id])
    if result == "failure":  # the partial bodies go; the complete ones stay until DELETE
        await cur.execute("DELETE FROM chunks WHERE record_id IN"
                          " (SELECT id FROM records WHERE registration_id = %s AND NOT complete)", [reg_id])
        await cur.execute("UPDATE records SET stored = 0 WHERE registration_id = %s AND NOT complete", [reg_id])
    return state


async def _write_state(cur: AsyncCursor, reg_id: str, state: str, result: str, failure: str, error: str) -> str:
    await cur.execute(
        "UPDATE registrations SET state = %s, result = %s, failure_reason = %s, last_error = %s, updated_at = %s"
        " WHERE id = %s", [state, result, failure, error, time.time(), reg_id])
    return state


async def requeue_unclaimed(cur: AsyncCursor, step: Step) -> list[str]:
    """Every active registration that no node runs takes the `requeue` event; their ids, in order.
    Those another node runs now are left to it."""
    await cur.execute(
        f"SELECT id, state FROM registrations WHERE {leases.UNCLAIMED_SQL} ORDER BY seq FOR UPDATE SKIP LOCKED")
    found = await cur.fetchall()
    for row in found:
        await cur.execute("UPDATE registrations SET state = %s, lease_node = NULL, lease_until = NULL,"
                          " lease_token = lease_token + 1 WHERE id = %s",
                          [step(row["state"], "requeue", "")[0], row["id"]])
    return [row["id"] for row in found]


async def update(cur: AsyncCursor, reg_id: str, title: str | None, icons: list | None,
                 changes: list[RequestChange]) -> None:
    """`updateUI(title, icons)`; `changes` only while paused, NotPaused otherwise."""
    await cur.execute("SELECT state FROM registrations WHERE id = %s FOR UPDATE", [reg_id])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(reg_id)
    if changes and row["state"] != "paused":
        raise NotPaused(f"background fetch {reg_id!r} is {row['state']}, not paused")
    for change in changes:
        await cur.execute(
            "UPDATE records SET request_headers = %s, credential = %s, url = COALESCE(%s, url)"
            " WHERE registration_id = %s AND idx = %s",
            [json.dumps(change.headers), change.credential, change.url, reg_id, change.index])
        if not cur.rowcount:
            raise NotFound(f"{reg_id} record {change.index}")
    await cur.execute(
        "UPDATE registrations SET title = COALESCE(%s, title), icons = COALESCE(%s, icons), updated_at = %s"
        " WHERE id = %s", [title, json.dumps(icons) if icons is not None else None, time.time(), reg_id])


async def delete(cur: AsyncCursor, reg_id: str) -> int:
    """Remove a registration, its records and chunks (their objects doomed); how many records it had."""
    await cur.execute("SELECT count(*) AS n FROM records WHERE registration_id = %s", [reg_id])
    count = (await cur.fetchone())["n"]
    await cur.execute("DELETE FROM registrations WHERE id = %s", [reg_id])
    if not cur.rowcount:
        raise NotFound(reg_id)
    return count


UPLOADED_SQL = """
UPDATE registrations SET uploaded = LEAST(upload_total, uploaded + COALESCE(
    (SELECT length(request_body) FROM records WHERE id = %(record)s AND status IS NULL), 0))
WHERE id = (SELECT registration_id FROM records WHERE id = %(record)s)
"""
QUOTA_LOCK = 0x62674653_0002  # pg_advisory_xact_lock key: one response at a time counts the fleet's room
HELD_SQL = """
SELECT COALESCE(SUM(GREATEST(r.stored, COALESCE(r.size, 0))), 0) AS held
FROM records r JOIN registrations g ON g.id = r.registration_id
WHERE g.result != 'failure' AND r.id IS DISTINCT FROM %s
"""


async def set_response(cur: AsyncCursor, record_id: int, status: int, fields: list, size: int | None,
                       reusable: bool, selecting: str, count_held: bool) -> int:
    """Store the response's status, header fields, announced size, whether later requests may be
    served it and what it varies on, and count the request's body into `uploaded` (at the
    record's first response only); returns the bytes every other record of the fleet holds or
    will hold (0 without `count_held`), counted under a lock that makes two nodes' transfers
    take turns, so that they never both count on the same room."""
    if count_held:
        await cur.execute("SELECT pg_advisory_xact_lock(%s)", [QUOTA_LOCK])
    await cur.execute(UPLOADED_SQL, {"record": record_id})
    await cur.execute("UPDATE records SET status = %s, response_headers = %s, size = %s, reusable = %s, selecting = %s"
                      " WHERE id = %s", [status, json.dumps(fields), size, reusable, selecting, record_id])
    if not count_held:
        return 0
    await cur.execute(HELD_SQL, [record_id])
    return (await cur.fetchone())["held"]


async def refresh_response(cur: AsyncCursor, record_id: int, generation: int, fields: list) -> bool:
    """New header fields for the stored response of a complete record, if still of `generation`."""
    await cur.execute("UPDATE records SET response_headers = %s WHERE id = %s AND generation = %s AND complete",
                      [json.dumps(fields), record_id, generation])
    return bool(cur.rowcount)


async def restart(cur: AsyncCursor, record_id: int) -> int:
    """Forget a record's bytes (the entity changed; the chunks' objects are doomed); its new generation."""
    await cur.execute("DELETE FROM chunks WHERE record_id = %s", [record_id])
    await cur.execute("UPDATE records SET stored = 0, complete = false, generation = generation + 1"
                      " WHERE id = %s RETURNING generation", [record_id])
    return (await cur.fetchone())["generation"]


async def complete(cur: AsyncCursor, record_id: int) -> None:
    await cur.execute("UPDATE records SET complete = true, size = stored WHERE id = %s", [record_id])


async def read_registration(cur: AsyncCursor, reg_id: str) -> tuple[dict | None, list[dict]]:
    """The registration's row and its records' rows, each with its renewal's row (`renewal`,
    None without one); (None, []) when it is gone."""
    await cur.execute("SELECT * FROM registrations WHERE id = %s", [reg_id])
    row = await cur.fetchone()
    if row is None:
        return None, []
    await cur.execute(RECORDS_SQL + " WHERE r.registration_id = %s ORDER BY r.idx", [reg_id])
    return row, await cur.fetchall()


RECORDS_SQL = ("SELECT r.*, CASE WHEN n.record_id IS NULL THEN NULL ELSE to_jsonb(n) END AS renewal"
               " FROM records r LEFT JOIN renewals n ON n.record_id = r.id")
