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
