"""Unit tests of which state changes need the dashboard's secret: a browser's, and only those."""

import pytest

from store.web import forgery

SECRET = forgery.new_secret()


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE", "PUT"])
@pytest.mark.parametrize("marks", [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "same-origin"}])
def test_a_browsers_state_change_needs_the_secret(method, marks):
    assert forgery.forged(method, marks, SECRET)
    assert forgery.forged(method, {**marks, forgery.HEADER: SECRET[:-1]}, SECRET)
    assert forgery.forged(method, {**marks, forgery.HEADER: ""}, SECRET)
    assert not forgery.forged(method, {**marks, forgery.HEADER: SECRET}, SECRET)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_need_nothing(method):
    assert not forgery.forged(method, {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, SECRET)


def test_requests_without_a_browsers_marks_need_nothing():
    assert not forgery.forged("DELETE", {"User-Agent": "curl/8", "Content-Type": "application/json"}, SECRET)


def test_each_start_has_its_own_secret_and_the_header_survives_the_proxy():
    assert forgery.new_secret() != forgery.new_secret() and len(SECRET) >= 40
    assert not forgery.HEADER.lower().startswith("x-bgfetch-")
