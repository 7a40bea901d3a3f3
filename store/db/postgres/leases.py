"""Leases on transfers: one node of the fleet runs a registration's transfer, and every write of it is fenced.

A node claims a registration when its transfer starts (`claim`): it becomes `lease_node` until
`lease_until`, and `lease_token` — the fencing token — grows by one. The node renews its leases
while it holds them (`renew`); one it does not renew in time may be claimed by another node,
which resumes the transfer from the committed bytes. Every write of a transfer (a chunk, a
response, a state change) checks, in its own transaction, that the registration's token is
still the one its writer claimed (`fence`), holding the row's lock until it commits: a node
that was paused, partitioned or presumed dead writes nothing once another has claimed. Ending
a registration (success, failure, abort from any node) clears the lease and moves the token on.

Times are the database's (`now()`), so the nodes' clocks do not matter.
"""

from dataclasses import dataclass

from psycopg import AsyncConnection, AsyncCursor  # their rows are dicts (psycopg.rows.dict_row)

from store.db.storage import Elsewhere, NotFound

@dataclass
class LeaseCounts:
    """This node's lease claims since it started, and how many of them took a transfer over from
    another node whose lease had run out."""

    claims: int = 0
    takeovers: int = 0


UNCLAIMED_SQL = "state != 'done' AND (lease_node IS NULL OR lease_until < now())"


LOCK_SQL = ("SELECT state, lease_node, lease_token, COALESCE(lease_until < now(), true) AS expired,"
            " lease_until - now() AS left FROM registrations WHERE id = %s FOR UPDATE")


async def locked(cur: AsyncCursor, reg_id: str) -> dict:
    """The registration's state and lease, its row locked until the transaction ends; NotFound."""
    await cur.execute(LOCK_SQL, [reg_id])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(reg_id)
    return row


async def claim(cur: AsyncCursor, reg_id: str, row: dict, node: str, seconds: float) -> int:
    """Claim the lease of the registration whose `locked` row this is; the new token.
    Elsewhere when another node's lease has not run out."""
    if row["lease_node"] not in (None, node) and not row["expired"]:
        raise Elsewhere(f"{reg_id} is transferred by node {row['lease_node']} (its lease runs {row['left']} more)")
    await cur.execute(
        "UPDATE registrations SET lease_node = %s, lease_token = lease_token + 1,"
        " lease_until = now() + make_interval(secs => %s) WHERE id = %s RETURNING lease_token",
        [node, seconds, reg_id],
    )
    return (await cur.fetchone())["lease_token"]


def taken_over(row: dict, node: str) -> bool:
    """Whether the `locked` row's lease was another node's (run out, or it would not be claimed)."""
    return row["lease_node"] not in (None, node)


def check(row: dict, node: str, token: int | None) -> None:
    """Elsewhere unless this node's `token` is the lease of the registration's `locked` row."""
    if token is None or row["lease_node"] != node or row["lease_token"] != token:
        holder = row["lease_node"] or "no node"
        raise Elsewhere(f"this node's lease is gone (held by {holder} now, token {row['lease_token']})")


async def fence(cur: AsyncCursor, node: str, tokens: dict[str, int], record_id: int,
                generation: int | None = None) -> dict:
    """Lock the registration of the record against claims until the transaction ends, and check
    that this node's token of it (`tokens`: registration id -> token) is still its lease; its
    `id` and `state`. Elsewhere when it is not (another node claimed it, or it ended); NotFound
    when it is gone. Chunks of a `generation` past the record's, of an ended registration, pass:
    they are a renewal's, which is no transfer and runs under no lease."""
    await cur.execute(
        "SELECT g.id, g.state, g.lease_node, g.lease_token, r.generation FROM records r JOIN registrations g"
        " ON g.id = r.registration_id WHERE r.id = %s FOR SHARE OF g", [record_id])
    row = await cur.fetchone()
    if row is None:
        raise NotFound(record_id)
    if not (generation is not None and generation > row["generation"] and row["state"] == "done"):
        check(row, node, tokens.get(row["id"]))
    return row


async def release(cur: AsyncCursor, reg_id: str) -> None:
    """Clear the lease and move the token on: whoever held it writes nothing more."""
    await cur.execute(
        "UPDATE registrations SET lease_node = NULL, lease_until = NULL, lease_token = lease_token + 1"
        " WHERE id = %s", [reg_id])


async def renew(conn: AsyncConnection, node: str, held: dict[str, int], seconds: float) -> set[str]:
    """Extend the leases this node holds (registration id -> token); the ids of those it no
    longer holds."""
    if not held:
        return set()
    async with conn.cursor() as cur:
        await cur.execute(
            "UPDATE registrations g SET lease_until = now() + make_interval(secs => %s)"
            " FROM unnest(%s::text[], %s::bigint[]) AS mine(id, token)"
            " WHERE g.id = mine.id AND g.lease_token = mine.token AND g.lease_node = %s RETURNING g.id",
            [seconds, list(held), list(held.values()), node],
        )
        renewed = {row["id"] for row in await cur.fetchall()}
    await conn.commit()
    return set(held) - renewed


async def release_all(conn: AsyncConnection, node: str, held: dict[str, int]) -> None:
    """At shutdown: let go of every lease at once, so another node (or this one, started again)
    takes the transfers over without waiting for them to run out. The token stays: no one
    else writes with it, and this node writes nothing more."""
    if held:
        await conn.execute(
            "UPDATE registrations SET lease_until = NULL, lease_node = NULL"
            " WHERE lease_node = %s AND id = ANY(%s)", [node, list(held)])
        await conn.commit()


async def unclaimed(conn: AsyncConnection, limit: int = 100) -> list[str]:
    """Active registrations that no node runs (never claimed, released, or whose lease ran out)."""
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT id FROM registrations WHERE {UNCLAIMED_SQL} ORDER BY seq LIMIT %s", [limit])
        found = [row["id"] for row in await cur.fetchall()]
    await conn.commit()
    return found
