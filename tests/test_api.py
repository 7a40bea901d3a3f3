"""End to end: every call of the control API through a real mitmdump, its error codes included."""

import http.client
import sqlite3
import time

import httpx

from harness.origin import NOTHING_LISTENS as DEAD
from harness.poll import eventually
from store.db import schema

API = "http://bgfetch.internal/api"
MiB = 1 << 20


def steady(read, interval: float = 0.5, timeout: float = 10):
    """The value of `read()` once two readings `interval` apart agree."""
    readings = [read()]

    def last_two() -> list:
        time.sleep(interval)
        readings.append(read())
        return readings[-2:]

    return eventually(last_two, timeout, until=lambda pair: pair[0] == pair[1], interval=0,
                      what="the value to settle")[1]


def problem_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_a_podcast_and_its_cover_are_one_registration(origin, proxy):
    origin.add("/ep1.mp3", size=3 * MiB, content_type="audio/mpeg")
    origin.add("/ep1.jpg", size=40_000, content_type="image/jpeg")
    with proxy.client() as client:
        created = client.post(f"{API}/fetches", json={
            "id": "ep1", "title": "Episode 1", "icons": [{"src": "/ep1.jpg", "sizes": "64x64"}],
            "downloadTotal": 4 * MiB,
            "requests": [origin.url("/ep1.mp3"), {"url": origin.url("/ep1.jpg"), "headers": {"Accept": "image/*"}}],
        })
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/api/fetches/ep1"
        body = created.json()
        assert (body["id"], body["title"], body["records"], body["downloadTotal"]) == ("ep1", "Episode 1", 2, 4 * MiB)
        assert body["icons"] == [{"src": "/ep1.jpg", "sizes": "64x64"}]
        done = proxy.wait_for("ep1", result="success")
        assert done["downloaded"] == 3 * MiB + 40_000
        assert client.get(f"{API}/fetches").json() == {"ids": []}
        assert client.get(f"{API}/fetches", params={"all": "1"}).json() == {"ids": ["ep1"]}

        found = client.get(f"{API}/fetches/ep1/records").json()["records"]
        assert [(r["index"], r["request"]["url"], r["stored"], r["complete"]) for r in found] == [
            (0, origin.url("/ep1.mp3"), 3 * MiB, True), (1, origin.url("/ep1.jpg"), 40_000, True),
        ]
        assert found[1]["response"]["status"] == 200 and found[1]["response"]["size"] == 40_000
        assert ["content-type", "image/jpeg"] in found[1]["response"]["headers"]
        assert origin.requests[-1].headers["Accept"] == "image/*"

        cover = client.get("http://bgfetch.internal" + found[1]["bodyUrl"])
        assert cover.content == origin.data("/ep1.jpg") and cover.headers["content-type"] == "image/jpeg"
        part = client.get(f"{API}/fetches/ep1/records/0/body", headers={"Range": "bytes=100-199"})
        assert (part.status_code, part.content) == (206, origin.data("/ep1.mp3")[100:200])
        assert part.headers["content-range"] == f"bytes 100-199/{3 * MiB}"
        assert client.get(f"{API}/fetches/ep1/records/2/body").status_code == 404
        assert client.get(f"{API}/fetches/ep1/records/99999999999999999999/body").status_code == 404


def test_one_failing_request_fails_the_whole_registration_and_keeps_its_records(origin, proxy):
    origin.add("/ep2.mp3", size=MiB)
    origin.add("/ep2.jpg", size=10)
    origin.behave("/ep2.jpg", status=404)
    created = proxy.api("POST", "/api/fetches", json={"id": "ep2", "requests": [origin.url("/ep2.mp3"), origin.url("/ep2.jpg")]})
    assert created.status_code == 201
    failed = proxy.wait_for("ep2", result="failure")
    assert (failed["failureReason"], failed["downloaded"], failed["recordsAvailable"]) == ("bad-status", MiB, True)
    found = proxy.api("GET", "/api/fetches/ep2/records").json()["records"]
    assert [(r["response"]["status"], r["stored"], r["complete"]) for r in found] == [(200, MiB, True), (404, 0, False)]
    assert proxy.api("GET", "/api/fetches/ep2/records/0/body").content == origin.data("/ep2.mp3")
    not_ok = proxy.api("GET", "/api/fetches/ep2/records/1/body")
    assert (not_ok.status_code, not_ok.content, not_ok.headers["content-disposition"][:10]) == (200, b"", "attachment")
    with proxy.client() as client:  # nothing of it is served in place of the origin
        assert client.get(origin.url("/ep2.mp3")).content == origin.data("/ep2.mp3")
    assert origin.count("/ep2.mp3") == 2


BAD_FETCHES = [
    ({"requests": [f"{DEAD}/a"]}, "id"),
    ({"id": "", "requests": [f"{DEAD}/a"]}, "id"),
    ({"id": "a\nb", "requests": [f"{DEAD}/a"]}, "id"),
    ({"id": "x"}, "requests"),
    ({"id": "x", "requests": []}, "requests"),
    ({"id": "x", "requests": [f"{DEAD}/a", "file:///etc/passwd"]}, "requests[1].url"),
    ({"id": "x", "requests": [f"{DEAD}/a", {"url": "http://127.0.0.1:99999/"}]}, "requests[1].url"),
    ({"id": "x", "requests": [{"url": f"{DEAD}/a", "method": "TRACE"}]}, "requests[0].method"),
    ({"id": "x", "requests": [{"url": f"{DEAD}/a", "body": "data"}]}, "requests[0].body"),
    ({"id": "x", "requests": [{"url": f"{DEAD}/a", "headers": {"X-A": "1\r\nX-B: 2"}}]}, "requests[0].headers.X-A"),
    ({"id": "x", "requests": [{"url": f"{DEAD}/a", "integrity": "md5-abc"}]}, "requests[0].integrity"),
    ({"id": "x", "requests": [{"url": f"{DEAD}/a", "colour": "red"}]}, "requests[0].colour"),
    ({"id": "x", "requests": [f"{DEAD}/a", "http://127.0.0.1:587/a"]}, "requests[1].url"),
    ({"id": "x", "requests": [f"{DEAD}/a"], "downloadTotal": -1}, "downloadTotal"),
    ({"id": "x", "requests": [f"{DEAD}/a"], "downloadTotal": 2**64}, "downloadTotal"),
    ({"id": "x", "requests": [f"{DEAD}/a"], "title": 5}, "title"),
    ({"id": "x", "requests": [f"{DEAD}/a"], "icons": [{"sizes": "1x1"}]}, "icons[0].src"),
    ([1, 2], ""),
]


def test_a_bad_fetch_is_refused_naming_the_field(proxy):
    for body, field in BAD_FETCHES:
        problem = problem_of(proxy.api("POST", "/api/fetches", json=body), 400)
        assert problem["field"] == field, body
        assert field in problem["detail"]
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": []}


def test_conflicts_wrong_media_types_and_unknown_ids(origin, proxy):
    origin.add("/slow.bin", size=4 * MiB)
    origin.behave("/slow.bin", throttle=MiB)
    start = {"id": "slow", "requests": [origin.url("/slow.bin")]}
    with proxy.client() as client:
        assert client.post(f"{API}/fetches", json=start).status_code == 201
        assert problem_of(client.post(f"{API}/fetches", json=start), 409)["field"] == "id"
        for broken in (b"{", b'{"id": "\\ud800", "requests": ["http://127.0.0.1:2/"]}', b"\xff"):
            assert problem_of(client.post(f"{API}/fetches", content=broken, headers={"Content-Type": "application/json"}), 400)["field"] == ""
        for method, path in [("POST", "/fetches"), ("POST", "/fetches/slow/abort"), ("PATCH", "/fetches/slow")]:
            form = client.request(method, API + path, data={"id": "forged", "title": "forged"})
            assert problem_of(form, 415)["type"].endswith("/unsupported-media-type"), (method, path)
        assert client.get(f"{API}/fetches/slow").json()["result"] == ""  # the form post aborted nothing
        assert client.get(f"{API}/fetches", params={"all": "yes"}).json()["field"] == "all"
        for method, path in [("GET", "/fetches/nope"), ("PATCH", "/fetches/nope"), ("DELETE", "/fetches/nope"),
                             ("POST", "/fetches/nope/abort"), ("GET", "/fetches/nope/records"),
                             ("GET", "/fetches/nope/records/0/body")]:
            assert problem_of(client.request(method, API + path, json={}), 404)["status"] == 404, (method, path)
        not_allowed = client.put(f"{API}/fetches/slow", json={})
        assert not_allowed.status_code == 405 and not_allowed.headers["allow"] == "GET, PATCH, DELETE"
        assert client.get(f"{API}/fetches", params={"all": "1"}).json() == {"ids": ["slow"]}


def test_abort_mid_transfer_stops_it_and_discards_the_bytes(origin, proxy):
    origin.add("/iso", size=8 * MiB)
    origin.behave("/iso", throttle=MiB)
    proxy.api("POST", "/api/fetches", json={"id": "iso", "requests": [origin.url("/iso")]})
    eventually(lambda: proxy.registration("iso")["downloaded"] > 0, what="the first bytes")
    with proxy.client() as client:
        aborted = client.post(f"{API}/fetches/iso/abort", json={})
        assert aborted.status_code == 200, aborted.text
        assert (aborted.json()["result"], aborted.json()["failureReason"]) == ("failure", "aborted")
        assert aborted.json()["downloaded"] == 0 and aborted.json()["state"] == "done"
        again = problem_of(client.post(f"{API}/fetches/iso/abort", json={}), 409)
        assert again["registration"]["failureReason"] == "aborted"
        assert problem_of(client.get(f"{API}/fetches/iso/records/0/body"), 410)["type"].endswith("/record-incomplete")
        assert client.post(f"{API}/fetches/iso/abort", json={"now": True}).status_code == 400
    sent = steady(lambda: origin.body_bytes_sent("/iso"))
    assert sent < 8 * MiB
    assert proxy.registration("iso")["downloaded"] == 0
    db = schema.connect(str(proxy.db), readonly=True)
    assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0
    db.close()


def test_update_ui_and_new_credentials_for_a_paused_fetch(origin, proxy):
    origin.add("/done.bin", size=10)
    origin.add("/fresh.bin", size=200_000)
    proxy.api("POST", "/api/fetches", json={"id": "done", "requests": [origin.url("/done.bin")]})
    proxy.wait_for("done", result="success")
    with proxy.client() as client:
        patched = client.patch(f"{API}/fetches/done", json={"title": "New title", "icons": [{"src": "/i.png"}]})
        assert patched.status_code == 200
        assert (patched.json()["title"], patched.json()["icons"]) == ("New title", [{"src": "/i.png"}])
        assert client.get(f"{API}/fetches/done").json()["title"] == "New title"
        not_paused = client.patch(f"{API}/fetches/done", json={"records": [{"index": 0, "headers": {"A": "b"}}]})
        assert problem_of(not_paused, 409)["field"] == "records"
        assert problem_of(client.patch(f"{API}/fetches/done", json={"records": [{"index": 1}]}), 400)["field"] == "records[0].index"
        bad = client.patch(f"{API}/fetches/done", json={"records": [{"index": 0, "url": "nope"}]})
        assert problem_of(bad, 400)["field"] == "records[0].url"

    gone = f"{DEAD}/expired.bin"  # nothing listens: the fetch pauses
    proxy.api("POST", "/api/fetches", json={"id": "signed", "requests": [
        {"url": gone, "headers": {"Authorization": "Bearer old", "X-Keep": "yes", "Cookie": "a=1"}}]})
    proxy.wait_for("signed", state="paused")
    change = {"records": [{"index": 0, "url": origin.url("/fresh.bin"),
                           "headers": {"authorization": "Bearer new", "Cookie": None}}]}
    response = eventually(lambda: proxy.api("PATCH", "/api/fetches/signed", json=change),
                          until=lambda r: r.status_code == 200, what="a PATCH while paused", explain=lambda r: r.text)
    assert response.json()["id"] == "signed"
    proxy.wait_for("signed", result="success")
    seen = origin.requests[-1]
    assert (seen.path, seen.headers["Authorization"], seen.headers["X-Keep"], seen.headers["Cookie"]) == (
        "/fresh.bin", "Bearer new", "yes", None)
    assert proxy.api("GET", "/api/fetches/signed/records").json()["records"][0]["request"]["url"] == origin.url("/fresh.bin")


def test_records_follow_match_all_rules(origin, proxy):
    origin.add("/feed", size=100)
    origin.add("/img.png", size=100)
    proxy.api("POST", "/api/fetches", json={"id": "m", "requests": [
        origin.url("/feed?page=1"), origin.url("/feed?page=2"), {"url": origin.url("/img.png"), "method": "post", "body": "x"}]})
    proxy.wait_for("m", result="success")

    def indexes(**params) -> list[int]:
        response = proxy.api("GET", "/api/fetches/m/records", params=params)
        assert response.status_code == 200, response.text
        return [r["index"] for r in response.json()["records"]]

    assert indexes() == [0, 1, 2]
    assert indexes(url=origin.url("/feed?page=2")) == [1]
    assert indexes(url=origin.url("/feed?page=3")) == []
    assert indexes(url=origin.url("/feed?page=3#x"), ignoreSearch="1") == [0, 1]
    assert indexes(url=origin.url("/img.png")) == []  # a GET query matches GET records only, unless ignoreMethod
    assert indexes(url=origin.url("/img.png"), ignoreMethod="1") == [2]
    assert indexes(url=origin.url("/img.png"), method="POST") == []
    assert indexes(url=origin.url("/img.png"), method="POST", ignoreMethod="1") == [2]
    assert problem_of(proxy.api("GET", "/api/fetches/m/records", params={"url": "relative"}), 400)["field"] == "url"
    assert problem_of(proxy.api("GET", "/api/fetches/m/records", params={"ignoreSearch": "true"}), 400)["field"] == "ignoreSearch"
    assert origin.requests[-1].method == "POST" and origin.requests[-1].body == b"x"


def test_delete_removes_records_bodies_and_their_space(origin, proxy):
    origin.add("/big.bin", size=24 * MiB)
    origin.add("/live.bin", size=8 * MiB)
    origin.behave("/live.bin", throttle=MiB)
    proxy.api("POST", "/api/fetches", json={"id": "big", "requests": [origin.url("/big.bin")]})
    proxy.wait_for("big", result="success")

    def pages() -> int:  # of the database and its bodies file
        db = schema.connect(str(proxy.db), readonly=True)
        count = sum(db.execute(f"PRAGMA {name}.page_count").fetchone()[0] * db.execute(f"PRAGMA {name}.page_size").fetchone()[0]
                    for name in ("main", schema.BODIES))
        db.close()
        return count

    full = pages()
    assert full > 24 * MiB
    with proxy.client() as client:
        assert client.delete(f"{API}/fetches/big").status_code == 204
        assert client.get(f"{API}/fetches/big").status_code == 404
        assert client.get(f"{API}/fetches/big/records/0/body").status_code == 404
        assert client.get(origin.url("/big.bin")).content == origin.data("/big.bin")  # from the origin again
        assert origin.count("/big.bin") == 2
        assert steady(pages) < 4 * MiB

        client.post(f"{API}/fetches", json={"id": "live", "requests": [origin.url("/live.bin")]})
        eventually(lambda: proxy.registration("live")["downloaded"] > 0, what="the first bytes")
        assert client.delete(f"{API}/fetches/live").status_code == 204  # an active one is aborted first
        assert client.get(f"{API}/fetches/live").status_code == 404
        assert client.get(f"{API}/fetches", params={"all": "1"}).json() == {"ids": []}
    assert steady(lambda: origin.body_bytes_sent("/live.bin")) < 8 * MiB


def test_a_refused_call_keeps_its_connection(make_proxy):
    """A refusal (401, 403, 421) answered before the body was read would close the connection,
    and mitmproxy, reusing it for the client's next request, answers that one 502."""
    proxy = make_proxy("bgfetch_token=s3cret").start()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.listen_port, timeout=10)
    try:
        for method, path, body in [("GET", "/api/fetches", None), ("DELETE", "/api/fetches/x", None),
                                   ("POST", "/api/fetches", b"{}"), ("GET", "/api/fetches/x/records/0/body", None)]:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            answer = conn.getresponse()
            assert answer.status == 401 and answer.read()
            sock = conn.sock
            time.sleep(0.2)  # a close would have arrived by now
            conn.request("GET", "/api/fetches", headers={"Authorization": "Bearer s3cret"})
            answer = conn.getresponse()
            assert conn.sock is sock and answer.status == 200 and answer.read(), (method, path)
    finally:
        conn.close()


def test_token_is_required_on_every_port_and_compared_exactly(origin, make_proxy):
    proxy = make_proxy("bgfetch_token=s3cret").start()
    origin.add("/t.bin", size=1000)
    right = {"Authorization": "Bearer s3cret"}
    for url in (proxy.api_url("/api/fetches"), f"{API}/fetches", f"{API}/openapi.json", f"{API}/fetches/x/records/0/body"):
        with proxy.client() as client:
            for wrong in ({}, {"Authorization": "Bearer s3cre"}, {"Authorization": "Bearer s3cret2"}, {"Authorization": "s3cret"}):
                refused = client.get(url, headers=wrong)
                assert problem_of(refused, 401)["type"].endswith("/unauthorized"), (url, wrong)
                assert refused.headers["www-authenticate"] == 'Bearer realm="bgfetch"'
            assert client.get(url, headers=right).status_code in (200, 404)
    with proxy.client() as client:
        assert client.post(f"{API}/fetches", json={"id": "t", "requests": [origin.url("/t.bin")]}).status_code == 401
        assert client.get(f"{API}/fetches", params={"all": "1"}, headers=right).json() == {"ids": []}
        # a proxied background fetch is the client's request, not an API call: no token needed
        assert client.get(origin.url("/t.bin"), headers={"Background-Fetch": 'id="t"'}).content == origin.data("/t.bin")
        assert client.get(f"{API}/fetches/t", headers=right).json()["id"] == "t"


def test_listen_port_answers_only_local_host_names(proxy):
    assert proxy.api("GET", "/api/fetches", headers={"Host": "localhost"}).status_code == 200
    assert proxy.api("GET", "/api/fetches", headers={"Host": "bgfetch.internal"}).status_code == 200
    rebound = proxy.api("GET", "/api/fetches", headers={"Host": "evil.example:8080"})
    assert problem_of(rebound, 421)["type"].endswith("/misdirected-request")


def test_api_through_the_proxy_lists_ids(origin, proxy):
    origin.add("/one.bin", size=10)
    with proxy.client() as client:
        client.get(origin.url("/one.bin"), headers={"Background-Fetch": 'id="one"'})
        proxy.wait_for("one", result="success")
        assert client.get("http://bgfetch.internal/api/fetches").json() == {"ids": []}
        assert client.get("http://bgfetch.internal/api/fetches?all=1").json() == {"ids": ["one"]}
        missing = client.get("http://bgfetch.internal/api/fetches/nope")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
