"""SQL of the fleet's body chunks: each one an object of the bucket, committed under the writer's lease.

A chunk is written in three steps, so that no object is ever left behind and none is
deleted while a chunk names it:
1. `intend`: its object's name goes into `doomed_objects`, due only after INTENT_GRACE;
2. the object is written to the bucket (objects.ObjectStore.put);
3. `commit`, in one transaction fenced by the lease: the record's byte count moves on (only
   from the offset the chunk starts at, and in the generation it belongs to), the chunk row
   names the object, and the object leaves `doomed_objects` (if the collector took it
   meanwhile, the commit fails instead). A chunk here is what one object holds: the appends
   that waited together (`appends`).
A writer that dies or loses its lease between 1 and 3 leaves its object doomed; `collect`
deletes doomed objects once due (a deleted chunk's object is due at once: a trigger).
"""

from psycopg import AsyncConnection, AsyncCursor

from store.db.faults import StorageUnreachable

INTENT_GRACE_SECONDS = 900  # an object may take this long from its name's intent to its chunk's commit
CHUNKS_AT_ONCE = 64  # chunk rows a read asks for at a time


async def intend(conn: AsyncConnection, name: str) -> None:
    await conn.execute(
        "INSERT INTO doomed_objects (object, since) VALUES (%s, now() + make_interval(secs => %s))",
        [name, INTENT_GRACE_SECONDS])
    await conn.commit()


async def commit(cur: AsyncCursor, record_id: int, generation: int, offset: int, size: int, name: str,
                 renewal_only: bool = False) -> dict | None:
    """Commit the chunk (the caller has fenced the lease) to the record's body or, by its
    generation, to the record's renewal (only there with `renewal_only`); the new counts
    (with the record's version, or `renewal` true), None when neither is of that generation
    and length any more."""
    counts = None
    if not renewal_only:
        await cur.execute(
            "UPDATE records SET stored = %s, received = received + %s WHERE id = %s AND generation = %s"
            " AND stored = %s RETURNING version, stored, received",
            [offset + size, size, record_id, generation, offset])
        counts = await cur.fetchone()
    if counts is None:
        await cur.execute("UPDATE renewals SET stored = %s, updated_at = now() WHERE record_id = %s AND generation = %s"
                          " AND stored = %s RETURNING stored, true AS renewal", [offset + size, record_id, generation, offset])
        counts = await cur.fetchone()
        if counts is None:
            return None
    await cur.execute('INSERT INTO chunks (record_id, generation, "offset", size, object) VALUES (%s, %s, %s, %s, %s)',
                      [record_id, generation, offset, size, name])
    await cur.execute("DELETE FROM doomed_objects WHERE object = %s", [name])
    if not cur.rowcount:  # collected before its chunk was committed: the bytes are not there
        raise StorageUnreachable(f"object {name} was collected before its chunk was committed")
    return counts


async def chunks_from(conn: AsyncConnection, record_id: int, generation: int, start: int, end: int) -> list[dict]:
    """`offset`, `size` and `object` of the committed chunks of a generation of the record's body
    that hold bytes from `start` up to `end`, in order."""
    async with conn.cursor() as cur:
        await cur.execute(
            'SELECT "offset", size, object FROM chunks WHERE record_id = %s AND generation = %s'
            ' AND "offset" + size > %s AND "offset" < %s ORDER BY "offset" LIMIT %s',
            [record_id, generation, start, end, CHUNKS_AT_ONCE])
        rows = await cur.fetchall()
    await conn.commit()
    return rows


async def names(conn: AsyncConnection, record_id: int, name: str) -> bool:
    """Whether a chunk of the record still names the object `name`."""
    async with conn.cursor() as cur:
        await cur.execute("SELECT 1 FROM chunks WHERE record_id = %s AND object = %s", [record_id, name])
        found = await cur.fetchone() is not None
    await conn.commit()
    return found


async def due(cur: AsyncCursor, limit: int) -> list[str]:
    """Doomed objects that are due, locked for this collector (others skip them)."""
    await cur.execute(
        "SELECT object FROM doomed_objects WHERE since <= now() ORDER BY since LIMIT %s FOR UPDATE SKIP LOCKED",
        [limit])
    return [row["object"] for row in await cur.fetchall()]


async def collected(cur: AsyncCursor, gone: list[str]) -> None:
    await cur.execute("DELETE FROM doomed_objects WHERE object = ANY(%s)", [gone])
