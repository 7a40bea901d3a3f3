"""End to end: one upstream transfer per URL, limits, redirects, TLS, upstream proxies, credentials, integrity.

Through a real mitmdump and origin; the transfer loop's own unit tests are in test_transfer_loop.py."""

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from harness.origin import Origin
from harness.poll import eventually
from harness.proxy import MITMDUMP, free_port

MiB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def integrity(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def get(proxy, url: str, **headers: str) -> httpx.Response:
    with proxy.client() as client:
        return client.get(url, headers=headers)


def test_a_second_client_is_streamed_from_the_store_with_or_without_the_header(origin, proxy):
    origin.add("/one.bin", size=3 * MiB)
    origin.behave("/one.bin", throttle=3 * MiB)
    url = origin.url("/one.bin")
    proxy.background(url)
    reg_id = proxy.api("GET", "/api/fetches?all=1").json()["ids"][0]
    proxy.wait_until(reg_id, lambda r: r["downloaded"] > 0)
    plain = get(proxy, url)
    marked = get(proxy, url, **{"Background-Fetch": "?1"})
    for response in (plain, marked):
        assert response.status_code == 200
        assert sha256(response.content) == origin.sha256("/one.bin")
    assert origin.count("/one.bin") == 1
    assert origin.body_bytes_sent("/one.bin") == 3 * MiB


def test_a_client_arriving_before_the_response_headers_waits_for_them(origin, proxy):
    origin.add("/slow.bin", size=MiB)
    origin.behave("/slow.bin", delay=1.5)
    proxy.background(origin.url("/slow.bin"), 'id="slow"')
    proxy.wait_for("slow", state="fetching")
    response = get(proxy, origin.url("/slow.bin"))
    assert sha256(response.content) == origin.sha256("/slow.bin")
    assert origin.count("/slow.bin") == 1


def test_concurrency_runs_so_many_at_once_and_queues_the_rest_in_order(origin, make_proxy):
    proxy = make_proxy("bgfetch_concurrency=2").start()
    names = ["q1", "q2", "q3", "q4"]
    for name in names:
        origin.add(f"/{name}", size=MiB // 2)
        origin.behave(f"/{name}", throttle=MiB // 4)
        proxy.background(origin.url(f"/{name}"), f'id="{name}"')
    proxy.wait_for("q2", state="fetching")
    assert [proxy.registration(n)["state"] for n in names] == ["fetching", "fetching", "pending", "pending"]
    for name in names:
        proxy.wait_for(name, result="success")
    assert [r.path for r in origin.requests] == [f"/{n}" for n in names]


def test_the_quota_counts_every_stored_body(origin, make_proxy):
    proxy = make_proxy("bgfetch_quota=1MB").start()
    origin.add("/a.bin", size=600_000)
    origin.add("/b.bin", size=600_000)
    origin.behave("/b.bin", throttle=MiB)
    proxy.background(origin.url("/a.bin"), 'id="a"')
    assert proxy.wait_for("a", state="done")["result"] == "success"
    proxy.background(origin.url("/b.bin"), 'id="b"')
    failed = proxy.wait_for("b", state="done")
    assert (failed["result"], failed["failureReason"], failed["downloaded"]) == ("failure", "quota-exceeded", 0)
    assert origin.body_bytes_sent("/b.bin") < 600_000  # refused on its Content-Length, not read through


def test_redirects_are_followed_and_the_final_status_decides(origin, proxy):
    origin.add("/new.bin", size=100_000)
    origin.behave("/old.bin", redirect_to="/new.bin")
    origin.behave("/moved.bin", redirect_to="/missing.bin")
    proxy.background(origin.url("/old.bin"), 'id="old"')
    proxy.background(origin.url("/moved.bin"), 'id="moved"')
    assert proxy.wait_for("old", state="done")["result"] == "success"
    assert proxy.wait_for("moved", state="done")["failureReason"] == "bad-status"
    origin.stop()
    assert sha256(get(proxy, origin.url("/old.bin")).content) == origin.sha256("/new.bin")


@pytest.fixture
def tls_origin():
    with Origin(tls=True) as server:
        server.add("/secure.bin", size=MiB)
        yield server


def mitmproxy_client(proxy) -> httpx.Client:
    """A client that trusts mitmproxy's CA, as any client of an intercepting proxy does."""
    context = ssl.create_default_context(cafile=str(proxy.workdir / "conf" / "mitmproxy-ca-cert.pem"))
    return proxy.client(verify=context)


def trusted_confdir(cert: Path, directory: Path) -> Path:
    """A directory of trusted certificates as OpenSSL looks them up: `<subject hash>.0`."""
    subject_hash = subprocess.run(
        ["openssl", "x509", "-subject_hash", "-noout", "-in", str(cert)], capture_output=True, text=True, check=True
    ).stdout.strip()
    directory.mkdir()
    shutil.copy(cert, directory / f"{subject_hash}.0")
    return directory


@pytest.mark.parametrize(
    "option", ["ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir", "ssl_insecure"]
)
def test_an_https_origin_with_its_own_certificate(tls_origin, make_proxy, tmp_path, option):
    value = {
        "ssl_verify_upstream_trusted_ca": lambda: tls_origin.cert_path,
        "ssl_verify_upstream_trusted_confdir": lambda: trusted_confdir(tls_origin.cert_path, tmp_path / "trusted"),
        "ssl_insecure": lambda: "true",
    }[option]()
    proxy = make_proxy(f"{option}={value}").start()
    url = tls_origin.url("/secure.bin")
    with mitmproxy_client(proxy) as client:
        response = client.get(url, headers={"Background-Fetch": 'id="tls"'})
        assert sha256(response.content) == tls_origin.sha256("/secure.bin")
        proxy.wait_for("tls", result="success")
        tls_origin.stop()
        assert sha256(client.get(url).content) == tls_origin.sha256("/secure.bin")
    assert tls_origin.count("/secure.bin") == 1


def test_an_untrusted_origin_certificate_fails_the_fetch(tls_origin, proxy):
    with mitmproxy_client(proxy) as client:
        response = client.get(tls_origin.url("/secure.bin"), headers={"Background-Fetch": 'id="bad-tls"'})
    assert response.status_code == 502
    failed = proxy.wait_for("bad-tls", state="done")
    assert failed["failureReason"] == "fetch-error" and "certificate" in failed["lastError"]


@contextlib.contextmanager
def plain_mitmdump(workdir, *options: str):
    """A second mitmdump without bgfetch, to stand for a company's upstream proxy; yields (port, log)."""
    port, log = free_port(), workdir / "upstream.log"
    args = [str(MITMDUMP), "-p", str(port), "--listen-host", "127.0.0.1", "--set", f"confdir={workdir / 'upstream-conf'}"]
    for option in options:
        args += ["--set", option]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def listening() -> bool:
        assert proc.poll() is None, log.read_text()
        return _listening(port)

    try:
        eventually(listening, 30, interval=0.1, what="the upstream proxy to listen", explain=lambda _: log.read_text())
        yield port, log
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@pytest.mark.parametrize("tls", [False, True])
def test_the_store_goes_through_mitmproxys_upstream_proxy(make_proxy, tmp_path, tls):
    with Origin(tls=tls) as origin:
        origin.add("/via.bin", size=MiB)
        tunnel = ["ignore_hosts=.*"] if tls else []  # HTTPS through the upstream proxy untouched
        with plain_mitmdump(tmp_path, "proxyauth=alice:secret", *tunnel) as (port, log):
            trust = [f"ssl_verify_upstream_trusted_ca={origin.cert_path}"] if tls else []
            proxy = make_proxy(f"mode=upstream:http://127.0.0.1:{port}", "upstream_auth=alice:secret", *trust).start()
            with mitmproxy_client(proxy) as client:
                response = client.get(origin.url("/via.bin"), headers={"Background-Fetch": 'id="via"'})
            assert sha256(response.content) == origin.sha256("/via.bin")
            proxy.wait_for("via", result="success")
            assert f"127.0.0.1:{origin.port}" in log.read_text()  # the store's request went through it
            store = _children(proxy.proc.pid)
            assert "-m store" in store and "secret" not in store  # the password went by stdin
        assert origin.count("/via.bin") == 1


def _children(pid: int) -> str:
    """The command lines of a process's children, unabridged."""
    return subprocess.run(["ps", "-ww", "--ppid", str(pid), "-o", "args="], capture_output=True, text=True).stdout


def test_a_body_fetched_with_credentials_is_served_only_with_the_same_ones(origin, proxy):
    origin.add("/private.bin", size=400_000)
    origin.behave("/private.bin", throttle=200_000)
    cookie = {"Cookie": "session=abc", "Authorization": "Bearer alice"}
    proxy.background(origin.url("/private.bin"), 'id="private"', cookie)
    with sqlite3.connect(f"file:{proxy.db}?mode=ro", uri=True) as conn:
        kept = json.loads(conn.execute("SELECT request_headers FROM records").fetchone()[0])
    assert ["Authorization", "Bearer alice"] in kept and ["Cookie", "session=abc"] in kept
    proxy.wait_for("private", result="success")
    with sqlite3.connect(f"file:{proxy.db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT request_headers, request_body, credential FROM records").fetchone()
    assert row[0] is None and row[1] is None and len(row[2]) == 64
    assert get(proxy, origin.url("/private.bin"), **cookie).content == origin.data("/private.bin")
    assert origin.count("/private.bin") == 1
    for others in ({}, {"Cookie": "session=abc"}, {"Cookie": "session=abc", "Authorization": "Bearer bob"}):
        get(proxy, origin.url("/private.bin"), **others)
    assert origin.count("/private.bin") == 4  # each of them went to the origin


def test_integrity_holds_the_body_back_until_it_is_verified(origin, proxy):
    origin.add("/checked.bin", size=2 * MiB)
    origin.behave("/checked.bin", throttle=MiB)
    header = f'id="checked", integrity="{integrity(origin.data("/checked.bin"))}"'
    proxy.background(origin.url("/checked.bin"), header)
    proxy.wait_until("checked", lambda r: r["downloaded"] > 0)
    get(proxy, origin.url("/checked.bin"))  # not verified yet: not served by the store
    assert origin.count("/checked.bin") == 2
    joined = get(proxy, origin.url("/checked.bin"), **{"Background-Fetch": header})
    assert proxy.registration("checked")["result"] == "success"
    assert sha256(joined.content) == origin.sha256("/checked.bin")
    origin.stop()
    assert sha256(get(proxy, origin.url("/checked.bin")).content) == origin.sha256("/checked.bin")


def test_a_body_that_fails_integrity_is_never_served(origin, proxy):
    origin.add("/forged.bin", size=MiB)
    header = f'id="forged", integrity="{integrity(b"something else")}"'
    response = get(proxy, origin.url("/forged.bin"), **{"Background-Fetch": header})
    assert response.status_code == 502 and response.json()["type"].endswith("fetch-error")
    assert proxy.wait_for("forged", state="done")["failureReason"] == "fetch-error"
    origin.stop()
    assert get(proxy, origin.url("/forged.bin")).status_code == 502  # nothing stored: the origin was asked
