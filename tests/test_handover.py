"""The routes the proxy hands flows to: no client reaches them, and a bad hand-over is a 400, never a 500.

Through a real proxy (with and without the token), then against the store's internal app
itself, holding its secret, with the hand-over headers missing or malformed.
"""

import asyncio
import json

import httpx
import pytest
import tornado.httpserver
import tornado.netutil

from store.proxyside import protocol
from store.web.app import make_app
from store.db.sqlite import SqliteStorage
from store.engine.service import Store
from tests.test_api import problem_of

INTERNAL_SECRET = "the-proxys-secret"
GOOD_SPEC = {"id": "ok", "title": "", "download_total": None, "respond": "accepted", "integrity": None, "revalidate": None,
             "segments": None}


@pytest.mark.parametrize("options", [(), ("bgfetch_token=t0ken",)])
def test_clients_never_reach_the_proxys_own_routes(make_proxy, options):
    proxy = make_proxy(*options).start()
    with proxy.client() as client:
        for method, path, extra in [
            ("GET", "/_bgfetch/fetch", {}),
            ("POST", "/_bgfetch/fetch", {"X-Bgfetch-Spec": json.dumps(GOOD_SPEC), "X-Bgfetch-Url": "http://127.0.0.1:1/"}),
            ("GET", "/_bgfetch/stored", {"X-Bgfetch-Record": "1"}),
            ("HEAD", "/_bgfetch/stored?x=1", {}),
            ("GET", "/_bgfetch/", {}),
        ]:
            response = client.request(method, "http://bgfetch.internal" + path, headers=extra)
            assert response.status_code == 404, (method, path, response.text)
            if method != "HEAD":
                assert response.json()["type"].endswith("/not-found") and "?" not in response.json()["detail"]
    assert proxy.api("GET", "/api/fetches?all=1", headers={"Authorization": "Bearer t0ken"}).json() == {"ids": []}
    assert "Traceback" not in proxy.log.read_text()


# Each: (route, hand-over headers) -> the 400 problem's detail must name this.
BAD_HANDOVERS = [
    (protocol.FETCH_PATH, {}, protocol.SPEC),
    (protocol.FETCH_PATH, {protocol.SPEC: json.dumps(GOOD_SPEC)}, protocol.URL),
    (protocol.FETCH_PATH, {protocol.SPEC: "{", protocol.URL: "http://127.0.0.1:1/"}, "not JSON"),
    (protocol.FETCH_PATH, {protocol.SPEC: "[]", protocol.URL: "http://127.0.0.1:1/"}, "must be a JSON object"),
    (protocol.FETCH_PATH, {protocol.SPEC: json.dumps({**GOOD_SPEC, "id": ".."}), protocol.URL: "http://127.0.0.1:1/"}, "id"),
    (protocol.FETCH_PATH, {protocol.SPEC: json.dumps({**GOOD_SPEC, "id": 7}), protocol.URL: "http://127.0.0.1:1/"}, "id"),
    (protocol.FETCH_PATH, {protocol.SPEC: json.dumps({**GOOD_SPEC, "respond": "later"}), protocol.URL: "http://127.0.0.1:1/"}, "field respond must be stream or accepted"),
    (protocol.FETCH_PATH, {protocol.SPEC: json.dumps({**GOOD_SPEC, "download_total": "9"}), protocol.URL: "http://127.0.0.1:1/"}, "field download_total must be"),
    (protocol.FETCH_PATH, {protocol.SPEC: json.dumps({**GOOD_SPEC, "revalidate": "often"}), protocol.URL: "http://127.0.0.1:1/"}, "field revalidate must be never"),
    (protocol.FETCH_PATH, {protocol.SPEC: json.dumps({**GOOD_SPEC, "extra": 1}), protocol.URL: "http://127.0.0.1:1/"}, "exactly the fields"),
    (protocol.STORED_PATH, {}, protocol.RECORD),
    (protocol.STORED_PATH, {protocol.RECORD: "abc"}, "record number"),
    (protocol.STORED_PATH, {protocol.RECORD: "-1"}, "record number"),
    (protocol.STORED_PATH, {protocol.RECORD: "9" * 5000}, "record number"),
]


def test_a_bad_hand_over_is_a_400_problem_naming_what_is_wrong(tmp_path):
    async def scenario():
        async with httpx.AsyncClient(timeout=10) as client:
            store = Store(SqliteStorage.open(str(tmp_path / "handover.sqlite3")), client)
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            app = make_app(store, secret=INTERNAL_SECRET, token=None, public_host="bgfetch.internal")
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
            try:
                for path, extra, named in BAD_HANDOVERS:
                    for method in ("GET", "POST"):
                        if path == protocol.STORED_PATH and method == "POST":
                            continue
                        sent = {protocol.SECRET: INTERNAL_SECRET, **extra}
                        response = await client.request(method, base + path, headers=sent)
                        problem = problem_of(response, 400)
                        assert problem["type"].endswith("/bad-handover") and named in problem["detail"], (path, extra)
                gone = await client.get(base + protocol.STORED_PATH, headers={protocol.SECRET: INTERNAL_SECRET, protocol.RECORD: "999"})
                assert problem_of(gone, 404)["type"].endswith("/not-found")
                assert store.ids(active_only=False) == []
            finally:
                server.stop()
                await store.close()

    asyncio.run(scenario())


def test_store_port_refuses_requests_without_the_secret(proxy):
    # the internal port is not published; the public one (the listen port) has no flow routes
    response = proxy.api("GET", "/_bgfetch/stored", headers={"X-Bgfetch-Record": "1"})
    assert response.status_code == 404
