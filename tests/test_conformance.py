"""Conformance with the web-platform-tests' background-fetch suite: the manager's calls.

Each test mirrors one test of the suite (`background-fetch/<file>`: "<its name>"), translated to
HTTP through a real mitmdump, a real origin and a real client (httpx; curl for the header):
`fetch()` is `POST /api/fetches` (a JS TypeError is a 4xx problem naming the field), `get()` is
`GET /api/fetches/{id}`, `getIds()` is `GET /api/fetches`. The records, abort, uploads and
match: test_conformance_records.py. README.md "Conformance" lists where bgfetch differs.
"""

import pytest

from harness.proxy import curl
from tests.conformance import (  # noqa: F401 (fixtures)
    API, FEATURE_NAME, QUOTA, SLOW, client, fetch, origin, problem_of, proxy, results, settled, unique_id,
)


def test_fetch_argument_verification_refuses_an_empty_request_list(client):
    """fetch.https.window.js: "Argument verification is done for BackgroundFetchManager.fetch()"
    (an empty sequence of requests is a TypeError)."""
    reg_id = unique_id()
    problem = problem_of(fetch(client, reg_id, []), 400)
    assert problem["field"] == "requests" and "list of 1 to" in problem["detail"]
    assert client.get(f"{API}/fetches/{reg_id}").status_code == 404


@pytest.mark.parametrize("url", [
    pytest.param("https://username:password@example.com/", id="fetch with username and password in URL should reject"),
    pytest.param("https://username:@example.com/", id="fetch with username and empty password in URL should reject"),
    pytest.param("https://:password@example.com/", id="fetch with empty username and password in URL should reject"),
])
def test_credentials_in_url_fetch_with_credentials_in_url_should_reject(client, url):
    """credentials-in-url.https.window.js: a URL that includes credentials is a TypeError."""
    problem = problem_of(fetch(client, unique_id(), [url]), 400)
    assert problem["field"] == "requests[0].url" and "may not hold credentials" in problem["detail"]


def test_dangling_markup_fetch_to_url_containing_newline_and_lt_should_reject(client):
    """dangling-markup.https.window.js: "fetch to URL containing \\n and < should reject"."""
    problem = problem_of(fetch(client, unique_id(), ["https://example.com/?\n<"]), 400)
    assert problem["field"] == "requests[0].url"


def test_fetch_ids_must_be_unique_among_active_registrations(client, origin):
    """fetch.https.window.js: "IDs must be unique among active Background Fetch registrations"."""
    reg_id = unique_id()
    assert fetch(client, reg_id, [origin.url(SLOW + "?1")]).status_code == 201
    try:
        problem = problem_of(fetch(client, reg_id, [origin.url(SLOW + "?2")]), 409)
        assert problem["type"].endswith("/id-in-use") and problem["field"] == "id"
        assert [r["request"]["url"] for r in client.get(f"{API}/fetches/{reg_id}/records").json()["records"]] == [
            origin.url(SLOW + "?1")]
    finally:
        assert client.delete(f"{API}/fetches/{reg_id}").status_code == 204


def test_fetch_using_background_fetch_to_successfully_fetch_a_single_resource(client, origin):
    """fetch.https.window.js: "Using Background Fetch to successfully fetch a single resource"."""
    reg_id = unique_id()
    created = fetch(client, reg_id, [origin.url(FEATURE_NAME)])
    assert created.status_code == 201, created.text
    registration = created.json()
    assert registration["id"] == reg_id
    assert (registration["uploadTotal"], registration["uploaded"], registration["downloadTotal"]) == (0, 0, 0)
    assert (registration["result"], registration["failureReason"], registration["recordsAvailable"]) == ("", "", True)

    kind, event_registration = settled(client, reg_id)
    assert kind == "success"
    assert (event_registration["id"], event_registration["result"], event_registration["failureReason"]) == (
        reg_id, "success", "")
    assert results(client, reg_id) == [{"url": origin.url(FEATURE_NAME), "status": 200, "text": "Background Fetch"}]


def test_fetch_that_exceeds_the_quota_throws_a_quota_exceeded_error(client, origin):
    """fetch.https.window.js: "Background Fetch that exceeds the quota throws a QuotaExceededError"
    (downloadTotal: Number.MAX_SAFE_INTEGER), refused at once, through the API and the header."""
    reg_id = unique_id()
    problem = problem_of(fetch(client, reg_id, [origin.url(FEATURE_NAME)], downloadTotal=2**53 - 1), 409)
    assert problem["type"].endswith("/quota-exceeded") and problem["field"] == "downloadTotal"
    assert f"downloadTotal {2**53 - 1} is more than" in problem["detail"] and "bgfetch_quota" in problem["detail"]
    by_header = client.get(origin.url(FEATURE_NAME + "?quota"),
                           headers={"Background-Fetch": f'id="{reg_id}", download-total={QUOTA + 1}'})
    assert problem_of(by_header, 409)["type"].endswith("/quota-exceeded")
    assert reg_id not in client.get(f"{API}/fetches", params={"all": "1"}).json()["ids"]
    within = fetch(client, reg_id, [origin.url(FEATURE_NAME)], downloadTotal=1000)
    assert within.status_code == 201, within.text
    assert settled(client, reg_id)[0] == "success"


@pytest.mark.parametrize("url", [
    pytest.param("https://example.com", id="fetch to default https port should register ok"),
    pytest.param("http://127.0.0.1", id="fetch to default http port should register ok"),
    pytest.param("https://example.com:443", id="fetch to port 443 should register ok"),
    pytest.param("https://example.com:80", id="fetch to port 80 should register ok, even over https"),
    pytest.param("https://example.com:8080", id="fetch to non-default non-bad port (8080) should register ok"),
])
def test_port_blocking_a_port_that_is_not_bad_registers(client, url):
    """port-blocking.https.window.js: the fetches to ports that are not bad register."""
    reg_id = unique_id()
    assert fetch(client, reg_id, [url]).status_code == 201
    assert client.delete(f"{API}/fetches/{reg_id}").status_code == 204


def test_port_blocking_fetch_to_bad_port_smtp_should_reject(client, proxy):
    """port-blocking.https.window.js: "fetch to bad port (SMTP) should reject", through the API,
    the header and a rule alike (the commands: test_destinations.py), naming the port."""
    problem = problem_of(fetch(client, unique_id(), ["https://example.com:587"]), 400)
    assert problem["field"] == "requests[0].url" and "port 587 is a bad port of the Fetch standard" in problem["detail"]
    header = curl(proxy, "http://127.0.0.1:587/mail", "-H", 'Background-Fetch: id="smtp"', "-w", "\n%{http_code}")
    body, status = header.stdout.decode().rsplit("\n", 1)
    assert status == "400" and "port 587 is a bad port" in body and "http://127.0.0.1:587/mail" in body
    by_rule = client.get("http://127.0.0.1:6667/by-rule/irc")
    rule_problem = problem_of(by_rule, 400)
    assert rule_problem["type"].endswith("/refused-destination") and "port 6667 is a bad port" in rule_problem["detail"]
    assert client.get(f"{API}/fetches/smtp").status_code == 404


def test_get_getting_non_existing_registrations_yields_undefined(client):
    """get.https.window.js: "Getting non-existing registrations yields `undefined`"."""
    problem = problem_of(client.get(f"{API}/fetches/my-id-{unique_id()}"), 404)
    assert problem["type"].endswith("/not-found")


def test_get_ids_the_manager_exposes_active_fetches(client, origin):
    """get-ids.https.js: "The BackgroundFetchManager exposes active fetches"; and getIds() lists
    active fetches only: a settled one is gone from it."""
    active, done = unique_id(), unique_id()
    assert fetch(client, done, [origin.url(FEATURE_NAME)]).status_code == 201
    assert settled(client, done)[0] == "success"
    assert fetch(client, active, [origin.url(SLOW + "?ids")]).status_code == 201
    try:
        ids = client.get(f"{API}/fetches").json()["ids"]
        assert active in ids and done not in ids
    finally:
        assert client.delete(f"{API}/fetches/{active}").status_code == 204
