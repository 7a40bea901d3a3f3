"""End to end: a fetch the Background-Fetch header starts, through a real mitmdump: stored, served offline,
and what the origin and plain traffic see. The header's own parsing: test_header.py."""

import hashlib
import http.client
import socket
import time

from harness.proxy import curl

MiB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_client_leaves_and_the_store_finishes(origin, proxy):
    origin.add("/ep5.mp3", size=6 * MiB)
    origin.behave("/ep5.mp3", throttle=3 * MiB)
    host, port = "127.0.0.1", proxy.port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            f"GET {origin.url('/ep5.mp3')} HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\n"
            'Background-Fetch: id="ep5"\r\n\r\n'.encode()
        )
        received = b""
        while len(received) < 256 * 1024:
            assert (piece := sock.recv(65536)), f"the connection closed after {len(received)} bytes"
            received += piece
        assert received.startswith(b"HTTP/1.1 200")
    registration = proxy.wait_for("ep5", timeout=20, result="success")
    assert registration["downloaded"] == 6 * MiB
    assert registration["state"] == "done"
    assert origin.count("/ep5.mp3") == 1

    origin.stop()
    with proxy.client() as client:
        body = client.get(origin.url("/ep5.mp3")).content
    assert sha256(body) == origin.sha256("/ep5.mp3")


def test_stored_body_keeps_the_origin_headers_and_answers_ranges_offline(origin, proxy):
    origin.add("/cover.jpg", size=300_000, content_type="image/jpeg")
    result = curl(proxy, origin.url("/cover.jpg"), "-H", 'Background-Fetch: id="cover"', "-o", "/dev/null")
    assert result.returncode == 0, result.stderr
    proxy.wait_for("cover", result="success")
    etag = origin.etag("/cover.jpg")
    data = origin.data("/cover.jpg")
    origin.stop()

    with proxy.client() as client:
        whole = client.get(origin.url("/cover.jpg"))
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "image/jpeg"
        assert whole.headers["etag"] == etag
        assert whole.headers["content-length"] == "300000"
        assert "last-modified" in whole.headers
        for header, status, expected, content_range in [
            ("bytes=0-9", 206, data[:10], "bytes 0-9/300000"),
            ("bytes=299990-", 206, data[299990:], "bytes 299990-299999/300000"),
            ("bytes=-5", 206, data[-5:], "bytes 299995-299999/300000"),
            ("bytes=100-200000", 206, data[100:200001], "bytes 100-200000/300000"),
        ]:
            part = client.get(origin.url("/cover.jpg"), headers={"Range": header})
            assert (part.status_code, part.content) == (status, expected), header
            assert part.headers["content-range"] == content_range
        beyond = client.get(origin.url("/cover.jpg"), headers={"Range": "bytes=300000-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == "bytes */300000"
        head = client.head(origin.url("/cover.jpg"))
        assert head.status_code == 200 and head.headers["content-length"] == "300000"


def test_curl_range_from_the_store_with_origin_down(origin, proxy):
    origin.add("/a.bin", size=MiB)
    assert curl(proxy, origin.url("/a.bin"), "-H", "Background-Fetch: ?1", "-o", "/dev/null").returncode == 0
    reg_id = proxy.api("GET", "/api/fetches?all=1").json()["ids"][0]
    proxy.wait_for(reg_id, result="success")
    origin.stop()
    result = curl(proxy, origin.url("/a.bin"), "-r", "1000-1999")
    assert result.stdout == origin.data("/a.bin")[1000:2000]


def test_bad_header_gets_a_problem_and_nothing_reaches_the_origin(origin, proxy):
    origin.add("/x.bin", size=1000)
    with proxy.client() as client:
        response = client.get(origin.url("/x.bin"), headers={"Background-Fetch": "download-total=-5"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400 and problem["key"] == "download-total"
    assert origin.requests == []
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": []}


def test_plain_traffic_passes_untouched_and_is_not_stored(origin, proxy):
    origin.add("/plain.txt", data=b"hello")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port)
    conn.request("GET", origin.url("/plain.txt"), headers={"X-Custom": "kept"})
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"hello")
    conn.close()
    assert origin.requests[-1].headers.get("X-Custom") == "kept"
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": []}
    origin.change("/plain.txt", b"world")
    with proxy.client() as client:
        assert client.get(origin.url("/plain.txt")).content == b"world"
    assert origin.count("/plain.txt") == 2


def test_origin_never_sees_the_background_fetch_header(origin, proxy):
    origin.add("/h.bin", size=1000)
    with proxy.client() as client:
        client.get(origin.url("/h.bin"), headers={"Background-Fetch": 'id="h"', "Authorization": "Bearer t"})
    proxy.wait_for("h", result="success")
    seen = origin.requests[0].headers
    assert "Background-Fetch" not in seen and "X-Bgfetch-Secret" not in seen
    assert seen.get("Authorization") == "Bearer t"


def test_respond_accepted_answers_202_with_the_registration(origin, proxy):
    origin.add("/big.iso", size=4 * MiB)
    origin.behave("/big.iso", throttle=4 * MiB)
    with proxy.client() as client:
        started = time.monotonic()
        response = client.get(origin.url("/big.iso"), headers={"Background-Fetch": 'id="iso", respond=accepted, title="Installer"'})
        assert time.monotonic() - started < 0.8
    assert response.status_code == 202
    assert response.headers["location"] == "http://bgfetch.internal/api/fetches/iso"
    body = response.json()
    assert (body["id"], body["title"], body["result"]) == ("iso", "Installer", "")
    with proxy.client() as client:
        via_proxy = client.get("http://bgfetch.internal/api/fetches/iso").json()
    assert via_proxy["id"] == "iso"
    proxy.wait_for("iso", result="success")


def test_bad_status_fails_the_registration(origin, proxy):
    origin.add("/gone.bin", size=10)
    origin.behave("/gone.bin", status=404)
    with proxy.client() as client:
        response = client.get(origin.url("/gone.bin"), headers={"Background-Fetch": 'id="gone"'})
    assert response.status_code == 404
    assert response.json()["registration"]["failureReason"] == "bad-status"
    registration = proxy.wait_for("gone", result="failure")
    assert registration["failureReason"] == "bad-status"
    origin.reset_behaviour("/gone.bin")
    with proxy.client() as client:  # a failed registration is not served: the origin answers
        assert client.get(origin.url("/gone.bin")).status_code == 200


def test_download_total_exceeded(origin, proxy):
    origin.add("/large.bin", size=2 * MiB)
    with proxy.client() as client:
        client.get(origin.url("/large.bin"), headers={"Background-Fetch": 'id="big", download-total=1000000, respond=accepted'})
    registration = proxy.wait_for("big", result="failure")
    assert registration["failureReason"] == "download-total-exceeded"
    assert registration["downloaded"] == 0


def test_a_fetch_made_through_the_api_is_served_through_the_proxy(origin, proxy):
    """The addon never saw this URL in a flow: it learns it from the store's announcement."""
    origin.add("/api-made.bin", size=300_000)
    created = proxy.api("POST", "/api/fetches", json={"id": "api-made", "requests": [origin.url("/api-made.bin")]})
    assert created.status_code == 201
    proxy.wait_for("api-made", result="success")
    origin.stop()
    with proxy.client() as client:
        served = client.get(origin.url("/api-made.bin"))
    assert served.status_code == 200 and served.content == origin.data("/api-made.bin")
