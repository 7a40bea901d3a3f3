"""The webhook (store/engine/webhook.py), through a real mitmdump: each final event delivered, retried
on a 5xx (and counted in /metrics), and a receiver that never answers slows no transfer."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.metrics import Scrape
from harness.poll import eventually

MiB = 1 << 20


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
        taken = eventually(lambda: [r for r in hook.received if r["status"] == 200] if len(hook.received) >= 5 else None,
                           what="five deliveries")
        counted = eventually(lambda: Scrape(proxy.api("GET", "/metrics").text), what="three deliveries counted",
                             until=lambda c: c("bgfetch_webhook_deliveries_total", outcome="delivered") == 3)
    finally:
        hook.close()
    assert sorted((r["type"], r["registration"]["id"]) for r in taken) == [("abort", "slow"), ("fail", "missing"), ("success", "ok")]
    assert all(r["content_type"] == "application/json" and isinstance(r["id"], int) for r in hook.received)
    first = hook.received[0]
    assert [(r["status"], r["id"]) for r in hook.received[:3]] == [(503, first["id"]), (502, first["id"]), (200, first["id"])]
    assert next(r for r in taken if r["type"] == "fail")["registration"]["failureReason"] == "bad-status"
    assert counted("bgfetch_webhook_deliveries_total", outcome="failed") == 0
    assert counted("bgfetch_webhook_posts_total") == 5


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
