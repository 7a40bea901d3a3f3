"""A record's generations in SQLite (store/db/renewals.py, chunks.py): a renewal stored beside the
body served, taking its place once whole, and what a migration and a restart make of them."""

import sqlite3

import pytest
import sqlite_utils

from store.db import NewRecord, chunks, records, registrations, renewals, schema
from store.engine import lifecycle, service
from tests.test_lifecycle import conn  # noqa: F401 - a migrated store of its own for each test

URL = "http://o/x"


def stored(conn, body: bytes = b"old!") -> int:
    """A successful registration whose one record holds `body`; the record's id."""
    registrations.create(conn, {"id": "r", "title": "", "owner": "api"}, [NewRecord(URL)], service._may_replace)
    record = records.records(conn, "r")[0].id
    records.set_response(conn, record, 200, [("ETag", '"old"')], len(body))
    assert chunks.append(conn, record, 0, 0, [body])
    records.complete(conn, record)
    for event in ("start", "succeed"):
        registrations.transition(conn, "r", event, lifecycle.step)
    return record


def body(conn, record: int, generation: int | None = None) -> bytes:
    return b"".join(chunks.read(conn, record, 0, 2**62, generation))


def test_a_renewal_is_stored_beside_the_body_served_and_takes_its_place_whole(conn):
    record = stored(conn)
    generation = renewals.begin(conn, record, 200, [("ETag", '"new"')], 6)
    assert generation == 1 and records.record(conn, record).generation == 0
    assert chunks.append(conn, record, generation, 0, [b"new"]) and chunks.append(conn, record, generation, 3, [b"er!"])
    assert not chunks.append(conn, record, generation, 3, [b"late"])  # not where its bytes end
    assert not chunks.append(conn, record, 7, 0, [b"other"])  # neither the body nor its renewal
    renewal = renewals.renewal(conn, record)
    assert (renewal.generation, renewal.stored, renewal.size, renewal.complete) == (1, 6, 6, False)
    assert renewal.response_headers == [("ETag", '"new"')]
    assert body(conn, record) == b"old!" and body(conn, record, 1) == b"newer!"
    assert records.held(conn, -1) == 4 + 6  # the quota counts both
    assert renewals.complete(conn, record, 1) == 0  # the generation it replaced
    now = records.record(conn, record)
    assert (now.generation, now.complete, now.size, now.stored, now.response_headers) == (1, True, 6, 6, [("ETag", '"new"')])
    assert renewals.renewal(conn, record) is None and body(conn, record) == b"newer!"
    assert body(conn, record, 0) == b"old!"  # until its last reader is done
    renewals.drop_generation(conn, record, 1)  # the current one: kept
    renewals.drop_generation(conn, record, 0)
    assert body(conn, record, 0) == b"" and body(conn, record) == b"newer!"
    assert renewals.complete(conn, record, 1) is None  # nothing left to complete


def test_a_renewal_given_up_or_begun_again_leaves_the_body_served(conn):
    record = stored(conn)
    renewals.begin(conn, record, 200, [], None)
    chunks.append(conn, record, 1, 0, [b"half"])
    assert renewals.begin(conn, record, 200, [], None) == 2  # the one under way goes with its bytes
    assert body(conn, record, 1) == b""
    chunks.append(conn, record, 2, 0, [b"again"])
    renewals.drop(conn, record, 2)
    assert renewals.renewal(conn, record) is None and body(conn, record, 2) == b"" and body(conn, record) == b"old!"


def test_no_renewal_survives_a_restart_nor_the_bytes_of_a_replaced_generation(conn):
    record = stored(conn)
    renewals.begin(conn, record, 200, [], None)
    chunks.append(conn, record, 1, 0, [b"halfway"])
    assert renewals.forget(conn) == 1
    assert renewals.renewal(conn, record) is None and body(conn, record) == b"old!"
    renewals.begin(conn, record, 200, [], 3)
    chunks.append(conn, record, 1, 0, [b"new"])
    renewals.complete(conn, record, 1)
    assert renewals.forget(conn) == 1 and body(conn, record, 0) == b"" and body(conn, record) == b"new"


def test_deleting_the_registration_takes_its_renewal_too(conn):
    record = stored(conn)
    renewals.begin(conn, record, 200, [], None)
    chunks.append(conn, record, 1, 0, [b"new"])
    registrations.delete(conn, "r")
    assert conn.execute("SELECT count(*) FROM renewals").fetchone()[0] == 0
    for _ in range(10):  # the bytes go in the background, a piece at a time, both generations'
        if not registrations.purge_some(conn, 1):
            break
    assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0


def test_the_migration_keeps_every_stored_body_whatever_its_generation(tmp_path):
    conn = schema.connect(str(tmp_path / "old.sqlite3"))
    schema.migrations.apply(sqlite_utils.Database(conn), stop_before="m005_generations")  # a store made before them
    conn.execute("INSERT INTO registrations (id, created_at, updated_at, owner) VALUES ('r', 0, 0, 'api')")  # as then
    conn.execute("INSERT INTO records (registration_id, idx, url) VALUES ('r', 0, ?)", [URL])
    conn.execute("UPDATE records SET generation = 3, stored = 3, size = 3, complete = 1, status = 200")
    conn.execute("INSERT INTO chunks (record_id, offset, size, data) VALUES (1, 0, 3, x'6f6c64')")
    schema.migrate(conn)
    assert records.record(conn, 1).generation == 0 and body(conn, 1) == b"old"
    with pytest.raises(sqlite3.IntegrityError):  # one chunk an offset, per generation
        conn.execute("INSERT INTO chunks (record_id, generation, offset, size, data) VALUES (1, 0, 0, 1, x'00')")
    conn.execute("INSERT INTO chunks (record_id, generation, offset, size, data) VALUES (1, 1, 0, 1, x'00')")
    conn.close()
