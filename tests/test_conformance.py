"""Conformance with the web-platform-tests' background-fetch suite, through a real mitmdump, a
real origin serving the suite's resources and a real client (httpx; curl for the header).

Each test mirrors one test of the suite (`background-fetch/<file>`: "<its name>"), translated to
HTTP: `fetch()` is `POST /api/fetches` (a JS TypeError is a 4xx problem naming the field),
`get()` is `GET /api/fetches/{id}`, `getIds()` is `GET /api/fetches`, `abort()` is
`POST .../abort` (true: 200, false: 409), `matchAll()` is `GET .../records`, `responseReady` is
`GET .../records/{n}/body`. The suite's service worker answers `backgroundfetchsuccess`/`fail`/
`abort` by reading every record and posting the registration with the results: here `settled`
reads that event from `/api/events` and `results` reads the records and their bodies through
the proxy, as any HTTP client would. README.md "Conformance" lists where bgfetch differs.
"""

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from harness.origin import Origin
from harness.proxy import Proxy, curl
from tests.test_api import problem_of

HOST = "http://bgfetch.internal"
API = f"{HOST}/api"
FINAL = ("success", "fail", "abort")
FEATURE_NAME = "/resources/feature-name.txt"  # the suite's small resource: its text is "Background Fetch"
SLOW = "/common/handlers/slow.py"  # a body that takes its time: a fetch holding it stays active
UPLOAD = "/resources/upload.py"  # answers with the request's body
UPLOAD_DATA = "Background Fetch!"
QUOTA = 10**9  # the module's proxy runs with bgfetch_quota=1GB
MiB = 1 << 20


@pytest.fixture(scope="module")
def origin():
    with Origin() as server:
        server.add(FEATURE_NAME, data=b"Background Fetch", content_type="text/plain")
        server.add("/resources/types_of_cheese.txt", data=b"Brie, Cheddar, Gouda", content_type="text/plain")
        server.add(SLOW, size=8 * MiB)
        server.behave(SLOW, throttle=MiB)
        server.behave(UPLOAD, echo=True)
        yield server


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    """One mitmdump for the module: a quota, and a rule that makes any URL with /by-rule/ in its
    path a background fetch (the rule path of the header's checks)."""
    workdir = tmp_path_factory.mktemp("conformance")
    rules = workdir / "rules.yaml"
    rules.write_text('rules:\n  - name: by-rule\n    url: "http://*/by-rule/*"\n    respond: accepted\n')
    instance = Proxy(workdir, f"bgfetch_quota={QUOTA}", f"bgfetch_rules={rules}")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def client(proxy):
    """A real HTTP client that uses the proxy; the API is at bgfetch.internal through it."""
    with proxy.client() as instance:
        yield instance


def unique_id() -> str:
    """The suite's `uniqueId()`."""
    return f"wpt-{uuid.uuid4().hex[:12]}"


def fetch(client: httpx.Client, reg_id: str, requests: list, **options) -> httpx.Response:
    """`backgroundFetch.fetch(id, requests, options)`: the API's answer."""
    return client.post(f"{API}/fetches", json={"id": reg_id, "requests": requests, **options})


def events(client: httpx.Client, timeout: float = 30) -> Iterator[tuple[str, dict]]:
    """Every event of `/api/events` (type, registration) from the start of its log, so that an
    event that came before the call is not missed; a stream quiet for `timeout` s raises."""
    kind = None
    with client.stream("GET", f"{API}/events", params={"lastEventId": "0"}, timeout=timeout) as stream:
        assert stream.status_code == 200, stream.read()
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield kind, json.loads(line.removeprefix("data: "))
    raise AssertionError("the event stream ended")


def settled(client: httpx.Client, reg_id: str) -> tuple[str, dict]:
    """The event that settled `reg_id` (success, fail or abort) and the registration it carries."""
    return next((kind, found) for kind, found in events(client) if kind in FINAL and found["id"] == reg_id)


def results(client: httpx.Client, reg_id: str, **match) -> list[dict]:
    """Each record that `matchAll(match)` finds, as the suite's service worker posts it: its URL,
    its response's status and the body's text; `problem` instead of the text when the body
    route refuses (the spec's `responseReady` rejecting)."""
    listed = client.get(f"{API}/fetches/{reg_id}/records", params=match)
    assert listed.status_code == 200, listed.text
    found = []
    for record in listed.json()["records"]:
        body = client.get(HOST + record["bodyUrl"])
        result = {"url": record["request"]["url"], "status": (record["response"] or {}).get("status")}
        if body.status_code == 200:
            result["text"] = body.text
        else:
            assert body.headers["content-type"] == "application/problem+json", body.text
            result["problem"] = body.json()
        found.append(result)
    return found


def asked_origin(origin, target: str) -> int:
    """How many requests for `target` (path and query) the origin has seen."""
    return sum(1 for request in origin.requests if request.target == target)


# -- the manager: fetch(), get(), getIds() ----------------------------------------------------

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


def test_fetch_fetches_can_have_requests_with_duplicate_urls(client, origin):
    """fetch.https.window.js: "Fetches can have requests with duplicate URLs": two records, both
    succeed; the proxy then serves the URL from one of them."""
    reg_id, url = unique_id(), origin.url(FEATURE_NAME + "?duplicate")
    created = fetch(client, reg_id, [url, url])
    assert (created.status_code, created.json()["records"]) == (201, 2)
    kind, registration = settled(client, reg_id)
    assert (kind, registration["result"], registration["failureReason"]) == ("success", "success", "")
    assert results(client, reg_id) == [{"url": url, "status": 200, "text": "Background Fetch"}] * 2
    asked = len(origin.requests)
    assert client.get(url).text == "Background Fetch" and len(origin.requests) == asked


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


# -- records, uploads, abort, match ---------------------------------------------------------

def test_fetch_uploads_fetch_with_an_upload_should_work(client, origin):
    """fetch-uploads.https.window.js: "Fetch with an upload should work"; `uploaded` reaches
    uploadTotal once the request has been sent."""
    reg_id = unique_id()
    created = fetch(client, reg_id, [{"url": origin.url(UPLOAD), "method": "POST", "body": UPLOAD_DATA}])
    assert created.status_code == 201, created.text
    assert (created.json()["uploadTotal"], created.json()["uploaded"]) == (len(UPLOAD_DATA), 0)
    kind, registration = settled(client, reg_id)
    assert (kind, registration["result"], registration["failureReason"]) == ("success", "success", "")
    assert registration["uploaded"] == len(UPLOAD_DATA)
    assert results(client, reg_id) == [{"url": origin.url(UPLOAD), "status": 200, "text": UPLOAD_DATA}]


def test_fetch_uploads_progress_event_includes_uploaded_bytes(client, origin):
    """fetch-uploads.https.window.js: "Progress event includes uploaded bytes": once a progress
    event shows bytes downloaded, everything was uploaded."""
    reg_id = unique_id()
    upload = {"url": origin.url(UPLOAD + "?progress"), "method": "POST", "body": UPLOAD_DATA}
    assert fetch(client, reg_id, [upload, origin.url(SLOW + "?progress")]).status_code == 201
    try:
        registration = next(found for kind, found in events(client)
                            if kind == "progress" and found["id"] == reg_id and found["downloaded"] > 0)
        assert registration["uploaded"] == len(UPLOAD_DATA) == registration["uploadTotal"]
    finally:
        assert client.delete(f"{API}/fetches/{reg_id}").status_code == 204


def test_fetch_uploads_duplicate_upload_requests_work_and_can_be_distinguished(client, origin):
    """fetch-uploads.https.window.js: "Duplicate upload requests work and can be distinguished.":
    two uploads to one URL are two records, each with its own response."""
    reg_id = unique_id()
    uploads = [{"url": origin.url(UPLOAD), "method": "POST", "body": body} for body in ("upload1", "upload2")]
    created = fetch(client, reg_id, uploads)
    assert (created.status_code, created.json()["uploadTotal"]) == (201, 14)
    kind, registration = settled(client, reg_id)
    assert (kind, registration["result"], registration["failureReason"]) == ("success", "success", "")
    assert sorted(result["text"] for result in results(client, reg_id)) == ["upload1", "upload2"]
    assert registration["uploaded"] == 14


def test_fetch_using_background_fetch_to_fetch_a_non_existent_resource_should_fail(client, origin):
    """fetch.https.window.js: "Using Background Fetch to fetch a non-existent resource should
    fail.": failure/bad-status, and the record shows the 404 (its body is not kept: text "")."""
    reg_id = unique_id()
    created = fetch(client, reg_id, [origin.url("/resources/missing-cat.txt")])
    assert (created.json()["result"], created.json()["failureReason"]) == ("", "")
    kind, registration = settled(client, reg_id)
    assert (kind, registration["result"], registration["failureReason"]) == ("fail", "failure", "bad-status")
    assert results(client, reg_id) == [{"url": origin.url("/resources/missing-cat.txt"), "status": 404, "text": ""}]
    assert client.get(f"{API}/fetches/{reg_id}").json()["recordsAvailable"] is True


def test_fetch_fetches_with_a_refused_request_should_fail_keeping_the_valid_response(client, origin):
    """fetch.https.window.js: "Fetches with mixed content should fail.", with a request that Fetch
    refuses in the place of mixed content (a redirect to a bad port): failure/fetch-error, the
    valid response stays readable through the API (never served to proxy clients as their URL's
    response), the other is null (410); DELETE removes them."""
    reg_id, valid = unique_id(), FEATURE_NAME + "?mixed"
    origin.behave("/redirects-to-smtp", redirect_to="http://127.0.0.1:25/")
    assert fetch(client, reg_id, [origin.url(valid), origin.url("/redirects-to-smtp")]).status_code == 201
    kind, registration = settled(client, reg_id)
    assert (kind, registration["failureReason"]) == ("fail", "fetch-error") and "port 25" in registration["lastError"]
    found = results(client, reg_id)
    assert found[0] == {"url": origin.url(valid), "status": 200, "text": "Background Fetch"}
    assert found[1]["problem"]["type"].endswith("/record-incomplete") and found[1]["problem"]["status"] == 410
    assert registration["downloaded"] == len("Background Fetch")

    before = asked_origin(origin, valid)
    assert client.get(origin.url(valid)).text == "Background Fetch"
    assert asked_origin(origin, valid) == before + 1  # the origin answered, not the failed fetch's record
    assert client.delete(f"{API}/fetches/{reg_id}").status_code == 204
    assert problem_of(client.get(f"{API}/fetches/{reg_id}/records"), 404)["type"].endswith("/not-found")
    assert client.get(f"{API}/fetches/{reg_id}/records/0/body").status_code == 404


def test_abort_aborting_the_same_registration_twice_fails(client, origin):
    """abort.https.window.js: "Aborting the same registration twice fails" (true: 200, false: 409)."""
    reg_id = unique_id()
    assert fetch(client, reg_id, [origin.url(FEATURE_NAME + "?twice"), origin.url(SLOW + "?twice")]).status_code == 201
    assert client.post(f"{API}/fetches/{reg_id}/abort", json={}).status_code == 200
    assert problem_of(client.post(f"{API}/fetches/{reg_id}/abort", json={}), 409)["type"].endswith("/not-active")


def test_abort_sets_the_correct_fields_and_responses_are_still_available(client, origin):
    """abort.https.window.js: "Calling BackgroundFetchRegistration.abort sets the correct fields
    and responses are still available": abort once the first file is in; its response stays."""
    reg_id, first = unique_id(), FEATURE_NAME + "?abort"
    assert fetch(client, reg_id, [origin.url(first), origin.url(SLOW + "?abort")]).status_code == 201
    next(found for kind, found in events(client)
         if kind == "progress" and found["id"] == reg_id and found["downloaded"] >= len("Background Fetch"))
    aborted = client.post(f"{API}/fetches/{reg_id}/abort", json={})
    assert (aborted.status_code, aborted.json()["result"], aborted.json()["failureReason"]) == (200, "failure", "aborted")
    kind, registration = settled(client, reg_id)
    assert (kind, registration["result"], registration["failureReason"]) == ("abort", "failure", "aborted")
    assert results(client, reg_id)[0] == {"url": origin.url(first), "status": 200, "text": "Background Fetch"}
    before = asked_origin(origin, first)
    assert client.get(origin.url(first)).text == "Background Fetch"
    assert asked_origin(origin, first) == before + 1  # an aborted fetch's record is never served to the proxy's clients


def test_abort_an_aborted_fetch_throws_when_accessing_an_incomplete_record(client, origin):
    """abort.https.window.js: "An aborted fetch throws a DOM exception when accessing an incomplete
    record": the record stays, its body is a 410 problem (the spec's AbortError)."""
    reg_id = unique_id()
    assert fetch(client, reg_id, [origin.url(SLOW + "?incomplete")]).status_code == 201
    assert client.post(f"{API}/fetches/{reg_id}/abort", json={}).status_code == 200
    found = results(client, reg_id)
    assert len(found) == 1 and found[0]["problem"]["type"].endswith("/record-incomplete")
    assert found[0]["problem"]["status"] == 410 and "aborted" in found[0]["problem"]["detail"]


def test_match_matching_to_a_single_request_should_work(client, origin):
    """match.https.window.js: "Matching to a single request should work"."""
    reg_id, url = unique_id(), origin.url(FEATURE_NAME + "?match")
    assert fetch(client, reg_id, [url, origin.url("/resources/types_of_cheese.txt")]).status_code == 201
    assert settled(client, reg_id)[0] == "success"
    assert results(client, reg_id, url=url) == [{"url": url, "status": 200, "text": "Background Fetch"}]


def test_match_matching_to_a_non_existing_request_should_work(client, origin):
    """match.https.window.js: "Matching to a non-existing request should work": nothing found."""
    reg_id = unique_id()
    assert fetch(client, reg_id, [origin.url(FEATURE_NAME + "?absent")]).status_code == 201
    assert settled(client, reg_id)[0] == "success"
    assert results(client, reg_id, url=origin.url("/resources/missing-cat.txt")) == []


def test_match_access_to_active_fetches_is_supported(client, origin):
    """match.https.window.js: "Access to active fetches is supported.": a record that has completed
    is read while the fetch goes on."""
    reg_id, url = unique_id(), origin.url(FEATURE_NAME + "?active")
    assert fetch(client, reg_id, [url, origin.url(SLOW + "?active")]).status_code == 201
    try:
        next(found for kind, found in events(client) if found["id"] == reg_id and found["downloaded"] >= 16)
        assert results(client, reg_id, url=url) == [{"url": url, "status": 200, "text": "Background Fetch"}]
        assert client.get(f"{API}/fetches/{reg_id}").json()["result"] == ""
    finally:
        assert client.delete(f"{API}/fetches/{reg_id}").status_code == 204


def test_match_with_query_options(client, origin):
    """match.https.window.js: "Match with query options.": duplicates, ignoreSearch, ignoreMethod."""
    reg_id, url = unique_id(), origin.url(FEATURE_NAME + "?options")
    requests = [url, url, url.replace("?options", "?id=3"), {"url": url, "method": "PUT"}, origin.url(SLOW + "?options")]
    assert fetch(client, reg_id, requests).status_code == 201
    try:
        def count(**options) -> int:
            found = client.get(f"{API}/fetches/{reg_id}/records", params={"url": url, **options})
            assert found.status_code == 200, found.text
            return len(found.json()["records"])

        assert count() == 2
        assert count(ignoreSearch="1") == 3
        assert count(ignoreMethod="1") == 3
        assert count(ignoreSearch="1", ignoreMethod="1") == 4
    finally:
        assert client.delete(f"{API}/fetches/{reg_id}").status_code == 204
