"""store/proxyside/protocol.py: the lines the store writes are the lines the proxy reads, a line
that is not one is refused saying why, and every header field the proxy adds is one the store
never sends upstream."""

import json

import pytest

from store.engine import headers
from store.proxyside import protocol


def test_what_the_store_writes_the_proxy_reads():
    assert protocol.parse_ready(protocol.ready_line(4321, 0).rstrip(b"\n")) == {"port": 4321, "listen_port": 0}
    url = "http://example.com/" + "a" * 70_000
    added = protocol.added_line(url)
    assert added.endswith(b"\n") and len(added) == len(b'{"added": ""}\n') + 2 * protocol.DIGEST_BYTES
    assert protocol.parse_announcement(added.rstrip(b"\n")) == ("added", protocol.url_digest(url))
    assert protocol.parse_announcement(protocol.removed_line(3).rstrip(b"\n")) == ("removed", 3)
    assert protocol.parse_announcement(protocol.dropped_line(7).rstrip(b"\n")) == ("dropped", 7)


@pytest.mark.parametrize("line, why", [
    (b"not json", "not JSON"),
    (b"[]", "one member"),
    (json.dumps({"added": "ab" * 16, "removed": 1}).encode(), "one member"),
    (json.dumps({"added": "short"}).encode(), "hex of a 16-byte digest"),
    (json.dumps({"added": "zz" * 16}).encode(), "hex of a 16-byte digest"),
    (json.dumps({"added": 5}).encode(), "hex of a 16-byte digest"),
    (json.dumps({"removed": -1}).encode(), "whole number"),
    (json.dumps({"dropped": "5"}).encode(), "whole number"),
    (json.dumps({"removed": True}).encode(), "whole number"),
    (json.dumps({"port": 1}).encode(), "the kinds are added, removed, dropped"),
])
def test_a_line_that_is_not_an_announcement_says_why(line, why):
    with pytest.raises(ValueError, match=why):
        protocol.parse_announcement(line)


def test_a_cut_line_is_never_read_as_one():
    whole = protocol.removed_line(3).rstrip(b"\n")
    with pytest.raises(ValueError, match="too long: 10 bytes of it were cut"):
        protocol.parse_announcement(whole, cut=10)
    with pytest.raises(ValueError, match="too long"):
        protocol.parse_ready(protocol.ready_line(1, 0).rstrip(b"\n"), cut=1)


@pytest.mark.parametrize("line", [b"hello", b'{"port": "1", "listen_port": 0}', b'{"port": 1}', b"[1, 0]"])
def test_a_first_line_that_is_not_the_ports_is_refused(line):
    with pytest.raises(ValueError):
        protocol.parse_ready(line)


def test_the_fields_the_proxy_adds_are_internal_and_never_go_upstream():
    added = [protocol.SECRET, protocol.SPEC, protocol.URL, protocol.RECORD]
    assert all(protocol.is_internal(name) and protocol.is_internal(name.upper()) for name in added)
    assert not protocol.is_internal("X-Bgfetch")  # the prefix ends with its dash
    fields = [(name, "v") for name in added] + [("Accept", "*/*")]
    assert headers.upstream(fields) == [("Accept", "*/*")]


def test_the_answer_the_store_gives_is_the_one_the_proxy_reads_whatever_the_id():
    for answer in protocol.ANSWERS:
        for fetch_id in ("ep5", "épisode \"5\"", "a" * 256):
            value = protocol.answer_value(answer, fetch_id)
            assert value.isascii() and protocol.parse_answer(value) == (answer, fetch_id)
    for value in ("stored", "{}", '{"answer": "cached", "id": "x"}', '{"answer": "stored", "id": 5}', "[1]"):
        assert protocol.parse_answer(value) is None
    assert protocol.is_internal(protocol.ANSWER)
