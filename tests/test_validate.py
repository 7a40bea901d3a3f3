"""Unit tests of the control API's body checks: values as stored, and the field each refusal names."""

import pytest

from store import validate

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
    ({"id": "x", "requests": [URL, {"url": URL, "method": "GET"}]}, "requests[1]"),
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
    with pytest.raises(validate.Invalid, match=f'id may not be "{dots}"') as refused:
        validate.fetch_body({"id": dots, "requests": [URL]})
    assert refused.value.field == "id"
    assert validate.identifier("...", "id") == "..." and validate.identifier(".a", "id") == ".a"
