"""A body over several connections, end to end: a real mitmdump and the test origin pacing each
connection (as nginx's limit_rate does). The parts are asked for side by side, a client
streaming the fetch gets every byte in order, kill -9 of the store resumes each part where it
was, and the header's `segments` key (or the option) keeps a body to one connection."""

import hashlib
import re
import time

from harness.proxy import Proxy, curl
from tests.stores import MiB, kill_store

RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def requests_for(origin, path: str) -> list:
    return [r for r in origin.requests if r.path == path]


def test_a_paced_origin_gives_a_body_over_four_connections_to_a_client_in_order(tmp_path, origin):
    origin.add("/paced.bin", size=64 * MiB)
    origin.behave("/paced.bin", throttle=16 * MiB)  # one connection: 4 s
    proxy = Proxy(tmp_path).start()
    try:
        started = time.monotonic()
        streamed = curl(proxy, origin.url("/paced.bin"), "-H", 'Background-Fetch: id="paced"', timeout=120)
        assert streamed.returncode == 0, streamed.stderr
        assert hashlib.sha256(streamed.stdout).hexdigest() == origin.sha256("/paced.bin")
        assert time.monotonic() - started < 60  # bounded wait only: speed is the bench's to measure
    finally:
        proxy.stop()
    seen = requests_for(origin, "/paced.bin")
    assert seen[0].headers["Range"] is None
    parts = sorted(tuple(map(int, RANGE.match(r.headers["Range"]).groups())) for r in seen[1:])
    assert parts == [(16 * MiB, 32 * MiB - 1), (32 * MiB, 48 * MiB - 1), (48 * MiB, 64 * MiB - 1)]
    assert all(r.headers["If-Range"] for r in seen[1:])


def test_kill_9_of_the_store_resumes_each_part_where_it_was(tmp_path, origin):
    origin.add("/parts.bin", size=96 * MiB)
    origin.behave("/parts.bin", throttle=12 * MiB)
    proxy = Proxy(tmp_path).start()
    try:
        proxy.background(origin.url("/parts.bin"), 'id="parts"')
        for _ in range(2):
            proxy.wait_until("parts", lambda r: r["state"] == "fetching", timeout=30)
            time.sleep(1.0)
            kill_store(proxy)
        proxy.wait_for("parts", result="success", timeout=120)
        body = proxy.api("GET", "/api/fetches/parts/records/0/body").content
        assert hashlib.sha256(body).hexdigest() == origin.sha256("/parts.bin")
    finally:
        proxy.stop()
    seen = requests_for(origin, "/parts.bin")
    assert seen[0].headers["Range"] is None and all(r.headers["Range"] for r in seen[1:])  # never from 0 again
    # each kill loses at most what was not committed yet: a chunk being filled and the few in flight
    assert origin.body_bytes_sent("/parts.bin") < 96 * MiB + 2 * 4 * 6 * MiB


def test_the_header_keeps_a_body_to_one_connection(tmp_path, origin):
    origin.add("/one.bin", size=40 * MiB)
    proxy = Proxy(tmp_path, "bgfetch_segments=8").start()
    try:
        proxy.background(origin.url("/one.bin"), 'id="one", segments=1')
        proxy.wait_for("one", result="success", timeout=60)
        proxy.background(origin.url("/one.bin?again"), 'id="two"')
        proxy.wait_for("two", result="success", timeout=60)
    finally:
        proxy.stop()
    assert [r.headers["Range"] for r in requests_for(origin, "/one.bin") if "?" not in r.target] == [None]
    assert len([r for r in requests_for(origin, "/one.bin") if "?" in r.target]) == 2  # 40 MiB: parts of 16 MiB or more
