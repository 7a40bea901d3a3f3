"""The test origin (harness/origin.py) does what the end-to-end tests rely on, seen by real clients."""

import contextlib
import email.utils
import hashlib
import http.client
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import harness.origin
from harness.origin import Origin, parse_size
from harness.poll import eventually

SIZE = 100_000


@pytest.fixture
def client():
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


@pytest.fixture
def file(origin):
    """A file of SIZE pseudo-random bytes at /f on the `origin` (conftest.py); returns its bytes."""
    origin.add("/f", size=SIZE)
    return origin.data("/f")


@contextlib.contextmanager
def raw_get(origin, path, headers=None):
    """GET with http.client; yields the response with its body still to read."""
    connection = http.client.HTTPConnection(origin.host, origin.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        yield connection.getresponse()
    finally:
        connection.close()


def curl(*args):
    return subprocess.run(
        ["curl", "--noproxy", "*", "-sS", *args], capture_output=True, check=True, timeout=20
    ).stdout


def test_full_body_with_validators(origin, client, file):
    response = client.get(origin.url("/f"))
    assert response.status_code == 200
    assert response.content == file
    assert hashlib.sha256(response.content).hexdigest() == origin.sha256("/f")
    assert response.headers["content-length"] == str(SIZE)
    assert response.headers["etag"] == f'"{origin.sha256("/f")}"' == origin.etag("/f")
    assert email.utils.parsedate_to_datetime(response.headers["last-modified"])
    assert response.headers["accept-ranges"] == "bytes"
    assert origin.body_bytes_sent("/f") == origin.body_bytes_sent() == SIZE


def test_data_is_deterministic_per_path():
    first, second = Origin(), Origin()
    first.add("/x", size=1000)
    second.add("/x", size=1000)
    second.add("/y", size=1000)
    assert first.data("/x") == second.data("/x")
    assert len(first.data("/x")) == 1000
    assert second.data("/y") != second.data("/x")


def test_curl_reuses_a_keep_alive_connection(origin, file):
    out = curl("-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n",
               origin.url("/f"), origin.url("/f"))
    assert out.decode().split("\n")[:2] == ["200 1", "200 0"]
    assert origin.count("/f") == 2


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, SIZE),
        ("bytes=-100", SIZE - 100, SIZE),
        ("bytes=99990-1000000", 99990, SIZE),
        ("bytes=-1000000", 0, SIZE),
    ],
)
def test_range_forms(origin, client, file, header, start, end):
    response = client.get(origin.url("/f"), headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert response.content == file[start:end]
    assert origin.body_bytes_sent("/f") == end - start


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", "bytes=-0", f"bytes={SIZE + 5}-{SIZE + 9}"])
def test_unsatisfiable_range_is_416(origin, client, file, header):
    response = client.get(origin.url("/f"), headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize(
    "header", ["bytes=0-9,20-29", "bytes=9-5", f"bytes={SIZE + 9}-{SIZE + 5}", "items=0-9"]
)
def test_range_it_does_not_support_gets_the_whole_body(origin, client, file, header):
    response = client.get(origin.url("/f"), headers={"Range": header})
    assert response.status_code == 200
    assert response.content == file


def test_head_has_the_headers_and_no_body(origin, client, file):
    response = client.head(origin.url("/f"), headers={"Range": "bytes=0-9"})
    assert response.status_code == 200  # Range is for GET only
    assert response.headers["content-length"] == str(SIZE)
    assert response.content == b""
    assert origin.body_bytes_sent() == 0
    assert origin.count("/f", "HEAD") == 1


def test_if_range_match_gives_206_and_mismatch_200(origin, client, file):
    first = client.get(origin.url("/f"), headers={"Range": "bytes=0-9"})
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    for validator in (etag, last_modified):
        resume = {"Range": "bytes=10-", "If-Range": validator}
        response = client.get(origin.url("/f"), headers=resume)
        assert response.status_code == 206
        assert response.content == file[10:]
    modified = email.utils.parsedate_to_datetime(last_modified).timestamp()
    older = email.utils.formatdate(modified - 60, usegmt=True)
    for validator in ('"another"', f"W/{etag}", older, "not a date"):
        resume = {"Range": "bytes=10-", "If-Range": validator}
        response = client.get(origin.url("/f"), headers=resume)
        assert response.status_code == 200, validator
        assert response.content == file


def test_cut_after_closes_mid_body(origin, file):
    origin.behave("/f", cut_after=1000)
    with raw_get(origin, "/f") as response, pytest.raises(http.client.IncompleteRead) as cut:
        assert response.status == 200
        assert response.getheader("Content-Length") == str(SIZE)
        response.read()
    assert cut.value.partial == file[:1000]
    assert origin.body_bytes_sent("/f") == 1000
    with raw_get(origin, "/f") as response, pytest.raises(http.client.IncompleteRead):
        response.read()  # every response is cut when `cuts` is not given


def test_cuts_counts_the_responses_cut(origin, client, file):
    origin.behave("/f", cut_after=50, cuts=1)
    with raw_get(origin, "/f", {"Range": "bytes=100-"}) as response:
        assert response.status == 206
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
    assert cut.value.partial == file[100:150]
    for _ in range(2):
        assert client.get(origin.url("/f")).content == file
    assert origin.body_bytes_sent("/f") == 50 + 2 * SIZE
    assert origin.count("/f") == 3


def test_httpx_sees_a_cut_response_as_an_error(origin, client, file):
    origin.behave("/f", cut_after=10)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(origin.url("/f"))


def test_throttle_slows_the_body(origin, client, file):
    origin.behave("/f", throttle=400_000)  # 0.25 s for the body
    began = time.monotonic()
    response = client.get(origin.url("/f"))
    assert time.monotonic() - began >= 0.125
    assert response.content == file


def test_delay_holds_the_headers(origin, client, file):
    origin.behave("/f", delay=0.3)
    began = time.monotonic()
    assert client.get(origin.url("/f")).content == file
    assert time.monotonic() - began >= 0.3


def test_serves_connections_concurrently(origin, file):
    origin.behave("/f", delay=0.5)
    statuses = []

    def fetch():
        with raw_get(origin, "/f") as response:
            statuses.append(response.status)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200, 200]
    assert time.monotonic() - began < 1.2


def test_ignore_range_sends_200(origin, client, file):
    origin.behave("/f", ignore_range=True)
    response = client.get(origin.url("/f"), headers={"Range": "bytes=10-"})
    assert response.status_code == 200
    assert response.content == file
    origin.reset_behaviour("/f")
    assert client.get(origin.url("/f"), headers={"Range": "bytes=10-"}).status_code == 206


def test_status_knob_and_unknown_path(origin, client, file):
    missing = client.get(origin.url("/nothing"))
    assert missing.status_code == 404
    assert missing.text == "404 Not Found\n"
    origin.behave("/f", status=503)
    assert client.get(origin.url("/f")).status_code == 503
    origin.behave("/f", status=None)
    assert client.get(origin.url("/f")).status_code == 200


def test_no_validators(origin, client, file):
    etag = origin.etag("/f")
    origin.behave("/f", no_validators=True)
    response = client.get(origin.url("/f"), headers={"Range": "bytes=10-", "If-Range": etag})
    assert response.status_code == 200  # without validators an If-Range cannot match
    assert "etag" not in response.headers
    assert "last-modified" not in response.headers
    assert client.get(origin.url("/f"), headers={"Range": "bytes=10-"}).status_code == 206


def test_add_without_validators(origin, client):
    origin.add("/plain", data=b"plain", etag=False, last_modified=False, content_type="text/plain")
    response = client.get(origin.url("/plain"))
    assert response.text == "plain"
    assert response.headers["content-type"] == "text/plain"
    assert "etag" not in response.headers and "last-modified" not in response.headers


def test_redirect(origin, client, file):
    origin.behave("/old", redirect_to="/f")
    response = client.get(origin.url("/old"))
    assert response.status_code == 302
    assert response.headers["location"] == origin.url("/f")
    followed = client.get(origin.url("/old"), follow_redirects=True)
    assert followed.content == file
    assert [r.path for r in origin.requests] == ["/old", "/old", "/f"]


def test_echo_answers_each_request_with_its_own_body(origin, client):
    origin.behave("/upload", echo=True)
    for body in (b"upload1", b"upload2"):
        response = client.post(origin.url("/upload"), content=body)
        assert (response.status_code, response.content) == (200, body)
    assert client.get(origin.url("/upload")).content == b""
    assert [r.body for r in origin.requests] == [b"upload1", b"upload2", b""]


def test_change_makes_a_new_version(origin, client, file):
    before = client.get(origin.url("/f"))
    origin.change("/f")
    resume = {"Range": "bytes=10-", "If-Range": before.headers["etag"]}
    after = client.get(origin.url("/f"), headers=resume)
    assert after.status_code == 200
    assert after.content != file and len(after.content) == SIZE
    assert hashlib.sha256(after.content).hexdigest() == origin.sha256("/f")
    assert after.headers["etag"] != before.headers["etag"]
    assert after.headers["last-modified"] != before.headers["last-modified"]
    origin.change("/f", b"third")
    assert client.get(origin.url("/f")).content == b"third"


def test_records_requests(origin, client, file):
    client.post(origin.url("/f?x=1"), content=b"payload", headers={"X-Test": "yes"})
    (record,) = origin.requests
    assert (record.method, record.path, record.target) == ("POST", "/f", "/f?x=1")
    assert record.body == b"payload"
    assert record.headers["x-test"] == "yes"
    assert record.time <= time.monotonic()


def test_stop_drops_an_inflight_transfer_and_refuses_connections(origin, client, file):
    origin.behave("/f", throttle=50_000)  # 2 s for the body
    received = 0
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        with client.stream("GET", origin.url("/f")) as response:
            for chunk in response.iter_raw():
                received += len(chunk)
                if not origin.running:
                    continue
                began = time.monotonic()
                origin.stop()
                assert time.monotonic() - began < 1
    assert 0 < received < SIZE
    assert origin.body_bytes_sent("/f") < SIZE
    with pytest.raises(httpx.ConnectError):
        client.get(origin.url("/f"))


def test_stop_is_prompt_with_a_request_waiting(origin, file):
    origin.behave("/f", delay=30)
    errors = []

    def fetch():
        try:
            with raw_get(origin, "/f"):
                pass
        except (http.client.RemoteDisconnected, ConnectionError) as error:
            errors.append(error)

    thread = threading.Thread(target=fetch)
    thread.start()
    eventually(lambda: origin.count("/f"), 5, interval=0.01, what="the request to reach the origin")
    began = time.monotonic()
    origin.stop()
    thread.join(5)
    assert time.monotonic() - began < 2
    assert len(errors) == 1


def test_start_again_on_the_same_port(origin, client, file):
    port = origin.port
    assert client.get(origin.url("/f")).status_code == 200
    origin.stop()
    origin.stop()  # harmless
    origin.start()
    assert origin.port == port
    assert client.get(origin.url("/f")).content == file
    with pytest.raises(RuntimeError):
        origin.start()


def test_client_disconnecting_mid_body_is_quiet(origin, capfd):
    origin.add("/big", size=8 << 20)
    with socket.create_connection((origin.host, origin.port)) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
    origin.stop()  # joins the connection threads
    assert origin.body_bytes_sent("/big") < 8 << 20
    assert capfd.readouterr().err == ""


def test_https_with_its_own_certificate(client):
    with Origin(tls=True) as origin:
        origin.add("/s", data=b"secret")
        assert Path(origin.cert_path).is_file()
        assert origin.url("/s").startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=origin.cert_path)
        with httpx.Client(verify=context, trust_env=False) as tls_client:
            assert tls_client.get(origin.url("/s")).content == b"secret"
        assert curl("--cacert", str(origin.cert_path), origin.url("/s")) == b"secret"
        with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
            client.get(origin.url("/s"))
        origin.behave("/s", cut_after=2)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(origin.url("/s"), verify=context, trust_env=False)


@pytest.mark.parametrize(
    ("text", "size"), [("100", 100), ("2KB", 2000), ("64MiB", 64 << 20), ("1gib", 1 << 30)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_command_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(harness.origin.__file__)
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--size", "1KiB", "/a.bin"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        url, _, sha256 = process.stdout.readline().split()
        assert url == f"http://127.0.0.1:{port}/a.bin"
        body = curl(url)
        assert len(body) == 1024 and hashlib.sha256(body).hexdigest() == sha256
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        process.stdout.close()


def test_conditional_get_and_head_are_answered_304_with_the_file_headers(origin, client):
    origin.add("/c", data=b"v0", modified_ago=3600, headers={"Cache-Control": "max-age=60", "Vary": "Accept"})
    etag, modified = origin.etag("/c"), origin.last_modified("/c")
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'}, {"If-None-Match": "*"},
                    {"If-Modified-Since": modified}):
        for method in ("GET", "HEAD"):
            response = client.request(method, origin.url("/c"), headers=headers)
            assert response.status_code == 304 and response.content == b"", (method, headers)
            assert response.headers["etag"] == etag and response.headers["cache-control"] == "max-age=60"
            assert response.headers["vary"] == "Accept" and "date" in response.headers
    stale = email.utils.formatdate(time.time() - 7200, usegmt=True)
    for headers in ({"If-None-Match": '"x"'}, {"If-Modified-Since": stale},
                    {"If-None-Match": '"x"', "If-Modified-Since": modified}):
        response = client.get(origin.url("/c"), headers=headers)
        assert response.status_code == 200 and response.content == b"v0", headers
    origin.change("/c", b"v1")
    response = client.get(origin.url("/c"), headers={"If-None-Match": etag, "If-Modified-Since": modified})
    assert response.status_code == 200 and response.content == b"v1"
    assert response.headers["last-modified"] != modified
