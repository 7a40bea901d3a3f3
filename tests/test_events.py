"""Events: the EventBus's replay and throttling, `/api/events` read by a real client, the webhook."""

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import tornado.httpserver
import tornado.netutil

from store.engine import events
from store.web.api import events as api_events
from store.web.app import make_app
from store.engine.events import EventBus
from store.db.sqlite import SqliteStorage
from store.engine.service import Store
from tests.test_api import API, wait_until

MiB = 1 << 20


# -- the bus ------------------------------------------------------------------


def make_bus() -> EventBus:
    return EventBus(lambda reg_id: {"id": reg_id})


def drain(queue: asyncio.Queue) -> list:
    found = []
    while not queue.empty():
        found.append(queue.get_nowait())
    return found


def test_a_subscriber_gets_what_it_missed_then_live_events():
    async def scenario():
        bus = make_bus()
        for reg_id in ("a", "b", "c"):
            bus.publish("success", reg_id)
        first = bus.log[0][0]
        assert [e[2]["id"] for e in bus.log] == ["a", "b", "c"]
        assert first > 1_600_000_000_000  # ids start at the store's start in ms: later ones never repeat them
        replay = bus.subscribe(first)
        live_only = bus.subscribe()
        bus.publish("abort", "d")
        assert [(e[0] - first, e[1], e[2]["id"]) for e in drain(replay)] == [(1, "success", "b"), (2, "success", "c"), (3, "abort", "d")]
        assert [e[2]["id"] for e in drain(live_only)] == ["d"]
        bus.close()
        assert replay.get_nowait() is None and live_only.get_nowait() is None

    asyncio.run(scenario())


def test_a_subscriber_that_falls_far_behind_is_ended_and_can_replay():
    async def scenario():
        bus = make_bus()
        slow = bus.subscribe()
        for n in range(events.KEEP + 2):
            bus.publish("progress", str(n))
        assert drain(slow) == [None]
        bus.publish("success", "later")
        assert slow.empty()  # no longer fed
        assert len(drain(bus.subscribe(bus.log[0][0]))) == events.KEEP - 1

    asyncio.run(scenario())


def test_progress_is_throttled_but_the_last_state_always_goes_out():
    async def scenario():
        bus = make_bus()
        seen = []
        bus.listeners.append(lambda *event: seen.append(event[1]))
        for _ in range(200):
            bus.progress("fast")
            await asyncio.sleep(0.001)
        await asyncio.sleep(events.PROGRESS_INTERVAL * 2)
        assert 1 < seen.count("progress") <= 2 + 0.4 / events.PROGRESS_INTERVAL * 2
        bus.progress("fast")
        bus.publish("success", "fast")  # a final event cancels the trailing progress
        await asyncio.sleep(events.PROGRESS_INTERVAL * 2)
        assert seen[-1] == "success"
        bus.close()

    asyncio.run(scenario())


# -- /api/events ----------------------------------------------------------------


def read_events(lines, until) -> list[dict]:
    """Parse server-sent events from `lines` until one makes `until(event)` true."""
    found, current = [], {}
    for line in lines:
        if line == "":
            if "event" in current:
                current["data"] = json.loads(current["data"])
                found.append(current)
                if until(current):
                    return found
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = value
    raise AssertionError(f"the stream ended after {found}")


def test_event_stream_through_the_proxy_and_replay_after_reconnect(origin, proxy):
    origin.add("/ep.mp3", size=2 * MiB)
    origin.behave("/ep.mp3", throttle=2 * MiB)
    origin.add("/gone", size=10)
    origin.behave("/gone", status=410)
    with proxy.client() as client, client.stream("GET", f"{API}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "text/event-stream"
        lines = stream.iter_lines()
        assert next(lines) == "retry: 2000"
        proxy.api("POST", "/api/fetches", json={"id": "ep", "title": "Ep", "requests": [origin.url("/ep.mp3")]})
        seen = read_events(lines, lambda e: e["event"] == "success")
        proxy.api("POST", "/api/fetches", json={"id": "gone", "requests": [origin.url("/gone")]})
        seen += read_events(lines, lambda e: e["event"] == "fail")
    assert {e["event"] for e in seen} == {"progress", "success", "fail"}
    ids = [int(e["id"]) for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    progress = [e["data"]["downloaded"] for e in seen if e["event"] == "progress" and e["data"]["id"] == "ep"]
    assert progress == sorted(progress) and any(0 < n < 2 * MiB for n in progress)
    assert [e["data"]["downloaded"] for e in seen if e["event"] == "success"] == [2 * MiB]
    assert [e["data"]["failureReason"] for e in seen if e["event"] == "fail"] == ["bad-status"]

    with httpx.stream("GET", proxy.api_url("/api/events"), headers={"Last-Event-ID": seen[0]["id"]}, timeout=10) as again:
        replayed = read_events(again.iter_lines(), lambda e: e["event"] == "fail")
    assert [(e["id"], e["event"]) for e in replayed] == [(e["id"], e["event"]) for e in seen[1:]]
    assert proxy.api("GET", "/api/events", headers={"Last-Event-ID": "soon"}).json()["field"] == "Last-Event-ID"


def test_a_stream_keeps_alive_and_ends_when_its_client_leaves_or_the_store_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(api_events, "KEEPALIVE_SECONDS", 0.1)

    async def scenario():
        async with httpx.AsyncClient(timeout=5) as client:
            store = Store(SqliteStorage.open(str(tmp_path / "events.sqlite3")), client)
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            server = tornado.httpserver.HTTPServer(make_app(store, secret=None, token=None, public_host="bgfetch.internal"))
            server.add_sockets(sockets)
            url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/api/events"
            async with client.stream("GET", url) as stream:
                lines = stream.aiter_lines()
                assert [await anext(lines) for _ in range(4)] == ["retry: 2000", "", ": keep-alive", ""]
                assert store.events.subscribers == 1
            for _ in range(100):
                if not store.events.subscribers:
                    break
                await asyncio.sleep(0.02)
            assert store.events.subscribers == 0  # the client left: its subscription is gone
            async with client.stream("GET", url) as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == "retry: 2000"
                await store.close()
                assert {line async for line in lines} <= {"", ": keep-alive"}  # then the stream ends
            server.stop()

    asyncio.run(scenario())


def test_abort_event_and_a_stream_per_client(origin, proxy):
    origin.add("/long", size=8 * MiB)
    origin.behave("/long", throttle=MiB)
    with (httpx.stream("GET", proxy.api_url("/api/events"), timeout=10) as first,
          httpx.stream("GET", proxy.api_url("/api/events"), timeout=10) as second):
        proxy.api("POST", "/api/fetches", json={"id": "long", "requests": [origin.url("/long")]})
        wait_until(lambda: proxy.registration("long")["downloaded"], what="the first bytes")
        proxy.api("POST", "/api/fetches/long/abort", json={})
        for stream in (first, second):
            aborted = read_events(stream.iter_lines(), lambda e: e["event"] == "abort")[-1]
            assert (aborted["data"]["failureReason"], aborted["data"]["downloaded"]) == ("aborted", 0)


# -- the webhook ---------------------------------------------------------------


class Hook:
    """A webhook receiver on 127.0.0.1 that answers `statuses` in turn (then 200) and keeps the bodies."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.received.append({"status": status, "content_type": self.headers["Content-Type"], **body})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_webhook_gets_each_final_event_and_retries(origin, make_proxy):
    hook = Hook(503, 502)
    try:
        proxy = make_proxy(f"bgfetch_webhook={hook.url}").start()
        origin.add("/ok", size=300_000)
        origin.add("/missing", size=1)
        origin.behave("/missing", status=404)
        origin.add("/slow", size=8 * MiB)
        origin.behave("/slow", throttle=MiB)
        for reg_id, path in [("ok", "/ok"), ("missing", "/missing"), ("slow", "/slow")]:
            proxy.api("POST", "/api/fetches", json={"id": reg_id, "requests": [origin.url(path)]})
        proxy.wait_for("ok", result="success")
        proxy.wait_for("missing", result="failure")
        proxy.api("POST", "/api/fetches/slow/abort", json={})
        taken = wait_until(lambda: [r for r in hook.received if r["status"] == 200] if len(hook.received) >= 5 else None,
                           what="five deliveries")
    finally:
        hook.close()
    assert sorted((r["type"], r["registration"]["id"]) for r in taken) == [("abort", "slow"), ("fail", "missing"), ("success", "ok")]
    assert all(r["content_type"] == "application/json" and isinstance(r["id"], int) for r in hook.received)
    first = hook.received[0]
    assert [(r["status"], r["id"]) for r in hook.received[:3]] == [(503, first["id"]), (502, first["id"]), (200, first["id"])]
    assert next(r for r in taken if r["type"] == "fail")["registration"]["failureReason"] == "bad-status"


def test_a_webhook_that_never_answers_slows_no_transfer(origin, make_proxy):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        proxy = make_proxy(f"bgfetch_webhook=http://127.0.0.1:{silent.getsockname()[1]}/").start()
        origin.add("/f.bin", size=MiB)
        started = time.monotonic()
        for n in range(5):
            proxy.api("POST", "/api/fetches", json={"id": f"f{n}", "requests": [origin.url("/f.bin")]})
            proxy.wait_for(f"f{n}", result="success")
        assert time.monotonic() - started < 9  # one delivery attempt alone waits 10 s
        proxy.stop()
