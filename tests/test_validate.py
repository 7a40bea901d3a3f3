"""Unit tests of the control API's body checks: values as stored, and the field each refusal names."""

import re
import time

import pytest

from store.web import validate

URL = "http://127.0.0.1:8000/a.bin"
DIGEST = "sha256-" + "A" * 43 + "="


def test_a_full_fetch_body_becomes_a_registration_and_records():
    registration, records = validate.fetch_body({
        "id": "ep-5", "title": "Episode 5", "icons": [{"src": "/i.png", "label": "cover"}], "downloadTotal": 1000,
        "requests": [URL, {"url": "HTTPS://Example.COM:443/cover.jpg#top", "method": "put", "body": "é",
                           "headers": {"Authorization": "Bearer x", "Accept": "*/*"}, "integrity": DIGEST}],
    })
    assert registration == {"id": "ep-5", "title": "Episode 5", "icons": [{"src": "/i.png", "label": "cover"}], "download_total": 1000}
    assert records[0] == {"url": URL, "method": "GET", "headers": [], "body": None, "integrity": None, "credential": ""}
    second = records[1]
    assert (second["url"], second["method"], second["body"], second["integrity"]) == (
        "https://example.com/cover.jpg", "PUT", "é".encode(), DIGEST)
    assert second["headers"] == [("Authorization", "Bearer x"), ("Accept", "*/*")]
    assert len(second["credential"]) == 64


def test_a_request_may_repeat_each_a_record_of_its_own():
    """As the spec (and its web-platform-tests) allow: [u, u] is two records; so are two
    uploads to one URL with different bodies. This was refused before ("repeats GET ...")."""
    _, records = validate.fetch_body({"id": "x", "requests": [
        URL, {"url": URL, "method": "GET"}, {"url": URL, "method": "POST", "body": "upload1"},
        {"url": URL, "method": "POST", "body": "upload2"}]})
    assert [(r["method"], r["url"], r["body"]) for r in records] == [
        ("GET", URL, None), ("GET", URL, None), ("POST", URL, b"upload1"), ("POST", URL, b"upload2")]


def test_defaults_and_zero_download_total():
    registration, records = validate.fetch_body({"id": "x", "requests": [URL], "downloadTotal": 0})
    assert registration == {"id": "x", "title": "", "icons": [], "download_total": None}
    assert [r["method"] for r in records] == ["GET"]


@pytest.mark.parametrize("url, expected", [
    ("http://example.com", "http://example.com/"),
    ("HTTP://EXAMPLE.com:80/a?b=1#c", "http://example.com/a?b=1"),
    ("https://example.com:8443/", "https://example.com:8443/"),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ("http://Bücher.de/ä?q=ö", "http://xn--bcher-kva.de/%C3%A4?q=%C3%B6"),
])
def test_urls_are_written_as_the_proxy_sees_them(url, expected):
    assert validate.url(url, "url") == expected


@pytest.mark.parametrize("url", ["", "/relative", "ftp://host/", "https://)úñ䊊/", "http://", "http://host:70000/", "http://a b/",
                                 "http://user:pw@host/", "http://host/\n", 5, None])
def test_urls_that_are_refused(url):
    with pytest.raises(validate.Invalid) as caught:
        validate.url(url, "requests[3].url")
    assert caught.value.field == "requests[3].url"


@pytest.mark.parametrize("body, field", [
    ({"id": "x", "requests": [URL], "extra": 1}, "extra"),
    ({"id": "x" * 257, "requests": [URL]}, "id"),
    ({"id": "x", "requests": URL}, "requests"),
    ({"id": "x", "requests": [URL] * 1001}, "requests"),
    ({"id": "x", "requests": [{"method": "GET"}]}, "requests[0].url"),
    ({"id": "x", "requests": [{"url": URL, "method": "HEAD"}]}, "requests[0].method"),
    ({"id": "x", "requests": [{"url": URL, "method": "GE T"}]}, "requests[0].method"),
    ({"id": "x", "requests": [{"url": URL, "method": "POST", "body": None}]}, "requests[0].body"),
    ({"id": "x", "requests": [{"url": URL, "integrity": None}]}, "requests[0].integrity"),
    ({"id": "x", "requests": [{"url": URL, "integrity": "sha256-" + "A" * 42 + "=="}]}, "requests[0].integrity"),
    ({"id": "x", "requests": [{"url": URL, "headers": ["Accept", "*/*"]}]}, "requests[0].headers"),
    ({"id": "x", "requests": [{"url": URL, "headers": {"Bad Name": "v"}}]}, "requests[0].headers.Bad Name"),
    ({"id": "x", "requests": [{"url": URL, "headers": {"Accept": None}}]}, "requests[0].headers.Accept"),
    ({"id": "x", "requests": [{"url": URL, "headers": {"Accept": "text/plain\n"}}]}, "requests[0].headers.Accept"),
    ({"id": "x", "requests": [{"url": URL, "headers": {"X-Name": "Zoë"}}]}, "requests[0].headers.X-Name"),
    ({"id": "x", "requests": [{"url": URL, "method": "GET\n"}]}, "requests[0].method"),
    ({"id": "x", "requests": ["HtTP://]c"]}, "requests[0].url"),
    ({"id": "x", "requests": [URL], "downloadTotal": True}, "downloadTotal"),
    ({"id": "x", "requests": [URL], "icons": {"src": "/a"}}, "icons"),
    ({"id": "x", "requests": [URL], "icons": [{"src": 1}]}, "icons[0].src"),
    ({"id": "x", "requests": [URL], "title": "t" * 1025}, "title"),
])
def test_each_bad_value_is_named(body, field):
    with pytest.raises(validate.Invalid) as caught:
        validate.fetch_body(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


def test_an_update_may_remove_headers_and_give_a_new_url():
    title, icons, changes = validate.update_body(
        {"title": "T", "records": [{"index": 1, "headers": {"Cookie": None, "Authorization": "Bearer new"}, "url": URL}]}, 2)
    assert (title, icons) == ("T", None)
    assert changes == [{"index": 1, "headers": [("Cookie", None), ("Authorization", "Bearer new")], "url": URL}]
    assert validate.update_body({}, 1) == (None, None, [])


@pytest.mark.parametrize("body, field", [
    ({"records": [{"index": 2}]}, "records[0].index"),
    ({"records": [{"index": "0"}]}, "records[0].index"),
    ({"records": [{"headers": {}}]}, "records[0].index"),
    ({"records": [{"index": 0}, {"index": 1}, {"index": 0}]}, "records"),
    ({"records": [{"index": 0, "url": "mailto:a@b"}]}, "records[0].url"),
    ({"icons": [{"src": "/a", "purpose": "any"}]}, "icons[0].purpose"),
    ({"state": "done"}, "state"),
    ("title", ""),
])
def test_bad_updates_are_named(body, field):
    with pytest.raises(validate.Invalid) as caught:
        validate.update_body(body, 2)
    assert caught.value.field == field


@pytest.mark.parametrize("dots", [".", ".."])
def test_an_id_that_is_a_path_step_is_refused(dots):
    with pytest.raises(validate.Invalid, match=re.escape('id may not be "." or "..", which a URL path reads as a step')) as refused:
        validate.fetch_body({"id": dots, "requests": [URL]})
    assert refused.value.field == "id"
    assert validate.identifier("...", "id") == "..." and validate.identifier(".a", "id") == ".a"


def test_a_refused_destination_is_named_by_its_field():
    def refused(url: str) -> str | None:
        return "it is bgfetch itself" if "bgfetch.internal" in url else None

    body = {"id": "x", "requests": [URL, {"url": "http://BGFETCH.internal/api/fetches"}]}
    with pytest.raises(validate.Invalid) as caught:
        validate.fetch_body(body, refused)
    assert (caught.value.field, str(caught.value)) == ("requests[1].url", "requests[1].url may not be fetched: it is bgfetch itself")
    with pytest.raises(validate.Invalid) as caught:
        validate.update_body({"records": [{"index": 0, "url": "http://bgfetch.internal/"}]}, 1, refused)
    assert caught.value.field == "records[0].url"
    assert validate.fetch_body({"id": "x", "requests": [URL]}, refused)[1][0]["url"] == URL


def test_json_bodies_are_read_with_bounded_depth_and_numbers():
    depth = validate.MAX_DEPTH
    assert validate.json_document(("[" * depth + "]" * depth).encode()) == json_nested(depth)
    assert validate.json_document(b'{"downloadTotal": 12345678901234567890}') == {"downloadTotal": 12345678901234567890}
    assert validate.json_document(("1" * 21).encode()) == float("1" * 21)  # as a JavaScript reader has it
    assert validate.json_document(("9" * 5000).encode()) == float("inf")
    assert validate.json_document(b'["[[[[", "\\"{{{{"]') == ["[[[[", '"{{{{']  # brackets inside strings do not count


@pytest.mark.parametrize("raw, says", [
    (("[" * (validate.MAX_DEPTH + 1) + "]" * (validate.MAX_DEPTH + 1)).encode(), "deeper than 32 levels"),
    (b"[" * 100_000, "deeper than 32 levels"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "deeper than 32 levels"),
    (b"NaN", "NaN is not a JSON value"),
    (b'{"downloadTotal": -Infinity}', "-Infinity is not a JSON value"),
    (b"\xff", "not JSON text in UTF-8"),
    ('"é"'.encode("utf-16"), "not JSON text in UTF-8"),
    (b'"\\ud800"', "not JSON text in UTF-8"),
    (b'["unclosed', "Unterminated string"),
])
def test_unreadable_json_bodies(raw, says):
    with pytest.raises(validate.Unreadable) as caught:
        validate.json_document(raw)
    assert caught.value.field == "" and says in str(caught.value)


def test_nesting_is_measured_in_one_pass_whatever_the_quotes():
    started = time.monotonic()
    for text in ('"' + '\\"' * 500_000, '"' * 1_000_000, "[" * 1_000_000, '["' + "\\\\" * 500_000):
        validate.nesting(text)
    assert time.monotonic() - started < 5  # a regex that tries each quote anew takes 1.5 s for 16,000 characters


def json_nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("text", ["", " ", "[", '"', '"\\', "[" * 40, '{"a": [1, {"b": "]]]]"}]}', '"[[[[[[["'])
def test_nesting_counts_brackets_outside_strings_only(text):
    expected = {"": 0, " ": 0, "[": 1, '"': 0, '"\\': 0, "[" * 40: 40, '{"a": [1, {"b": "]]]]"}]}': 3, '"[[[[[[["': 0}
    assert validate.nesting(text) == expected[text]
