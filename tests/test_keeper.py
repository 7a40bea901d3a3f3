"""store/proxyside/keeper.py: a flood of HTTP and HTTPS requests from mitmdump's first moment, a store
killed with `kill -9` (started again, serving what it had), and a store started again because an option
changed: every request gets a proper answer (passthrough, the body, or 503 with Retry-After), never an
addon error, a dead proxy or a bare 502."""

import asyncio
import inspect
import os
import signal
import ssl
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from mitmproxy import certs
from mitmproxy.addons import proxyserver, tlsconfig, upstream_auth
from mitmproxy.test import taddons, tflow

from addon import BackgroundFetch
from harness.origin import Origin
from harness.poll import eventually, eventually_async
from harness.proxy import Proxy
from store.proxyside import keeper


FLOOD_SECONDS = 4.0
MiB = 1 << 20


def _proper(response: httpx.Response, bodies: tuple[bytes, ...]) -> str | None:
    """What is wrong with an answer, or None: a body we expect, a 202, or a 503 with Retry-After."""
    if response.status_code == 503:
        if "retry-after" not in response.headers:
            return "503 without Retry-After"
        if response.headers.get("content-type") != "application/problem+json":
            return f"503 of {response.headers.get('content-type')}"
        return None
    if response.status_code == 202 and response.json().get("id"):
        return None
    if response.status_code == 200 and (response.content in bodies or response.headers.get("content-type") == "application/json"):
        return None
    return f"{response.status_code} {response.content[:200]!r}"


def test_a_flood_from_the_first_moment_gets_proper_answers_and_the_proxy_stays_up(origin, tmp_path):
    with Origin(tls=True) as secure:
        for server in (origin, secure):
            server.add("/plain.txt", data=b"plain")
            for n in range(200):
                server.add(f"/bg/{n}.bin", data=b"background %d" % n)
        bodies = (b"plain", *(b"background %d" % n for n in range(200)))
        # mitmproxy's default confdir: its TLS set-up is then made only when it is told it runs
        proxy = Proxy(tmp_path, f"ssl_verify_upstream_trusted_ca={secure.cert_path}", home=tmp_path / "home")
        # mitmproxy's CA, made beforehand so that the clients trust it from their first request
        certs.CertStore.from_store(proxy.confdir, "mitmproxy", 2048)
        trust = ssl.create_default_context(cafile=proxy.confdir / "mitmproxy-ca-cert.pem")
        kinds = ["http", "http header", "api", "https", "https header"] * 2
        clients = [httpx.Client(proxy=proxy.url, verify=trust, timeout=20) for _ in kinds]
        answers: Counter = Counter()
        wrong: list[str] = []
        started: list[tuple[float, str]] = []
        lock = threading.Lock()

        def flood(kind: str, client: httpx.Client, n: int) -> None:
            end = None  # FLOOD_SECONDS after the port first accepts this client
            while end is None or time.monotonic() < end:
                n = (n + 1) % 200
                server = secure if kind.startswith("https") else origin
                url, headers = server.url("/plain.txt"), {}
                if kind.endswith("header"):
                    url, headers = server.url(f"/bg/{n}.bin"), {"Background-Fetch": "?1" if n % 2 else "respond=accepted"}
                elif kind == "api":
                    url = "http://bgfetch.internal/api/fetches"
                moment = time.monotonic()
                try:
                    problem = _proper(client.get(url, headers=headers), bodies)
                except httpx.ConnectError as exc:
                    if end is None and "refused" in str(exc).lower():
                        time.sleep(0.001)  # mitmdump does not listen yet
                        continue
                    problem = f"{type(exc).__name__}: {exc}"
                except Exception as exc:  # noqa: BLE001 - every failure is one to report
                    problem = f"{type(exc).__name__}: {exc}"
                end = end or moment + FLOOD_SECONDS
                with lock:
                    started.append((moment, kind))
                    answers[kind] += 1
                    if problem:
                        wrong.append(f"{kind} {url}: {problem}")

        threads = [threading.Thread(target=flood, args=(kind, client, 20 * i)) for i, (kind, client) in enumerate(zip(kinds, clients))]

        def answered_at() -> float | None:
            try:
                httpx.get(proxy.api_url("/api/fetches"), timeout=1)
            except httpx.TransportError:
                return None
            return time.monotonic()

        proxy.spawn()
        try:
            for thread in threads:
                thread.start()
            try:
                ready = eventually(answered_at, 60, interval=0.01, what="the store to get ready")
            finally:
                for thread in threads:
                    thread.join(90)
            assert proxy.proc.poll() is None, "mitmdump exited"
            log = proxy.log.read_text()
            for sign in ("Addon error", "Traceback", "Errors logged during startup", "No TLS context"):
                assert sign not in log, log[-3000:]
            assert not wrong, "\n".join(wrong[:20])
            early = Counter(kind for moment, kind in started if moment < ready)
            assert set(early) == set(kinds), f"only {early} were sent before the store was ready"
            assert all(answers[kind] >= 4 for kind in kinds), answers
        finally:
            for client in clients:
                client.close()
            proxy.stop()


def _store_pid(proxy: Proxy) -> int | None:
    try:
        return proxy.store_pid()
    except AssertionError:  # between two stores
        return None


def _dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_store_killed_with_kill_9_gives_503_or_the_body_never_502(origin, proxy):
    origin.add("/kept.bin", size=100_000)
    proxy.background(origin.url("/kept.bin"), 'id="kept"')
    proxy.wait_for("kept", result="success")
    body = origin.data("/kept.bin")
    origin.stop()  # from now on only the store can answer for this URL
    for round in range(2):
        killed = proxy.store_pid()
        os.kill(killed, signal.SIGKILL)
        eventually(lambda: _dead(killed), 5, interval=0.001, what="the store to die")
        statuses: Counter = Counter()
        after_restart = 0
        with proxy.client() as client:

            def ask() -> int:
                """Three requests, each answered properly; how many rounds the new store has answered."""
                nonlocal after_restart
                for response in (
                    client.get(origin.url("/kept.bin")),
                    client.get("http://bgfetch.internal/api/fetches/kept"),
                    client.get(origin.url(f"/new-{round}.bin"), headers={"Background-Fetch": "respond=accepted"}),
                ):
                    statuses[response.status_code] += 1
                    if response.status_code == 503:
                        assert response.headers["retry-after"] and response.json()["status"] == 503
                    else:
                        assert response.status_code in (200, 202), (response.status_code, response.text[:300])
                    if response.request.url == origin.url("/kept.bin") and response.status_code == 200:
                        assert response.content == body
                after_restart += statuses[200] > 0 and _store_pid(proxy) not in (None, killed)
                return after_restart

            eventually(ask, 30, until=lambda rounds: rounds >= 5, interval=0, what="the store to come back",
                       explain=lambda _: statuses)
        assert 502 not in statuses
        assert "store process exited" in proxy.log.read_text()


def test_a_store_option_changed_at_run_time_makes_requests_wait_then_go_or_get_503(origin, tmp_path, monkeypatch):
    origin.add("/x.bin", size=10)

    async def scenario():
        addon = BackgroundFetch()
        with taddons.context(addon, proxyserver.Proxyserver(), tlsconfig.TlsConfig(), upstream_auth.UpstreamAuth()) as tctx:
            tctx.configure(addon, confdir=str(tmp_path), bgfetch_db=str(tmp_path / "db.sqlite3"))
            addon.running()
            try:
                await eventually_async(lambda: addon.keeper.ready, 20, interval=0.02, what="the store to be ready")
                before = addon.keeper.port
                tctx.configure(addon, bgfetch_concurrency=2)  # the store starts again
                assert not addon.keeper.ready
                flow = tflow.tflow()
                flow.request.url = origin.url("/x.bin")
                flow.request.headers["Background-Fetch"] = "respond=accepted"
                waiting = addon.requestheaders(flow)
                assert inspect.isawaitable(waiting) and flow.response is None
                await waiting
                assert flow.response is None and flow.request.port == addon.keeper.port != before

                tctx.configure(addon, bgfetch_concurrency=3)
                monkeypatch.setattr(keeper, "READY_WAIT", 0.001)
                flow = tflow.tflow()
                flow.request.url = origin.url("/x.bin")
                flow.request.headers["Background-Fetch"] = "respond=accepted"
                await addon.requestheaders(flow)
                assert flow.response.status_code == 503 and flow.response.headers["Retry-After"] == "2"
                assert flow.response.headers["Content-Type"] == "application/problem+json"

                plain = tflow.tflow()
                plain.request.url = origin.url("/never-stored")
                assert addon.requestheaders(plain) is None  # the lookup stays: nothing to wait for
            finally:
                await addon.done()

    asyncio.run(scenario())


def test_a_store_that_does_not_start_with_mitmdump_stops_it_with_the_reason(tmp_path):
    proxy = Proxy(tmp_path)
    proxy.db = tmp_path / "missing" / "bgfetch.sqlite3"  # in a directory that is not there
    try:
        with pytest.raises(RuntimeError, match="mitmdump exited 1"):
            proxy.start()
    finally:
        proxy.stop()
    log = proxy.log.read_text()
    assert "FileNotFoundError" in log and str(proxy.db) in log and "mitmproxy stops" in log, log
    assert not proxy.store_running


def test_a_store_that_dies_is_started_again_and_serves_what_it_had(origin, proxy):
    origin.add("/kept.bin", size=MiB)
    with proxy.client() as client:
        client.get(origin.url("/kept.bin"), headers={"Background-Fetch": 'id="kept"'})
    proxy.wait_for("kept", result="success")
    first = proxy.store_pid()
    os.kill(first, signal.SIGKILL)

    def started_again() -> bool:
        try:
            return _store_pid(proxy) not in (None, first) and proxy.api("GET", "/api/fetches/kept").status_code == 200
        except httpx.TransportError:  # between two stores
            return False

    eventually(started_again, 30, interval=0.1, what="the store to be started again",
               explain=lambda _: proxy.log.read_text()[-2000:])
    assert "store process exited" in proxy.log.read_text()
    origin.stop()
    with proxy.client() as client:
        assert client.get(origin.url("/kept.bin")).content == origin.data("/kept.bin")
