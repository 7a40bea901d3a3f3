"""End to end, a fleet: two real mitmdump nodes on one real PostgreSQL and one real S3-compatible object store.

What one node fetched the other serves (Range too, origin down); a client of one node joins the
other's transfer; a node killed (kill -9) or stopped (SIGSTOP) mid-transfer is taken over from
its committed bytes and writes nothing after; PostgreSQL restarting is a pause; events and the
quota are the fleet's.
"""

import hashlib
import json
import os
import signal
import threading
import time

import httpx
import pytest

from harness.metrics import Scrape
from harness.poll import eventually
from harness.postgres import Postgres
from harness.proxy import Proxy

MiB = 1 << 20
LEASE = 3  # seconds: bgfetch_lease of every node here


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def get(node: Proxy, url: str, **headers: str) -> httpx.Response:
    with node.client() as client:
        return client.get(url, headers=headers)


def resumed_at(origin, path: str) -> list[int]:
    """The offsets of the Range requests the origin saw for `path`."""
    return [int(r.headers["range"].removeprefix("bytes=").rstrip("-")) for r in origin.requests
            if r.path == path and r.headers.get("range")]


@pytest.fixture
def fleet_of(tmp_path, fleet_db, fleet_bodies, s3_server):
    """`fleet_of(2, *options)`: that many nodes on this test's database and bucket prefix, started one
    after the other (one's ports are picked free while the others' stores bind theirs); every one
    stopped at the end (after a SIGCONT, if a test stopped it)."""
    made: list[Proxy] = []

    def start(count: int, *options: str, db: str = "") -> list[Proxy]:
        nodes = []
        for name in "abc"[:count]:
            (tmp_path / name).mkdir()
            nodes.append(Proxy(tmp_path / name, f"bgfetch_bodies={fleet_bodies}", f"bgfetch_lease={LEASE}", *options,
                               db=db or fleet_db, env=s3_server.credentials))
        made.extend(nodes)
        return [node.start(60) for node in nodes]

    yield start
    for node in made:
        for pid in (node.proc.pid if node.proc else None, node._store):
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        node.stop()


def kill_node(node: Proxy) -> None:
    """kill -9 the node: its store process and its mitmdump, as a machine that dies."""
    os.kill(node.store_pid(), signal.SIGKILL)
    node.kill()


def test_a_fetch_made_on_one_node_is_served_by_another_whole_and_with_range_also_offline(origin, fleet_of):
    a, b = fleet_of(2)
    origin.add("/ep.mp3", size=3 * MiB + 17)
    data = origin.data("/ep.mp3")
    a.background(origin.url("/ep.mp3"), 'id="ep"')
    a.wait_for("ep", result="success")
    b.wait_for("ep", result="success", downloaded=len(data))  # node B's API knows it too
    assert sha256(get(b, origin.url("/ep.mp3")).content) == sha256(data)
    ranged = get(b, origin.url("/ep.mp3"), Range="bytes=1048570-2097160")
    assert ranged.status_code == 206 and ranged.content == data[1048570:2097161]
    assert ranged.headers["content-range"] == f"bytes 1048570-2097160/{len(data)}"
    origin.stop()
    assert get(b, origin.url("/ep.mp3")).content == data
    assert get(b, origin.url("/ep.mp3"), Range="bytes=-100").content == data[-100:]
    assert origin.count("/ep.mp3") == 1
    body = b.api("GET", "/api/fetches/ep/records/0/body", headers={"Range": "bytes=0-9"})
    assert body.status_code == 206 and body.content == data[:10]


def test_a_client_of_one_node_joins_the_transfer_of_another(origin, fleet_of):
    a, b = fleet_of(2)
    origin.add("/big.iso", size=6 * MiB)
    origin.behave("/big.iso", throttle=3 * MiB)
    data = origin.data("/big.iso")
    a.background(origin.url("/big.iso"), 'id="iso"')
    b.wait_until("iso", lambda r: 0 < r["downloaded"] < len(data))  # node B hears the bytes as they come
    plain = get(b, origin.url("/big.iso"))  # no header: the URL is known to node B's proxy
    joined = get(b, origin.url("/big.iso"), **{"Background-Fetch": 'id="iso"'})  # the same id: joins
    assert plain.status_code == joined.status_code == 200
    assert sha256(plain.content) == sha256(joined.content) == sha256(data)
    assert origin.count("/big.iso") == 1
    assert b.registration("iso")["result"] == "success"


def test_a_node_killed_mid_transfer_is_taken_over_from_its_committed_bytes(origin, fleet_of):
    a, b = fleet_of(2)
    size = 40 * MiB
    origin.add("/kill.bin", size=size)
    origin.behave("/kill.bin", throttle=MiB)  # slow enough that a quarter second of bytes is < 1 % of it
    a.background(origin.url("/kill.bin"), 'id="k"')
    b.wait_until("k", lambda r: r["downloaded"] >= 6 * MiB, timeout=30)
    origin.reset_behaviour("/kill.bin")  # the rest comes fast (the cut response keeps its pace)
    killed = time.monotonic()
    kill_node(a)
    eventually(lambda: resumed_at(origin, "/kill.bin"), LEASE + 10, what="node B to resume the transfer")
    took = [r.time for r in origin.requests if r.path == "/kill.bin"][-1] - killed
    print(f"takeover after kill -9: {took:.1f} s (lease {LEASE} s)")
    assert took <= LEASE + 5
    done = b.wait_for("k", result="success", downloaded=size, timeout=60)
    assert done["state"] == "done"
    assert sha256(get(b, origin.url("/kill.bin")).content) == origin.sha256("/kill.bin")
    assert origin.count("/kill.bin") == 2 and resumed_at(origin, "/kill.bin")[0] >= 6 * MiB
    assert origin.body_bytes_sent("/kill.bin") <= 1.01 * size  # at most 1 % fetched twice


def test_a_node_stopped_past_its_lease_writes_nothing_when_it_comes_back(origin, fleet_of):
    a, b = fleet_of(2)
    size = 12 * MiB
    origin.add("/stop.bin", size=size)
    origin.behave("/stop.bin", throttle=2 * MiB)
    a.background(origin.url("/stop.bin"), 'id="s"')
    b.wait_until("s", lambda r: r["downloaded"] >= 2 * MiB)
    store = a.store_pid()
    a._note_store()
    for pid in (store, a.proc.pid):  # cut off: neither renews, commits nor answers
        os.kill(pid, signal.SIGSTOP)
    origin.reset_behaviour("/stop.bin")
    try:
        eventually(lambda: resumed_at(origin, "/stop.bin"), LEASE + 10, what="node B to take over")
        b.wait_until("s", lambda r: r["downloaded"] >= size - MiB, timeout=60)
    finally:
        for pid in (store, a.proc.pid):
            os.kill(pid, signal.SIGCONT)
    a.wait_for_log("is left to another node", timeout=30)
    done = b.wait_for("s", result="success", timeout=60)
    assert done["downloaded"] == size
    for node in (a, b):
        assert sha256(get(node, origin.url("/stop.bin")).content) == origin.sha256("/stop.bin")
    assert a.registration("s")["result"] == "success"


def test_postgresql_restarting_mid_transfer_pauses_and_resumes_and_loses_nothing(origin, fleet_of):
    with Postgres() as server:
        a, = fleet_of(1, db=server.create_database())
        size = 8 * MiB
        origin.add("/pg.bin", size=size)
        origin.behave("/pg.bin", throttle=2 * MiB)
        a.background(origin.url("/pg.bin"), 'id="pg"')
        a.wait_until("pg", lambda r: r["downloaded"] >= MiB)
        server.stop()
        paused = a.wait_until("pg", lambda r: r["state"] == "paused", timeout=30)
        assert "PostgreSQL" in paused["lastError"] and "does not answer" in paused["lastError"]
        assert a.api("GET", "/api/fetches/pg").status_code == 200  # the API answers from the node's copy
        time.sleep(1)
        server.start()
        origin.reset_behaviour("/pg.bin")
        done = a.wait_for("pg", result="success", timeout=60)
        assert done["downloaded"] == size
        assert sha256(get(a, origin.url("/pg.bin")).content) == origin.sha256("/pg.bin")
        assert all(0 < offset < size for offset in resumed_at(origin, "/pg.bin"))  # resumed, not begun again
        a.stop()


def events_of(node: Proxy, seen: list, stop: threading.Event) -> None:
    """Read node's /api/events into `seen` as (type, id, result) until `stop` is set."""
    with httpx.stream("GET", node.api_url("/api/events"), timeout=httpx.Timeout(30, read=5)) as stream:
        kind = ""
        try:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    registration = json.loads(line.removeprefix("data:"))
                    seen.append((kind, registration["id"], registration["result"]))
                if stop.is_set():
                    return
        except httpx.ReadTimeout:
            return


def test_every_node_streams_every_nodes_events_and_an_abort_from_one_stops_the_other(origin, fleet_of):
    a, b = fleet_of(2)
    origin.add("/e.bin", size=MiB)
    origin.add("/slow.bin", size=8 * MiB)
    origin.behave("/slow.bin", throttle=MiB)
    seen, stop = [], threading.Event()
    reader = threading.Thread(target=events_of, args=(b, seen, stop))
    reader.start()
    try:
        time.sleep(0.5)
        a.background(origin.url("/e.bin"), 'id="e"')
        a.background(origin.url("/slow.bin"), 'id="slow"')
        eventually(lambda: ("success", "e", "success") in seen, 30, what="node B's stream to carry A's success")
        b.wait_until("slow", lambda r: r["downloaded"] > 0)
        assert b.api("POST", "/api/fetches/slow/abort", json={}).status_code == 200
        a.wait_for("slow", result="failure", timeout=20)
        sent = origin.body_bytes_sent("/slow.bin")
        time.sleep(2)
        assert origin.body_bytes_sent("/slow.bin") == sent  # node A's transfer stopped too
        eventually(lambda: ("abort", "slow", "failure") in seen, 10, what="the abort in node B's stream")
    finally:
        stop.set()
        reader.join(10)
    assert any(kind == "progress" and reg_id == "e" for kind, reg_id, _ in seen)


def last_event(node: Proxy, reg_id: str, kind: str, since: str = "0") -> tuple[str, list[tuple[str, str]]]:
    """The id of `reg_id`'s `kind` event in node's replay after the id `since`, and every (type,
    registration) replayed."""
    got, found = [], ""
    with httpx.stream("GET", node.api_url("/api/events"), headers={"Last-Event-ID": since},
                      timeout=httpx.Timeout(10, read=2)) as stream:
        event_id, event_kind = "", ""
        try:
            for line in stream.iter_lines():
                if line.startswith("id:"):
                    event_id = line.removeprefix("id:").strip()
                elif line.startswith("event:"):
                    event_kind = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    got.append((event_kind, json.loads(line.removeprefix("data:"))["id"]))
                    if got[-1] == (kind, reg_id):
                        found = event_id
        except httpx.ReadTimeout:  # the replay is over
            pass
    return found, got


def test_a_client_that_moves_to_another_node_with_its_last_event_id_misses_nothing(origin, fleet_of):
    a, b = fleet_of(2)  # B started after A: a count from each node's start left A's ids behind B's
    origin.add("/first.bin", size=MiB)
    origin.add("/second.bin", size=MiB)
    b.background(origin.url("/first.bin"), 'id="first"')
    b.wait_for("first", result="success")
    seen_on_b, _ = eventually(lambda: last_event(b, "first", "success"), 10, until=lambda found: found[0],
                              what="first's success in node B's events")
    b.background(origin.url("/second.bin"), 'id="second"')  # while the client moves to node A
    a.wait_for("second", result="success")
    _, replayed = eventually(lambda: last_event(a, "second", "success", since=seen_on_b), 10,
                             until=lambda found: found[0], what="second's success replayed by node A")
    assert ("success", "second") in replayed  # (an event node A heard just after may come again)


def test_the_quota_counts_the_whole_fleet(origin, fleet_of):
    a, b = fleet_of(2, "bgfetch_quota=5MiB")
    origin.add("/first.bin", size=3 * MiB)
    origin.add("/second.bin", size=3 * MiB)
    a.background(origin.url("/first.bin"), 'id="first"')
    a.wait_for("first", result="success")
    b.wait_for("first", result="success")
    b.background(origin.url("/second.bin"), 'id="second"')
    failed = b.wait_for("second", result="failure")
    assert failed["failureReason"] == "quota-exceeded"


def test_an_object_lost_from_the_bucket_is_a_clear_error_never_wrong_bytes(origin, fleet_of, s3_server,
                                                                          fleet_bodies):
    a, b = fleet_of(2)
    origin.add("/l.bin", size=2 * MiB)
    a.api("POST", "/api/fetches", json={"id": "l", "requests": [origin.url("/l.bin")]})
    b.wait_for("l", result="success")
    bucket, prefix = fleet_bodies.removeprefix("s3://").split("?")[0].split("/", 1)
    keys = s3_server.keys(bucket, prefix + "/")
    s3_server.client().delete_object(Bucket=bucket, Key=sorted(keys)[0])
    lost = b.api("GET", "/api/fetches/l/records/0/body")
    assert lost.status_code == 502 and lost.json()["type"].endswith("/body-lost")
    assert sorted(keys)[0].rsplit("/", 1)[-1] in lost.json()["detail"]
    origin.stop()
    with b.client() as client:
        cut = client.get(origin.url("/l.bin"))
    assert cut.status_code == 502


def test_readyz_names_postgresql_while_it_is_down_and_metrics_count_the_fleets_leases(origin, fleet_of):
    with Postgres() as server:
        a, = fleet_of(1, db=server.create_database())
        ready = a.api("GET", "/readyz")
        assert ready.status_code == 200
        assert {p["part"]: p["ready"] for p in ready.json()["parts"]} == {"store": True, "postgresql": True, "object storage": True}
        origin.add("/leased.bin", size=MiB)
        a.background(origin.url("/leased.bin"), 'id="leased"')
        a.wait_for("leased", result="success")
        scrape = Scrape(a.api("GET", "/metrics").text)
        assert scrape("bgfetch_lease_claims_total") == 1 and scrape("bgfetch_lease_takeovers_total") == 0
        assert scrape("bgfetch_fleet_bodies_bytes") == MiB
        assert scrape("bgfetch_registrations", state="done", result="success", reason="none") == 1
        server.stop()
        unready = eventually(lambda: a.api("GET", "/readyz"), 20, until=lambda r: r.status_code == 503,
                             what="/readyz to answer 503 with PostgreSQL down")
        down, = [p for p in unready.json()["parts"] if not p["ready"]]
        assert down["part"] == "postgresql" and "does not answer" in down["detail"]
        assert a.api("GET", "/metrics").status_code == 200  # without the fleet's tally, but it answers
        server.start()
        eventually(lambda: a.api("GET", "/readyz").status_code, 30, until=lambda status: status == 200,
                   what="/readyz to answer 200 once PostgreSQL is back")
        a.stop()


def test_a_takeover_is_counted_by_the_node_that_took_over(origin, fleet_of):
    a, b = fleet_of(2)
    origin.add("/taken.bin", size=8 * MiB)
    origin.behave("/taken.bin", throttle=2 * MiB)
    a.background(origin.url("/taken.bin"), 'id="taken"')
    a.wait_until("taken", lambda r: r["downloaded"] >= MiB)
    kill_node(a)
    origin.reset_behaviour("/taken.bin")
    b.wait_for("taken", result="success", timeout=60)
    scrape = Scrape(b.api("GET", "/metrics").text)
    assert scrape("bgfetch_lease_takeovers_total") == 1 and scrape("bgfetch_lease_claims_total") == 1
