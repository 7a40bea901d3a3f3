"""Unit tests of how the API hands out a stored body: a safe file name, a sandbox, only the
origin's headers that describe the bytes."""

import pytest

from store.web import attachment


@pytest.mark.parametrize("url, name", [
    ("https://h/podcasts/ep%201.mp3?x=1", "ep 1.mp3"),
    ("https://h/dir/", "dir"),
    ("https://example.com/", "example.com"),
    ("https://h/a%2F..%2Fb%22%3B.txt", "a_.._b__.txt"),
    ("https://h/%2e%2e", "download"),
    ("https://h/...hidden", "hidden"),
    ("https://h/new%0Aline%00.sh", "new_line_.sh"),
    ("https://h/" + "x" * 500, "x" * 200),
])
def test_file_names_are_safe(url, name):
    assert attachment.file_name(url) == name


def test_disposition_keeps_a_unicode_name_exact_and_an_ascii_one_plain():
    assert attachment.disposition("Épisode 5.mp3") == (
        "attachment; filename=\"_pisode 5.mp3\"; filename*=UTF-8''%C3%89pisode%205.mp3"
    )
    assert attachment.disposition("a.bin").isascii()


def test_only_headers_that_describe_the_bytes_are_kept_and_the_sandbox_is_added():
    origin_fields = [
        ("Content-Type", "text/html"), ("ETag", '"v1"'), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("Content-Encoding", "gzip"), ("Access-Control-Allow-Origin", "*"), ("Content-Security-Policy", "script-src *"),
        ("X-Content-Type-Options", "sniff"), ("Content-Disposition", "inline"), ("Link", "</x.js>; rel=preload"),
        ("Refresh", "0; url=http://evil"), ("Clear-Site-Data", '"*"'), ("Service-Worker-Allowed", "/"),
    ]
    fields = attachment.fields("https://h/page.html", origin_fields)
    names = [name.lower() for name, _ in fields]
    assert len(names) == len(set(names))
    assert dict(fields) == {
        "Content-Type": "text/html", "ETag": '"v1"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
        "Content-Encoding": "gzip",
        "Content-Security-Policy": "sandbox; default-src 'none'", "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Content-Disposition": "attachment; filename=\"page.html\"; filename*=UTF-8''page.html",
    }


def test_a_body_without_a_type_is_octet_stream():
    assert ("Content-Type", "application/octet-stream") in attachment.fields("https://h/x", [])
