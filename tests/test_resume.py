"""End to end against a misbehaving origin: cuts, changed files, no Range, no validators, offline, kill -9.

Every test checks the SHA-256 of what a client gets; a resume also has to cost the origin at
most 1.05 times the body's size in all.
"""

import hashlib
import os
import sqlite3
import subprocess
import time

import httpx
import pytest

from harness.origin import Origin


MiB = 1 << 20
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def served(proxy, url: str, **headers: str) -> httpx.Response:
    with proxy.client() as client:
        return client.get(url, headers=headers)


def ranges(origin, path: str) -> list[str | None]:
    return [r.headers.get("Range") for r in origin.requests if r.path == path]


def stored_bytes(proxy, reg_id: str) -> int:
    with sqlite3.connect(f"file:{proxy.db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT SUM(stored) FROM records WHERE registration_id = ?", [reg_id]).fetchone()[0]


def test_cut_twice_mid_body_a_streaming_client_still_gets_every_byte(origin, proxy):
    origin.add("/ep.mp3", size=4 * MiB)
    origin.behave("/ep.mp3", cut_after=MiB, cuts=2)
    response = served(proxy, origin.url("/ep.mp3"), **{"Background-Fetch": 'id="ep"'})
    assert response.status_code == 200
    assert sha256(response.content) == origin.sha256("/ep.mp3")
    proxy.wait_for("ep", result="success", downloaded=4 * MiB)
    assert ranges(origin, "/ep.mp3") == [None, f"bytes={MiB}-", f"bytes={2 * MiB}-"]
    assert [r.headers.get("If-Range") for r in origin.requests] == [None, origin.etag("/ep.mp3")] + [origin.etag("/ep.mp3")]
    assert origin.body_bytes_sent("/ep.mp3") <= 1.05 * 4 * MiB


def test_a_file_changed_between_cut_and_resume_starts_again_and_never_mixes(origin, proxy):
    origin.add("/v.bin", size=3 * MiB)
    origin.behave("/v.bin", throttle=2 * MiB)
    old = origin.data("/v.bin")
    proxy.background(origin.url("/v.bin"), 'id="v"')
    proxy.wait_until("v", lambda r: r["downloaded"] >= MiB // 2)
    with proxy.client() as client, client.stream("GET", origin.url("/v.bin")) as reader:
        assert reader.status_code == 200
        got = bytearray()
        pieces = reader.iter_raw()
        while len(got) < 256 * 1024:
            got += next(pieces)
        origin.stop()
        proxy.wait_for("v", state="paused")
        origin.change("/v.bin")
        origin.reset_behaviour("/v.bin")
        origin.start()
        try:
            for piece in pieces:
                got += piece
        except httpx.TransportError:
            pass  # the store cut this reader off: its version is gone
    assert len(got) < len(old) and old.startswith(got)
    proxy.wait_for("v", result="success")
    resume = [r for r in origin.requests if r.path == "/v.bin"][-1]
    assert resume.headers.get("If-Range") != origin.etag("/v.bin") and resume.headers.get("Range")
    assert origin.count("/v.bin") == 2
    assert sha256(served(proxy, origin.url("/v.bin")).content) == origin.sha256("/v.bin")


def test_an_origin_that_ignores_range_is_read_again_from_byte_zero(origin, proxy):
    origin.add("/nr.bin", size=2 * MiB)
    origin.behave("/nr.bin", cut_after=MiB, cuts=1, ignore_range=True)
    proxy.background(origin.url("/nr.bin"), 'id="nr"')
    proxy.wait_for("nr", result="success", downloaded=2 * MiB)
    assert sha256(served(proxy, origin.url("/nr.bin")).content) == origin.sha256("/nr.bin")
    assert ranges(origin, "/nr.bin") == [None, f"bytes={MiB}-"]
    assert origin.body_bytes_sent("/nr.bin") == 3 * MiB  # the 200 was taken whole; nothing mixed


def test_without_validators_the_resume_starts_from_byte_zero(origin, proxy):
    origin.add("/nv.bin", size=2 * MiB)
    origin.behave("/nv.bin", cut_after=MiB, cuts=1, no_validators=True)
    proxy.background(origin.url("/nv.bin"), 'id="nv"')
    proxy.wait_for("nv", result="success")
    assert ranges(origin, "/nv.bin") == [None, None]
    origin.stop()  # with neither validators nor a freshness lifetime it is stale: served as stored offline
    assert sha256(served(proxy, origin.url("/nv.bin")).content) == origin.sha256("/nv.bin")


def test_offline_at_the_start_waits_paused_and_completes_when_the_origin_is_back(origin, proxy):
    origin.add("/off.bin", size=MiB)
    url = origin.url("/off.bin")
    origin.stop()
    response = served(proxy, url, **{"Background-Fetch": 'id="off"'})
    assert response.status_code == 503 and response.headers["Retry-After"]
    problem = response.json()
    assert problem["registration"]["state"] == "paused" and problem["registration"]["result"] == ""
    registration = proxy.wait_for("off", state="paused")
    assert registration["result"] == "" and "ConnectError" in registration["lastError"]
    origin.start()
    proxy.wait_for("off", result="success")
    origin.stop()
    assert sha256(served(proxy, url).content) == origin.sha256("/off.bin")


def test_kill_9_mid_transfer_then_restart_resumes_with_range(origin, proxy):
    origin.add("/k.iso", size=6 * MiB)
    origin.behave("/k.iso", throttle=3 * MiB)
    proxy.background(origin.url("/k.iso"), 'id="k"')
    proxy.wait_until("k", lambda r: r["downloaded"] >= 1536 * 1024)
    proxy.kill()
    assert not proxy.store_running  # the store saw mitmproxy die and went by itself
    kept = stored_bytes(proxy, "k")
    assert kept >= 1536 * 1024
    origin.reset_behaviour("/k.iso")
    proxy.start()
    proxy.wait_for("k", result="success", downloaded=6 * MiB)
    resumed_at = int(ranges(origin, "/k.iso")[-1].removeprefix("bytes=").rstrip("-"))
    assert kept <= resumed_at < 6 * MiB
    assert origin.count("/k.iso") == 2
    assert sha256(served(proxy, origin.url("/k.iso")).content) == origin.sha256("/k.iso")
    assert origin.body_bytes_sent("/k.iso") <= 1.05 * 6 * MiB


@pytest.mark.parametrize("restart", [False, True])
def test_a_client_coming_back_with_range_is_served_from_the_stored_bytes(origin, proxy, restart):
    origin.add("/back.bin", size=4 * MiB)
    origin.behave("/back.bin", throttle=2 * MiB)
    data = origin.data("/back.bin")
    proxy.background(origin.url("/back.bin"), 'id="back"')
    proxy.wait_until("back", lambda r: r["downloaded"] >= MiB)
    if restart:
        proxy.stop()
        proxy.start()
    response = served(proxy, origin.url("/back.bin"), Range=f"bytes={MiB // 2}-")
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {MiB // 2}-{4 * MiB - 1}/{4 * MiB}"
    assert response.content == data[MiB // 2 :]
    first, *resumed = ranges(origin, "/back.bin")
    assert first is None and len(resumed) == (1 if restart else 0)
    assert all(r.startswith("bytes=") and r != "bytes=0-" for r in resumed)  # after a restart: Range
    assert origin.body_bytes_sent("/back.bin") <= 1.05 * 4 * MiB


def test_expired_credentials_on_resume_pause_and_keep_the_bytes(origin, proxy):
    origin.add("/signed.bin", size=3 * MiB)
    origin.behave("/signed.bin", throttle=2 * MiB)
    proxy.background(origin.url("/signed.bin"), 'id="s"', {"Authorization": "Bearer t1"})
    proxy.wait_until("s", lambda r: r["downloaded"] >= MiB // 2)
    origin.stop()
    proxy.wait_for("s", state="paused")
    origin.behave("/signed.bin", status=401, throttle=None)
    origin.start()
    paused = proxy.wait_until("s", lambda r: "credentials" in r["lastError"])
    assert paused["state"] == "paused" and paused["result"] == ""
    assert "(401)" in paused["lastError"] and paused["downloaded"] >= MiB // 2
    origin.reset_behaviour("/signed.bin")  # the origin takes the credentials again
    proxy.wait_for("s", result="success")
    with proxy.client() as client:
        body = client.get(origin.url("/signed.bin"), headers={"Authorization": "Bearer t1"}).content
    assert sha256(body) == origin.sha256("/signed.bin")
    assert origin.body_bytes_sent("/signed.bin") <= 1.05 * 3 * MiB


@pytest.fixture
def make_origin():
    """Make an origin, over https with `tls`; every one made is stopped at the end."""
    made = []

    def make(tls: bool) -> Origin:
        made.append(Origin(tls=tls).start())
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.mark.parametrize("how", ["http/1.1", "http/2 on intercepted https"])
def test_a_reader_of_a_paused_fetch_gets_a_short_body_in_time_and_curl_resumes_it(make_proxy, make_origin, tmp_path, how):
    bound = 2
    origin = make_origin(tls=how.endswith("https"))
    options = [f"ssl_verify_upstream_trusted_ca={origin.cert_path}"] if origin.cert_path else []
    proxy = make_proxy(f"bgfetch_paused_read_timeout={bound}", *options).start()
    origin.add("/p.bin", size=8 * MiB)
    origin.behave("/p.bin", throttle=2 * MiB)
    out = tmp_path / "p.bin"
    client = ["--http2", "--cacert", str(proxy.confdir / "mitmproxy-ca-cert.pem")] if origin.cert_path else []
    fetch = ["curl", "-sS", *client, "-x", proxy.url, "-H", 'Background-Fetch: id="p"', "-o", str(out),
             origin.url("/p.bin")]
    reader = subprocess.Popen(fetch, stderr=subprocess.PIPE, env=NO_PROXY_ENV)
    try:
        proxy.wait_until("p", lambda r: r["downloaded"] >= MiB)
        origin.stop()  # down for longer than the bound
        down = time.monotonic()
        _, said = reader.communicate(timeout=bound + 15)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    waited = time.monotonic() - down
    ended_short = {"http/1.1": (18, b"transfer closed"), "http/2 on intercepted https": (92, b"not closed cleanly")}
    assert (reader.returncode, ended_short[how][1] in said) == (ended_short[how][0], True), said  # curl: cut short
    got = out.read_bytes()
    assert MiB <= len(got) < 8 * MiB and got == origin.data("/p.bin")[: len(got)]
    assert waited < bound + 8, waited  # the bound and a few seconds, not mitmproxy's idle timeout
    assert proxy.registration("p")["state"] == "paused"  # the fetch itself goes on

    origin.reset_behaviour("/p.bin")
    origin.start()
    resumed = subprocess.run([*fetch[:-1], "-C", "-", fetch[-1]], capture_output=True, timeout=60, env=NO_PROXY_ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert sha256(out.read_bytes()) == origin.sha256("/p.bin")
    proxy.wait_for("p", result="success")
    assert origin.body_bytes_sent("/p.bin") <= 1.05 * 8 * MiB
