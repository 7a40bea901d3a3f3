"""What a fleet node reports of its storage: the fleet's tally, its leases and bytes, and whether PostgreSQL and the bucket answer.

The tally and the bytes are the whole fleet's (one database); the lease counts are this node's
since it started (each node exposes its own `/metrics`, and Prometheus sums them).
"""

import asyncio

from store.db.faults import StorageUnreachable
from store.db.locations import Unopenable
from store.db.reports import Figure, Readiness, Tally

PROBE_SECONDS = 2.0  # a part that takes longer to answer is not ready


async def tally(storage) -> Tally | None:
    """The fleet's registrations by (state, result, failure reason); None while PostgreSQL does
    not answer (/metrics still answers, without them)."""
    try:
        rows = await _ask(storage, "SELECT state, result, failure_reason, count(*) AS n FROM registrations"
                                   " GROUP BY state, result, failure_reason")
    except StorageUnreachable:
        return None
    return {(row["state"], row["result"], row["failure_reason"]): row["n"] for row in rows}


async def figures(storage) -> list[Figure]:
    counts = storage.lease_counts
    found = [
        Figure("lease_claims_total", "Leases of transfers this node claimed.", counts.claims, counter=True),
        Figure("lease_takeovers_total", "Claims that took a transfer over from a node whose lease ran out.",
               counts.takeovers, counter=True),
        Figure("leases_held", "Transfers this node holds the lease of now.", len(storage.tokens)),
    ]
    try:
        row, = await _ask(storage, "SELECT (SELECT COALESCE(sum(size), 0) FROM chunks) AS body,"
                                   " (SELECT count(*) FROM doomed_objects) AS doomed")
    except StorageUnreachable:
        return found
    return found + [
        Figure("fleet_bodies_bytes", "Bytes of committed body chunks in the fleet's object storage.", row["body"]),
        Figure("doomed_objects", "Objects waiting to be deleted from the bucket.", row["doomed"]),
    ]


async def _ask(storage, sql: str) -> list[dict]:
    async with storage.connection() as conn, conn.cursor() as cur:
        await cur.execute(sql)
        rows = await cur.fetchall()
        await conn.commit()
    return rows


async def readiness(storage) -> list[Readiness]:
    async def database() -> None:
        async with storage.connection() as conn:
            await conn.execute("SELECT 1")
            await conn.commit()

    return [await _probe("postgresql", database()), await _probe("object storage", storage.objects.check())]


async def _probe(part: str, answer) -> Readiness:
    try:
        await asyncio.wait_for(answer, PROBE_SECONDS)
    except TimeoutError:
        return Readiness(part, False, f"does not answer within {PROBE_SECONDS:g} s")
    except (StorageUnreachable, Unopenable) as exc:  # they name the database or the bucket
        return Readiness(part, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever it is, the part does not answer
        return Readiness(part, False, " ".join(f"{type(exc).__name__}: {exc}".split()))
    return Readiness(part, True)
