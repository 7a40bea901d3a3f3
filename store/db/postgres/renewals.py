"""SQL of a fleet's renewals: a record's next generation, stored beside the one it serves until it is complete.

As SQLite's (store/db/renewals.py): a renewal's chunks carry its generation; once whole it takes
the record's place in one transaction, and the generation it replaced is left for its last
reader, then deleted (`drop_generation`; the objects are doomed by the chunks' trigger). In a
fleet other nodes may be renewing while one starts, so a start forgets only the renewals no
node has written to for STALE_SECONDS.
"""

import json

from psycopg import AsyncCursor

from store.db.storage import NotFound

STALE_SECONDS = 600


async def begin(cur: AsyncCursor, record_id: int, status: int, fields: list, size: int | None, selecting: str) -> int:
    """Start storing a new entity for a complete record; its generation (one past any the
    record has had). A renewal that was under way is dropped with its chunks."""
    await cur.execute("SELECT r.generation, n.generation AS renewing FROM records r LEFT JOIN renewals n"
                      " ON n.record_id = r.id WHERE r.id = %s FOR UPDATE OF r", [record_id])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(record_id)
    if row["renewing"] is not None:
        await drop(cur, record_id, row["renewing"])
    generation = max(row["generation"], row["renewing"] or 0) + 1
    await cur.execute("INSERT INTO renewals (record_id, generation, status, response_headers, size, selecting)"
                      " VALUES (%s, %s, %s, %s, %s, %s)",
                      [record_id, generation, status, json.dumps(fields), size, selecting])
    return generation


async def complete(cur: AsyncCursor, record_id: int, generation: int) -> int | None:
    """The renewal, whole, takes the record's place; the generation it replaced (its chunks stay
    until `drop_generation`), or None when that renewal is gone."""
    await cur.execute("DELETE FROM renewals WHERE record_id = %s AND generation = %s RETURNING *", [record_id, generation])
    row = await cur.fetchone()
    if row is None:
        return None
    await cur.execute(
        "UPDATE records r SET generation = %s, status = %s, response_headers = %s, size = %s, stored = %s,"
        " complete = true, received = received + %s, reusable = true, selecting = %s"
        " FROM (SELECT generation AS retired FROM records WHERE id = %s) old WHERE r.id = %s RETURNING old.retired",
        [generation, row["status"], row["response_headers"], row["stored"], row["stored"], row["stored"],
         row["selecting"], record_id, record_id])
    return (await cur.fetchone())["retired"]


async def drop(cur: AsyncCursor, record_id: int, generation: int) -> None:
    """Give a renewal up, with its chunks."""
    await cur.execute("DELETE FROM renewals WHERE record_id = %s AND generation = %s", [record_id, generation])
    if cur.rowcount:
        await drop_generation(cur, record_id, generation)


async def drop_generation(cur: AsyncCursor, record_id: int, generation: int) -> None:
    """Delete the chunks of a generation the record no longer serves (nor is renewing to)."""
    await cur.execute(
        "DELETE FROM chunks c WHERE c.record_id = %(record)s AND c.generation = %(generation)s"
        " AND c.generation != (SELECT generation FROM records WHERE id = %(record)s)"
        " AND c.generation IS DISTINCT FROM (SELECT generation FROM renewals WHERE record_id = %(record)s)",
        {"record": record_id, "generation": generation})


async def forget_stale(cur: AsyncCursor) -> list[int]:
    """At a node's start: drop the renewals no node has written to for STALE_SECONDS, with their
    chunks; the ids of their records."""
    await cur.execute("DELETE FROM renewals WHERE updated_at < now() - make_interval(secs => %s)"
                      " RETURNING record_id, generation", [STALE_SECONDS])
    gone = await cur.fetchall()
    for row in gone:
        await drop_generation(cur, row["record_id"], row["generation"])
    return [row["record_id"] for row in gone]
