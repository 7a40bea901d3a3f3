"""The freshness policy (store/engine/freshness.py, over hishel) and clients' conditions
(store/web/conditions.py), as pure functions; end to end: test_freshness_e2e.py."""

import email.utils
import time

import pytest

from store.engine import freshness
from store.web import conditions

URL = "http://origin.test/x"
ETAG = '"v1"'


def http_date(seconds_ago: float) -> str:
    return email.utils.formatdate(time.time() - seconds_ago, usegmt=True)


def stored(date_ago: float = 100, **fields: str) -> list[tuple[str, str]]:
    return [("Date", http_date(date_ago)), ("ETag", ETAG), *((k.replace("_", "-"), v) for k, v in fields.items())]


@pytest.mark.parametrize("fields, fresh", [
    ({"Cache_Control": "max-age=600"}, True),
    ({"Cache_Control": "max-age=60"}, False),
    ({"Cache_Control": "max-age=600, no-cache"}, False),
    ({"Cache_Control": "s-maxage=10, max-age=600"}, False),  # a shared cache takes s-maxage
    ({"Expires": http_date(-3600)}, True),
    ({"Expires": "0"}, False),  # an invalid date is in the past
    ({"Last_Modified": http_date(30 * 86400)}, True),  # heuristic: a tenth of 30 days
    ({"Last_Modified": http_date(200)}, False),  # a tenth of 200 s is less than its age
    ({}, False),  # nothing says how long it stays fresh
    ({"Cache_Control": "max-age=600", "Vary": "*"}, False),
])
def test_stale_responses_are_revalidated_fresh_ones_served(fields, fresh):
    assert freshness.verdict("cache-control", URL, stored(**fields), [], False).fresh is fresh


def test_the_conditional_request_carries_the_stored_validators():
    modified = http_date(86400)
    verdict = freshness.verdict("always", URL, stored(Last_Modified=modified, Cache_Control="max-age=600"), [], False)
    assert not verdict.fresh
    assert sorted((k.lower(), v) for k, v in verdict.conditions) == [("if-modified-since", modified), ("if-none-match", ETAG)]


@pytest.mark.parametrize("request_fields", [
    [("Cache-Control", "no-cache")], [("Cache-Control", "max-age=0")], [("cache-control", "no-store, max-age=0")],
    [("Pragma", "no-cache")],
])
def test_a_client_that_insists_gets_a_revalidation(request_fields):
    fields = stored(Cache_Control="max-age=600")
    assert freshness.verdict("cache-control", URL, fields, [], False).fresh
    assert not freshness.verdict("cache-control", URL, fields, request_fields, False).fresh
    assert freshness.verdict("never", URL, fields, request_fields, False).fresh  # never: the store's word only


def test_the_modes_never_and_always():
    assert freshness.verdict("never", URL, stored(), [], False).fresh
    assert not freshness.verdict("always", URL, stored(Cache_Control="max-age=600"), [], False).fresh


def test_a_304_refreshes_the_stored_fields_but_not_those_of_the_body():
    before = stored(500, Cache_Control="max-age=60", Content_Type="text/html")
    answer = [("Date", http_date(0)), ("ETag", ETAG), ("Cache-Control", "max-age=600"), ("Content-Type", "text/plain")]
    after = dict(freshness.refreshed(URL, before, answer, False))
    assert after["cache-control"] == "max-age=600" and after["content-type"] == "text/html"
    assert freshness.age(list(after.items())) <= 1
    assert freshness.refreshed(URL, before, [("ETag", '"v2"')], False) is None  # another entity: not this one


@pytest.mark.parametrize("fields, credentialed, kept", [
    ([], False, True),
    ([("Cache-Control", "no-store")], False, False),
    ([("Cache-Control", "no-store")], True, False),
    ([("Cache-Control", "private")], False, False),  # one user's, and nobody's key holds whose
    ([("Cache-Control", "private")], True, True),  # the lookup key holds the credentials
    ([("Cache-Control", "max-age=60")], False, True),
])
def test_which_responses_later_requests_may_be_given(fields, credentialed, kept):
    assert freshness.reusable(URL, 200, fields, credentialed) is kept


def test_age_counts_from_the_origin_date_and_a_date_is_added_when_missing():
    assert 99 <= freshness.age(stored(100)) <= 101
    assert freshness.dated([("Date", "kept")]) == [("Date", "kept")]
    (name, value), = freshness.dated([], now=0)
    assert name == "Date" and value == "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("if_none_match, if_modified_since, answer", [
    (ETAG, None, True),
    (f"W/{ETAG}", None, True),  # weak comparison
    (f'"a", {ETAG}', None, True),
    ("*", None, True),
    ('"v2"', None, False),
    ('"v2"', "Fri, 01 Jan 2100 00:00:00 GMT", False),  # If-None-Match wins
    (None, "Fri, 01 Jan 2100 00:00:00 GMT", True),
    (None, "Thu, 01 Jan 1970 00:00:00 GMT", False),
    (None, "not a date", False),
    (None, None, False),
])
def test_a_client_condition_against_a_stored_response(if_none_match, if_modified_since, answer):
    fields = [("ETag", ETAG), ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")]
    assert conditions.not_modified(if_none_match, if_modified_since, fields) is answer


def test_a_varying_response_is_given_only_to_requests_with_the_same_selecting_fields():
    from store.db import variants

    response = [("Vary", "Accept-Language"), ("vary", "accept-encoding, Cookie, X-Mode")]
    kept = variants.selecting(response, [("Accept-Language", "en,  de"), ("Accept-Encoding", "gzip"), ("Cookie", "c")])
    assert variants.names(kept) == ["accept-language", "x-mode"]  # not what the store sets, nor what keys it
    assert variants.matches(kept, [("accept-language", "en, de")])
    assert variants.matches(kept, [("Accept-Language", "en"), ("Accept-Language", "de"), ("Accept-Encoding", "br")])
    assert not variants.matches(kept, [("Accept-Language", "de, en")])
    assert not variants.matches(kept, [])
    assert not variants.matches(kept, [("Accept-Language", "en, de"), ("X-Mode", "1")])  # absent when stored
    assert variants.selecting([("Content-Type", "text/plain")], [("Accept", "*/*")]) == ""
    assert variants.selecting([("Vary", "Accept-Encoding")], []) == "" and variants.matches("", [("A", "b")])
    assert not variants.matches(variants.selecting([("Vary", "*")], []), [])
