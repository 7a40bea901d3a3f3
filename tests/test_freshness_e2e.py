"""End to end, through a real mitmdump with a real origin and curl/httpx: a stored response keeps
the origin's Date and gets Age, answers clients' conditional requests with 304 and HEAD without
a body; it is checked with its origin when stale (store/engine/freshness.py decides)."""

import email.utils
import hashlib
import time

from harness.proxy import curl

DAY = 86400


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetched(proxy, origin, path: str, reg_id: str, **headers: str):
    """A background fetch of `path`, streamed to this client; its response once stored."""
    with proxy.client() as client:
        response = client.get(origin.url(path), headers={"Background-Fetch": f'id="{reg_id}"', **headers})
    assert response.status_code == 200, response.text
    proxy.wait_for(reg_id, result="success")
    return response


def test_a_stored_response_keeps_the_origin_date_and_gets_an_age(origin, proxy):
    origin.add("/old.bin", size=200_000, modified_ago=30 * DAY)
    first = fetched(proxy, origin, "/old.bin", "old")
    date = first.headers["date"]
    time.sleep(2.1)
    origin.stop()
    with proxy.client() as client:
        again = client.get(origin.url("/old.bin"))
    assert again.status_code == 200 and sha256(again.content) == origin.sha256("/old.bin")
    assert again.headers["date"] == date  # the origin's, not the time it was served
    assert again.headers.get_list("date") == [date]
    age = int(again.headers["age"])
    assert 2 <= age <= 60
    assert abs(time.time() - age - email.utils.parsedate_to_datetime(date).timestamp()) <= 2


def test_conditional_requests_are_answered_304_by_the_store(origin, proxy):
    origin.add("/cond.bin", size=100_000, modified_ago=30 * DAY, headers={"Cache-Control": "max-age=3600"})
    fetched(proxy, origin, "/cond.bin", "cond")
    etag, modified = origin.etag("/cond.bin"), origin.last_modified("/cond.bin")
    origin.stop()
    url = origin.url("/cond.bin")
    for condition in (f"If-None-Match: {etag}", f'If-None-Match: "other", W/{etag}', f"If-Modified-Since: {modified}"):
        result = curl(proxy, url, "-D", "-", "-o", "/dev/null", "-H", condition)
        head = result.stdout.decode().lower()
        assert head.startswith("http/1.1 304"), (condition, head)
        assert f"etag: {etag}".lower() in head and "cache-control: max-age=3600" in head and "age: " in head
        assert "content-length" not in head
    for condition in ('If-None-Match: "other"', "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"):
        result = curl(proxy, url, "-H", condition)
        assert result.returncode == 0 and sha256(result.stdout) == origin.sha256("/cond.bin"), condition
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2)
    result = curl(proxy, url, "-H", 'If-None-Match: "other"', "-H", f"If-Modified-Since: {modified}")
    assert sha256(result.stdout) == origin.sha256("/cond.bin")


def test_head_is_answered_as_get_without_a_body(origin, proxy):
    origin.add("/head.bin", size=123_456, modified_ago=30 * DAY, content_type="video/mp4")
    fetched(proxy, origin, "/head.bin", "head")
    origin.stop()
    result = curl(proxy, origin.url("/head.bin"), "-I")
    head = result.stdout.decode().lower()
    assert result.returncode == 0 and head.startswith("http/1.1 200"), head
    assert "content-length: 123456" in head and "content-type: video/mp4" in head
    assert f"etag: {origin.etag('/head.bin')}".lower() in head and "age: " in head and "date: " in head


def conditional(origin, path: str) -> list:
    """The origin's requests for `path` that were revalidations."""
    return [r for r in origin.requests if r.path == path and ("If-None-Match" in r.headers or "If-Modified-Since" in r.headers)]


def test_a_stale_response_is_revalidated_a_304_serves_it_and_refreshes_its_date(origin, proxy):
    origin.add("/page.html", data=b"<p>v0</p>" * 1000, headers={"Cache-Control": "max-age=1"}, content_type="text/html")
    first = fetched(proxy, origin, "/page.html", "page")
    time.sleep(2.1)  # stale now
    with proxy.client() as client:
        again = client.get(origin.url("/page.html"))
    assert again.status_code == 200 and again.content == origin.data("/page.html")
    (asked,) = conditional(origin, "/page.html")
    assert asked.headers["If-None-Match"] == origin.etag("/page.html")
    assert asked.headers["If-Modified-Since"] == origin.last_modified("/page.html")
    assert email.utils.parsedate_to_datetime(again.headers["date"]) > email.utils.parsedate_to_datetime(first.headers["date"])
    assert int(again.headers["age"]) <= 1 and again.headers["content-type"] == "text/html"
    with proxy.client() as client:  # fresh again for a second: served without asking
        assert client.get(origin.url("/page.html")).content == origin.data("/page.html")
    assert len(conditional(origin, "/page.html")) <= 2


def test_a_fresh_response_is_served_unless_the_client_insists(origin, proxy):
    origin.add("/fresh.txt", data=b"fresh", headers={"Cache-Control": "max-age=3600"})
    fetched(proxy, origin, "/fresh.txt", "fresh")
    url = origin.url("/fresh.txt")
    assert curl(proxy, url).stdout == b"fresh"
    assert conditional(origin, "/fresh.txt") == []
    for insisting in ("Cache-Control: no-cache", "Cache-Control: max-age=0", "Pragma: no-cache"):
        assert curl(proxy, url, "-H", insisting).stdout == b"fresh"
    assert len(conditional(origin, "/fresh.txt")) == 3


def test_with_the_origin_down_or_failing_the_stored_response_is_served(origin, proxy):
    origin.add("/s.bin", size=300_000, headers={"Cache-Control": "no-cache"})
    fetched(proxy, origin, "/s.bin", "s")
    origin.behave("/s.bin", status=503)
    with proxy.client() as client:
        failing = client.get(origin.url("/s.bin"))
    assert failing.status_code == 200 and sha256(failing.content) == origin.sha256("/s.bin")
    assert origin.count("/s.bin") == 2
    origin.stop()
    result = curl(proxy, origin.url("/s.bin"))
    assert result.returncode == 0 and sha256(result.stdout) == origin.sha256("/s.bin")


def test_an_answer_that_is_not_the_stored_one_goes_to_the_client(origin, proxy):
    origin.add("/gone.txt", data=b"was here", headers={"Cache-Control": "no-cache"})
    fetched(proxy, origin, "/gone.txt", "gone")
    origin.behave("/gone.txt", status=404)
    result = curl(proxy, origin.url("/gone.txt"), "-D", "-")
    assert result.stdout.startswith(b"HTTP/1.1 404") and result.stdout.endswith(b"404 Not Found\n")
    origin.reset_behaviour("/gone.txt")  # what is stored stays for when the origin has it again
    origin.stop()
    assert curl(proxy, origin.url("/gone.txt")).stdout == b"was here"


def test_never_and_always(origin, make_proxy, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text('rules:\n  - name: pinned\n    url: "http://*/pinned/*"\n    revalidate: never\n')
    proxy = make_proxy("bgfetch_revalidate=always", f"bgfetch_rules={rules}").start()
    origin.add("/pinned/a.txt", data=b"a", headers={"Cache-Control": "no-cache"})
    origin.add("/b.txt", data=b"b", headers={"Cache-Control": "max-age=3600"})
    with proxy.client() as client:
        assert client.get(origin.url("/pinned/a.txt")).content == b"a"  # the rule makes it a fetch
        fetched(proxy, origin, "/b.txt", "b")
        for _ in range(2):
            assert client.get(origin.url("/pinned/a.txt")).content == b"a"
            assert client.get(origin.url("/b.txt")).content == b"b"
    assert conditional(origin, "/pinned/a.txt") == []  # the rule's never
    assert len(conditional(origin, "/b.txt")) == 2  # the option's always, though it is fresh


def test_a_no_store_response_is_kept_only_for_the_requests_that_name_its_fetch(origin, proxy, tmp_path):
    origin.add("/private.json", data=b'{"balance": 1}', headers={"Cache-Control": "no-store"})
    url = origin.url("/private.json")
    fetched(proxy, origin, "/private.json", "mine")  # the header asked: the fetch is done and its record kept
    assert proxy.api("GET", "/api/fetches/mine/records/0/body").content == b'{"balance": 1}'
    origin.change("/private.json", b'{"balance": 2}')
    assert curl(proxy, url).stdout == b'{"balance": 2}'  # a plain request: not served from the store
    origin.stop()
    assert curl(proxy, url, "-o", "/dev/null", "-w", "%{http_code}").stdout == b"502"
    named = curl(proxy, url, "-H", 'Background-Fetch: id="mine"')
    assert named.stdout == b'{"balance": 1}'  # the header that names it is served what it stored


def test_vary_is_honoured_for_the_request_fields_it_names(origin, proxy):
    origin.add("/hello", data=b"Hello", headers={"Vary": "Accept-Encoding, Accept-Language", "Cache-Control": "max-age=3600"})
    fetched(proxy, origin, "/hello", "hello", **{"Accept-Language": "en"})
    url = origin.url("/hello")
    for same in (["-H", "Accept-Language: en"], ["-H", "Accept-Language:   en", "--compressed"]):
        assert curl(proxy, url, *same).stdout == b"Hello"
    assert origin.count("/hello") == 1  # both from the store: Accept-Encoding does not count
    origin.add("/hello", data=b"Hallo", headers={"Vary": "Accept-Language", "Cache-Control": "max-age=3600"})
    assert curl(proxy, url, "-H", "Accept-Language: de").stdout == b"Hallo"  # another variant: the origin's
    assert curl(proxy, url).stdout == b"Hallo" and origin.count("/hello") == 3
    origin.stop()
    assert curl(proxy, url, "-H", "Accept-Language: en").stdout == b"Hello"
    assert curl(proxy, url, "-H", "Accept-Language: de", "-o", "/dev/null", "-w", "%{http_code}").stdout == b"502"
    named = curl(proxy, url, "-H", "Accept-Language: de", "-H", 'Background-Fetch: id="hello"', "-D", "-")
    assert named.stdout.startswith(b"HTTP/1.1 504") and b"Vary: accept-language" in named.stdout
