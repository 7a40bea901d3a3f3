"""Conformance with the web-platform-tests' background-fetch suite: records, uploads, abort, match.

Each test mirrors one test of the suite (`background-fetch/<file>`: "<its name>") through a real
mitmdump, origin and client, as test_conformance.py does: `matchAll()` is `GET .../records`,
`responseReady` is `GET .../records/{n}/body`, `abort()` is `POST .../abort` (true: 200, false:
409), and the message the suite's service worker posts is the settling event of `/api/events`
with the records' results.
"""

from tests.conformance import (  # noqa: F401 (fixtures)
    API, FEATURE_NAME, SLOW, UPLOAD, client, events, fetch, origin, problem_of, proxy, results, settled, unique_id,
)

UPLOAD_DATA = "Background Fetch!"


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


def asked_origin(origin, target: str) -> int:
    """How many requests for `target` (path and query) the origin has seen."""
    return sum(1 for request in origin.requests if request.target == target)


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
