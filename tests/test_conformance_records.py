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
