"""The storage contract on PostgreSQL and S3 (store/db/postgres/, store/db/objects.py), two nodes in one process:
what one commits the other reads, leases fence every write, a lost object is an error and never wrong bytes,
and no object is left behind (real PostgreSQL and SeaweedFS)."""

import asyncio
import hashlib

import psycopg
import pytest

from harness.poll import eventually_async
from store.db import BodyLost, Elsewhere, NewRecord, NotFound
from store.db.postgres import bodies
from store.db.postgres.storage import PostgresStorage
from store.engine import lifecycle

MiB = 1 << 20
LEASE = 2.0


class Heard:
    """A node's engine, as the storage tells it what other nodes do."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.unclaimed_ids: list[str] = []
        self.lost_ids: list[str] = []

    def changed_elsewhere(self, reg_id: str, event: str) -> None:
        self.events.append((reg_id, event))

    def unclaimed(self, reg_id: str) -> None:
        self.unclaimed_ids.append(reg_id)

    def lost(self, reg_id: str) -> None:
        self.lost_ids.append(reg_id)

    def reloaded(self) -> None:
        pass


def fleet(fleet_db, fleet_bodies, s3_server, nodes: int = 2):
    """Run `scenario(*storages)` with `nodes` storages on one database and bucket prefix."""

    def run(scenario):
        async def main():
            opened = []
            try:
                for _ in range(nodes):
                    storage = await PostgresStorage.open(fleet_db, None, fleet_bodies, s3_server.access_key,
                                                         s3_server.secret_key, lease_seconds=LEASE)
                    storage.heard = Heard()
                    storage.watch(storage.heard)
                    opened.append(storage)
                await scenario(*opened)
            finally:
                await asyncio.gather(*(storage.close() for storage in opened))

        asyncio.run(main())

    return run


def allow(*_):
    return True


async def started(storage, reg_id: str, url: str = "http://origin.example/a.bin", size: int | None = None):
    await storage.create({"id": reg_id, "owner": "api"}, [NewRecord(url=url)], allow)
    await storage.transition(reg_id, "start", lifecycle.step)
    record = storage.records(reg_id)[0]
    await storage.set_response(record.id, 200, [("ETag", '"v1"')], size)
    return record


async def body(storage, record_id: int, start: int = 0, end: int = 2**62, generation: int | None = None) -> bytes:
    return b"".join([piece async for piece in storage.read(record_id, start, end, generation)])


def data_of(size: int, seed: bytes = b"x") -> bytes:
    block = hashlib.sha256(seed).digest()
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def two_nodes(fleet_db, fleet_bodies, s3_server):
    return fleet(fleet_db, fleet_bodies, s3_server)


def test_what_one_node_commits_the_other_reads_at_once_with_ranges(two_nodes):
    data = data_of(3 * MiB + 123)

    async def scenario(a, b):
        record = await started(a, "ep")
        chunks = [data[:MiB], data[MiB:2 * MiB], data[2 * MiB:]]
        offset = 0
        for chunk in chunks:
            assert await a.append(record.id, record.generation, offset, [chunk[:1000], chunk[1000:]], len(chunk))
            offset += len(chunk)
            await eventually_async(lambda: b.record(record.id).stored == offset, 5, what="node B to hear the bytes")
            assert await body(b, record.id) == data[:offset]  # read while written, by the other node
        await a.complete_record(record.id)
        await a.transition("ep", "succeed", lifecycle.step)
        await eventually_async(lambda: b.registration("ep")["result"] == "success", 5, what="node B to hear success")
        assert b.record(record.id).complete and b.record(record.id).size == len(data)
        assert await body(b, record.id, MiB - 10, 2 * MiB + 10) == data[MiB - 10:2 * MiB + 10]
        assert await b.digest(record.id, len(data)) == hashlib.sha256(data).digest()
        assert ("ep", "succeed") in b.heard.events and ("ep", "bytes") in b.heard.events
        assert b.servable("http://origin.example/a.bin", "") == record.id
        assert "http://origin.example/a.bin" in list(b.urls())

    two_nodes(scenario)


def test_a_read_asks_for_the_next_object_ahead_and_a_reader_that_stops_leaves_none_open(two_nodes, monkeypatch):
    from store.db import objects

    data = data_of(3 * MiB, b"ahead")
    asked, closed = [], []
    open_object, close_object = objects.ObjectStore.open, objects.Opened.close

    async def counting_open(self, name, start, end):
        asked.append(name)
        return await open_object(self, name, start, end)

    def counting_close(self):
        closed.append(self.key)
        close_object(self)

    async def scenario(a, b):
        record = await started(a, "ahead")
        for n in range(3):  # one object each: appended one after the other's commit
            assert await a.append(record.id, record.generation, n * MiB, [data[n * MiB:(n + 1) * MiB]], MiB)
        monkeypatch.setattr(objects.ObjectStore, "open", counting_open)
        monkeypatch.setattr(objects.Opened, "close", counting_close)
        reader = b.read(record.id, 0, len(data))
        assert await anext(reader) == data[:MiB]  # the first object's bytes ...
        assert len(asked) == 2  # ... and the second asked for meanwhile
        await reader.aclose()
        await eventually_async(lambda: len(closed) == 2, 5, what="both objects asked for to be closed")
        asked.clear()
        assert await body(b, record.id) == data and len(asked) == 3

    two_nodes(scenario)


def test_commits_keep_the_order_of_the_appends_whatever_order_their_objects_are_written_in(two_nodes):
    data = data_of(8 * 100_000, b"order")

    async def scenario(a, b):
        record = await started(a, "ordered")
        pieces = [data[at:at + 100_000] for at in range(0, len(data), 100_000)]
        results = await asyncio.gather(*[a.append(record.id, record.generation, n * 100_000, [piece], len(piece))
                                         for n, piece in enumerate(pieces)])
        assert results == [True] * len(pieces)
        assert await body(a, record.id) == data

    two_nodes(scenario)


def test_a_live_lease_keeps_others_out_and_a_node_that_lost_it_writes_nothing(two_nodes):
    async def scenario(a, b):
        record = await started(a, "leased")
        assert await a.append(record.id, record.generation, 0, [b"A" * 1000], 1000)
        await eventually_async(lambda: b.record(record.id).stored == 1000, 5, what="node B to hear the bytes")
        with pytest.raises(Elsewhere):
            await b.transition("leased", "start", lifecycle.step)
        for task in a.chores.tasks:  # node A stops renewing, as if it were stopped or cut off
            if task.get_name() == "bgfetch fleet leases":
                task.cancel()
        await asyncio.sleep(LEASE + 0.5)
        await b.transition("leased", "start", lifecycle.step)  # takes it over from the committed bytes
        assert b.registration("leased")["state"] == "fetching" and b.record(record.id).stored == 1000
        with pytest.raises(Elsewhere):  # node A comes back: nothing it writes is taken
            await a.append(record.id, record.generation, 1000, [b"A" * 1000], 1000)
        for write in (a.set_response(record.id, 200, [], None), a.complete_record(record.id),
                      a.restart_record(record.id), a.transition("leased", "succeed", lifecycle.step)):
            with pytest.raises(Elsewhere):
                await write
        assert await b.append(record.id, record.generation, 1000, [b"B" * 500], 500)
        assert await body(b, record.id) == b"A" * 1000 + b"B" * 500
        await eventually_async(lambda: a.record(record.id).stored == 1500, 5, what="node A to hear node B's bytes")

    two_nodes(scenario)


def test_a_lost_lease_is_told_to_the_engine_of_the_node_that_held_it(two_nodes):
    async def scenario(a, b):
        await started(a, "told")
        await asyncio.sleep(LEASE / 2)
        assert a.heard.lost_ids == []  # renewed meanwhile
        async with a.connection() as conn:  # another node claimed it (its lease made to run out)
            await conn.execute("UPDATE registrations SET lease_until = now() - interval '1 second' WHERE id = 'told'")
            await conn.commit()
        await b.transition("told", "start", lifecycle.step)
        await eventually_async(lambda: a.heard.lost_ids, LEASE + 2, what="node A to hear it lost the lease")
        assert a.heard.lost_ids == ["told"]

    two_nodes(scenario)


def test_a_registration_no_node_runs_is_offered_to_every_node_and_one_wins(two_nodes):
    async def scenario(a, b):
        await a.create({"id": "free", "owner": "api"}, [NewRecord(url="http://origin.example/free")], allow)
        await eventually_async(lambda: "free" in a.heard.unclaimed_ids and "free" in b.heard.unclaimed_ids,
                               LEASE * 3, what="both nodes to be offered the registration")
        outcomes = await asyncio.gather(a.transition("free", "start", lifecycle.step),
                                        b.transition("free", "start", lifecycle.step), return_exceptions=True)
        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["Elsewhere", "str"]
        assert await a.requeue_active(lifecycle.step) == []  # a node starting again leaves it to its runner

    two_nodes(scenario)


def test_an_abort_from_any_node_ends_the_lease(two_nodes):
    async def scenario(a, b):
        record = await started(a, "stop-it")
        await eventually_async(lambda: "stop-it" in b.ids(), 5, what="node B to know it")
        await b.transition("stop-it", "abort", lifecycle.step)
        with pytest.raises(Elsewhere):
            await a.append(record.id, record.generation, 0, [b"late"], 4)
        await eventually_async(lambda: a.registration("stop-it")["failureReason"] == "aborted", 5,
                               what="node A to hear the abort")
        assert ("stop-it", "abort") in a.heard.events

    two_nodes(scenario)


def test_a_missing_or_short_object_is_an_error_never_wrong_bytes(two_nodes, s3_server, fleet_bodies):
    bucket, prefix = fleet_bodies.removeprefix("s3://").split("?")[0].split("/", 1)

    async def scenario(a, b):
        record = await started(a, "lost")
        for n in range(3):
            await a.append(record.id, record.generation, n * 1000, [bytes([65 + n]) * 1000], 1000)
        async with a.connection() as conn:
            rows = await (await conn.execute('SELECT "offset", object FROM chunks ORDER BY "offset"')).fetchall()
        client = s3_server.client()
        client.delete_object(Bucket=bucket, Key=f"{prefix}/{rows[1]['object']}")
        with pytest.raises(BodyLost, match=rows[1]["object"]):
            await body(b, record.id)
        assert await body(b, record.id, 0, 1000) == b"A" * 1000  # what is there is served
        client.put_object(Bucket=bucket, Key=f"{prefix}/{rows[2]['object']}", Body=b"C" * 10)  # shorter
        with pytest.raises(BodyLost, match="ended at byte 10, not 1000"):
            await body(b, record.id, 2000, 3000)

    two_nodes(scenario)


def test_no_object_is_left_behind(fleet_db, fleet_bodies, s3_server, monkeypatch):
    bucket, prefix = fleet_bodies.removeprefix("s3://").split("?")[0].split("/", 1)
    monkeypatch.setattr(bodies, "INTENT_GRACE_SECONDS", 1)

    async def scenario(a, b):
        record = await started(a, "gone")
        for n in range(4):
            await a.append(record.id, record.generation, n * 1000, [b"x" * 1000], 1000)
        other = await started(a, "kept", url="http://origin.example/kept")
        await a.append(other.id, other.generation, 0, [b"k" * 10], 10)
        name = "never-committed"  # a writer that died between its object and its commit
        async with a.connection() as conn:
            await bodies.intend(conn, name)
        await a.objects.put(name, [b"orphan"])
        assert len(s3_server.keys(bucket, prefix)) == 6
        assert await a.restart_record(record.id) == 1  # the entity changed: its old chunks are doomed
        await a.append(record.id, 1, 0, [b"y" * 1000], 1000)
        await b.delete("gone")  # from the other node
        with pytest.raises(NotFound):
            await b.delete("gone")
        await asyncio.sleep(1.1)
        await b.give_back_space()
        left = s3_server.keys(bucket, prefix)
        assert left == [f"{prefix}/{other.id}/0/{0:015d}-" + left[0].rsplit("-", 1)[1]]
        assert await body(a, other.id) == b"k" * 10
        async with a.connection() as conn:
            assert (await (await conn.execute("SELECT count(*) AS n FROM doomed_objects")).fetchone())["n"] == 0

    fleet(fleet_db, fleet_bodies, s3_server)(scenario)


def test_two_nodes_creating_one_id_at_once_make_one_registration(two_nodes):
    async def scenario(a, b):
        made = [NewRecord(url="http://origin.example/same")]
        outcomes = await asyncio.gather(a.create({"id": "same", "owner": "api"}, made, lambda *_: False),
                                        b.create({"id": "same", "owner": "api"}, made, lambda *_: False),
                                        return_exceptions=True)
        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["Conflict", "NoneType"]
        with psycopg.connect(a.conninfo) as conn:
            assert conn.execute("SELECT count(*) FROM bgfetch.records").fetchone() == (1,)

    two_nodes(scenario)


def test_a_renewal_made_by_one_node_is_read_by_the_other_and_takes_the_place_of_the_body(two_nodes):
    async def scenario(a, b):
        record = await started(a, "renewed")
        await a.append(record.id, record.generation, 0, [b"old!" * 250], 1000)
        await a.complete_record(record.id)
        await a.transition("renewed", "succeed", lifecycle.step)
        await eventually_async(lambda: b.registration("renewed")["result"] == "success", 5, what="node B to know it")
        generation = await b.begin_renewal(record.id, 200, [("ETag", '"v2"')], 600)  # node B revalidated
        assert await b.append(record.id, generation, 0, [b"new" * 200], 600)  # no lease: the fetch is done
        await eventually_async(lambda: (a.renewal(record.id) or record).stored == 600, 5, what="node A to see it")
        assert await body(a, record.id) == b"old!" * 250  # the body served is still the old one
        assert await body(a, record.id, 0, 600, generation=generation) == b"new" * 200
        retired = await b.complete_renewal(record.id, generation)
        await eventually_async(lambda: a.record(record.id).generation == generation, 5, what="node A to serve it")
        assert a.renewal(record.id) is None and a.record(record.id).size == 600
        assert await body(a, record.id) == b"new" * 200
        await a.drop_generation(record.id, retired)
        assert await body(b, record.id, 0, 1000, generation=retired) == b""  # its chunks are gone
        with pytest.raises(Elsewhere):  # a transfer's chunk of the ended fetch is never taken
            await a.append(record.id, generation, 600, [b"x"], 1)

    two_nodes(scenario)
