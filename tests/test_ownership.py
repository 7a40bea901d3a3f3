"""Ids belong to their owner: who may start, join, be served or replace a registration, and
which credentials read a body — unit tests of the rules, then end to end through a real proxy."""

import hashlib
import sqlite3

import pytest
import sqlite_utils

from harness.poll import eventually
from rules import make_spec
from store.db import NewRecord, records, registrations, schema
from store.db.storage import Conflict
from store.engine import lifecycle, ownership, service
from tests.test_api import problem_of

API = "http://bgfetch.internal/api"
TOKEN = {"Authorization": "Bearer t0ken"}


@pytest.fixture
def conn(tmp_path):
    connection = schema.connect(str(tmp_path / "owners.sqlite3"))
    schema.migrate(connection)
    yield connection
    connection.close()


def create(conn, registration: dict, requests: list[NewRecord]) -> None:
    registrations.create(conn, registration, requests, service._may_replace)


def finish(conn, reg_id: str, event: str = "succeed") -> None:
    registrations.transition(conn, reg_id, "start", lifecycle.step)
    registrations.transition(conn, reg_id, event, lifecycle.step, "bad-status" if event == "fail" else "")


def succeeded(proxy, reg_id: str) -> None:
    """Wait for a registration's success on a proxy that wants the token."""
    eventually(lambda: proxy.api("GET", f"/api/fetches/{reg_id}", headers=TOKEN).json()["result"] == "success",
               what=f"{reg_id} to succeed")


def request(url: str = "http://o/a", method: str = "GET", body: bytes | None = None, credential: str = "") -> NewRecord:
    return NewRecord(url, method, body=body, credential=credential, body_hash=ownership.body_hash(body))


# -- the rules -------------------------------------------------------------------------------


def test_a_request_key_tells_every_part_apart():
    base = ownership.record_key(request(method="POST", body=b"a"))
    others = [request(method="PUT", body=b"a"), request(method="POST", body=b"b"), request(method="POST"),
              request("http://o/b", "POST", b"a"), request(method="POST", body=b"a", credential="c")]
    assert len({base, *map(ownership.record_key, others)}) == 6
    assert ownership.record_key(request(method="POST", body=b"a")) == base


def test_only_the_api_or_the_failed_registrations_own_request_may_replace_it():
    assert ownership.may_replace("api", "k", "success") and ownership.may_replace("api", "", "failure")
    assert ownership.may_replace("k", "k", "failure")
    assert not ownership.may_replace("k", "k", "success")  # its own success: joined, never replaced
    assert not ownership.may_replace("k", "other", "failure")
    assert not ownership.may_replace("k", "api", "failure")
    assert not ownership.may_replace("k", "", "failure")  # made before owners were kept


def test_create_keeps_the_owner_and_a_hash_of_the_body_after_it_is_dropped(conn):
    key = ownership.record_key(request(method="POST", body=b"payload"))
    create(conn, {"id": "r", "owner": key}, [request(method="POST", body=b"payload")])
    finish(conn, "r")
    row = records.records(conn, "r")[0]
    assert row.request_body is None and row.body_hash == hashlib.sha256(b"payload").hexdigest()
    assert ownership.record_key(row) == key
    assert conn.execute("SELECT owner FROM registrations").fetchone()[0] == key


def test_a_proxy_request_replaces_only_its_own_failed_registration(conn):
    mine = ownership.record_key(request())
    create(conn, {"id": "r", "owner": mine}, [request()])
    finish(conn, "r", "fail")
    with pytest.raises(Conflict):
        create(conn, {"id": "r", "owner": "someone else"}, [request("http://o/b")])
    create(conn, {"id": "r", "owner": mine}, [request()])  # the retry
    finish(conn, "r")
    with pytest.raises(Conflict):  # a success is joined, not replaced, even by its maker
        create(conn, {"id": "r", "owner": mine}, [request()])
    create(conn, {"id": "r", "owner": ownership.API}, [request("http://o/c")])
    assert records.records(conn, "r")[0].url == "http://o/c"
    finish(conn, "r")
    with pytest.raises(Conflict):
        create(conn, {"id": "r", "owner": mine}, [request()])


def test_the_migration_keeps_what_it_can_of_older_registrations(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    old = schema.connect(path)
    schema.migrations.apply(sqlite_utils.Database(old), stop_before="m002_owners_and_body_hashes")
    now = 0.0
    for reg_id, upload, state in [("active", 4, "paused"), ("done", 4, "done"), ("empty", 0, "done")]:
        old.execute("INSERT INTO registrations (id, upload_total, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    [reg_id, upload, state, now, now])
    old.execute("INSERT INTO records (registration_id, idx, method, url, request_body) VALUES ('active', 0, 'POST', 'u', x'61626364')")
    old.execute("INSERT INTO records (registration_id, idx, method, url) VALUES ('done', 0, 'POST', 'u')")
    old.execute("INSERT INTO records (registration_id, idx, method, url) VALUES ('done', 1, 'GET', 'v')")
    old.execute("INSERT INTO records (registration_id, idx, method, url) VALUES ('empty', 0, 'POST', 'u')")
    schema.migrate(old)
    found = old.execute("SELECT registration_id, idx, body_hash FROM records ORDER BY registration_id, idx").fetchall()
    assert [tuple(row) for row in found] == [
        ("active", 0, hashlib.sha256(b"abcd").hexdigest()), ("done", 0, "unknown"), ("done", 1, ""), ("empty", 0, ""),
    ]
    assert {row[0] for row in old.execute("SELECT owner FROM registrations")} == {""}
    old.close()


def test_the_default_id_holds_the_credentials_only_when_there_are_some():
    url = "https://example.com/report.pdf"
    plain = make_spec("GET", url)
    assert make_spec("GET", url, credential="") == plain
    alice, bob = make_spec("GET", url, credential="a" * 64), make_spec("GET", url, credential="b" * 64)
    assert len({plain.id, alice.id, bob.id}) == 3
    assert make_spec("GET", url, {"id": "mine"}, credential="a" * 64).id == "mine"


# -- end to end: ids and their owners ----------------------------------------------------------


def test_with_the_token_a_header_cannot_replace_an_api_made_fetch(origin, make_proxy):
    proxy = make_proxy("bgfetch_token=t0ken").start()
    origin.add("/a.bin", size=50_000)
    origin.add("/b.bin", size=60_000)
    created = proxy.api("POST", "/api/fetches", json={"id": "x1", "requests": [origin.url("/a.bin")]}, headers=TOKEN)
    assert created.status_code == 201
    succeeded(proxy, "x1")
    with proxy.client() as client:
        def body() -> bytes:
            return client.get(f"{API}/fetches/x1/records/0/body", headers=TOKEN).content

        taken = client.get(origin.url("/b.bin"), headers={"Background-Fetch": 'id="x1"'})
        problem = problem_of(taken, 409)
        assert problem["id"] == "x1" and "'x1'" in problem["detail"] and problem["type"].endswith("/id-in-use")
        assert body() == origin.data("/a.bin")  # x1's bytes stay
        assert origin.count("/b.bin") == 0
        joined = client.get(origin.url("/a.bin"), headers={"Background-Fetch": 'id="x1"'})  # the same request: served
        assert joined.content == origin.data("/a.bin") and origin.count("/a.bin") == 1


def test_a_failed_fetch_is_retried_only_by_the_request_that_made_it(origin, proxy):
    origin.add("/flaky.bin", size=30_000)
    origin.add("/other.bin", size=30_000)
    origin.behave("/flaky.bin", status=503)
    with proxy.client() as client:
        failed = client.get(origin.url("/flaky.bin"), headers={"Background-Fetch": 'id="f1"'})
        assert failed.status_code == 503 and proxy.registration("f1")["failureReason"] == "bad-status"
        other = client.get(origin.url("/other.bin"), headers={"Background-Fetch": 'id="f1"'})
        assert problem_of(other, 409)["id"] == "f1" and origin.count("/other.bin") == 0
        as_post = client.post(origin.url("/flaky.bin"), content=b"x", headers={"Background-Fetch": 'id="f1"'})
        assert problem_of(as_post, 409)["id"] == "f1"
        origin.reset_behaviour("/flaky.bin")
        again = client.get(origin.url("/flaky.bin"), headers={"Background-Fetch": 'id="f1"'})
        assert again.status_code == 200 and again.content == origin.data("/flaky.bin")
    assert proxy.registration("f1")["result"] == "success"


def test_a_failed_api_fetch_is_not_a_headers_to_replace(origin, proxy):
    origin.add("/gone.bin", size=10)
    origin.behave("/gone.bin", status=404)
    proxy.api("POST", "/api/fetches", json={"id": "g1", "requests": [origin.url("/gone.bin")]})
    proxy.wait_for("g1", result="failure")
    origin.reset_behaviour("/gone.bin")
    with proxy.client() as client:
        taken = client.get(origin.url("/gone.bin"), headers={"Background-Fetch": 'id="g1"'})
    assert problem_of(taken, 409)["id"] == "g1"
    assert proxy.registration("g1")["failureReason"] == "bad-status"


def test_joining_needs_the_same_method_and_body(origin, proxy):
    origin.add("/form", data=b"the answer to a POST")
    url = origin.url("/form")
    with proxy.client() as client:
        # A browser's POST (it carries Origin) to its own site: no API secret is asked of it.
        first = client.post(url, content=b"question=1", headers={"Background-Fetch": 'id="up"', "Origin": origin.url("")})
        assert first.content == b"the answer to a POST"
        proxy.wait_for("up", result="success")
        put = client.put(url, content=b"question=1", headers={"Background-Fetch": 'id="up"'})
        problem = problem_of(put, 409)
        assert problem["id"] == "up" and "'up'" in problem["detail"]
        other_body = client.post(url, content=b"question=2", headers={"Background-Fetch": 'id="up"'})
        assert problem_of(other_body, 409)["id"] == "up"
        same = client.post(url, content=b"question=1", headers={"Background-Fetch": 'id="up"'})
        assert same.status_code == 200 and same.content == b"the answer to a POST"
    assert (origin.count("/form", "POST"), origin.count("/form", "PUT")) == (1, 0)
    assert [r.body for r in origin.requests] == [b"question=1"]


# -- end to end: credentials -------------------------------------------------------------------


def test_each_users_default_id_is_their_own(origin, proxy):
    origin.add("/shared.bin", size=80_000)
    url = origin.url("/shared.bin")
    users = [{"Cookie": "session=alice"}, {"Cookie": "session=bob"}, {}]
    with proxy.client() as client:
        for user in users:
            response = client.get(url, headers={"Background-Fetch": "?1", **user})
            assert response.status_code == 200 and response.content == origin.data("/shared.bin")
        ids = proxy.api("GET", "/api/fetches?all=1").json()["ids"]
        assert len(ids) == 3 and make_spec("GET", url).id == ids[2]  # without credentials: as before
        for reg_id in ids:
            proxy.wait_for(reg_id, result="success")
        for user in users:  # each one's stored copy serves them again; nobody's was evicted
            assert client.get(url, headers=user).content == origin.data("/shared.bin")
    assert origin.count("/shared.bin") == 3


def test_api_body_reads_need_the_credentials_the_body_was_fetched_with(origin, make_proxy):
    proxy = make_proxy("bgfetch_token=t0ken").start()
    secret = b"the private report, for alice only"
    origin.add("/private.txt", data=secret, content_type="text/plain")
    origin.add("/public.txt", data=b"for everyone")
    with proxy.client() as client:
        for path, reg_id, cookie in (("/private.txt", "mine", {"Cookie": "session=alice"}), ("/public.txt", "open", {})):
            client.get(origin.url(path), headers={"Background-Fetch": f'id="{reg_id}"', **cookie})
            succeeded(proxy, reg_id)
        body = f"{API}/fetches/mine/records/0/body"
        for others in ({}, {"Cookie": "session=bob"}, {"Cookie": "session=alice; x=1"}):
            for method in ("GET", "HEAD"):
                refused = client.request(method, body, headers={**TOKEN, **others})
                assert refused.status_code == 403 and secret not in refused.content
        assert problem_of(client.get(body, headers=TOKEN), 403)["type"].endswith("/credentials-mismatch")
        assert client.get(body, headers={**TOKEN, "Cookie": "session=alice"}).content == secret
        ranged = client.get(body, headers={**TOKEN, "Cookie": "session=alice", "Range": "bytes=4-10"})
        assert (ranged.status_code, ranged.content) == (206, secret[4:11])
        # A body fetched without credentials is everyone's, cookies or not.
        assert client.get(f"{API}/fetches/open/records/0/body", headers={**TOKEN, "Cookie": "x=1"}).content == b"for everyone"
    assert origin.count("/private.txt") == 1


def test_api_made_fetches_with_credentials_are_read_with_them(origin, proxy):
    origin.add("/inbox.json", data=b'{"mail": 3}', content_type="application/json")
    auth = {"Authorization": "Bearer origin-token"}
    made = proxy.api("POST", "/api/fetches", json={"id": "inbox", "requests": [{"url": origin.url("/inbox.json"), "headers": auth}]})
    assert made.status_code == 201
    proxy.wait_for("inbox", result="success")
    assert proxy.api("GET", "/api/fetches/inbox/records/0/body").status_code == 403
    assert proxy.api("GET", "/api/fetches/inbox/records/0/body", headers=auth).content == b'{"mail": 3}'


def test_ids_that_are_path_steps_are_refused_everywhere(origin, proxy):
    origin.add("/dot.bin", size=10)
    with proxy.client() as client:
        for reg_id in (".", ".."):
            header = client.get(origin.url("/dot.bin"), headers={"Background-Fetch": f'id="{reg_id}"'})
            problem = problem_of(header, 400)
            assert problem["key"] == "id" and '"." or ".."' in problem["detail"]
            made = problem_of(client.post(f"{API}/fetches", json={"id": reg_id, "requests": [origin.url("/dot.bin")]}), 400)
            assert made["field"] == "id" and reg_id in made["detail"]
    assert origin.count("/dot.bin") == 0
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": []}


def test_the_store_database_holds_the_owner_of_each_registration(origin, proxy):
    origin.add("/o.bin", size=10)
    proxy.background(origin.url("/o.bin"), 'id="by-header"')
    proxy.api("POST", "/api/fetches", json={"id": "by-api", "requests": [origin.url("/o.bin")]})
    with sqlite3.connect(f"file:{proxy.db}?mode=ro", uri=True) as db:
        owners = dict(db.execute("SELECT id, owner FROM registrations").fetchall())
    assert owners["by-api"] == "api"
    assert owners["by-header"] == ownership.record_key(request(origin.url("/o.bin")))
