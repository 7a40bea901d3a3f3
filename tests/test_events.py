"""Events: the EventBus's replay and throttling, `/api/events` read by a real client. The webhook that
delivers the final ones: test_webhook.py."""

import asyncio
import time
import json

import httpx
import tornado.httpserver
import tornado.netutil

from harness.poll import eventually, eventually_async
from store.engine import events
from store.web.api import events as api_events
from store.web.app import make_app
from store.engine.events import EventBus
from store.db.sqlite import SqliteStorage
from store.engine.service import Store
from tests.test_api import API

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
        assert abs(first - time.time_ns() // 1000) < 5_000_000  # ids are the time in µs: never repeated after a restart
        assert [e[0] for e in bus.log] == sorted({e[0] for e in bus.log})  # and grow, even within one µs
        replay = bus.subscribe(first)
        live_only = bus.subscribe()
        bus.publish("abort", "d")
        assert [(e[1], e[2]["id"]) for e in drain(replay)] == [("success", "b"), ("success", "c"), ("abort", "d")]
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
            await eventually_async(lambda: store.events.subscribers == 0, 2, interval=0.02,
                                   what="the subscription to go")
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
        eventually(lambda: proxy.registration("long")["downloaded"], what="the first bytes")
        proxy.api("POST", "/api/fetches/long/abort", json={})
        for stream in (first, second):
            aborted = read_events(stream.iter_lines(), lambda e: e["event"] == "abort")[-1]
            assert (aborted["data"]["failureReason"], aborted["data"]["downloaded"]) == ("aborted", 0)
