"""What the conformance tests share: the web-platform-tests' resources on a real origin, one real
mitmdump with bgfetch, and the suite's helpers (`uniqueId()`, the message its service worker
posts when a fetch settles) translated to HTTP.

The WPT's service worker answers `backgroundfetchsuccess`/`fail`/`abort` by reading every record
(`matchAll()`, then `responseReady` and the body's text) and posting the registration with the
results. Here `settled` reads the same event from `/api/events` and `results` reads the records
and their bodies through the proxy, as any HTTP client would.
"""

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from harness.origin import Origin
from harness.proxy import Proxy
from tests.test_api import problem_of  # noqa: F401 (the conformance tests take it from here)

HOST = "http://bgfetch.internal"
API = f"{HOST}/api"
FINAL = ("success", "fail", "abort")
FEATURE_NAME = "/resources/feature-name.txt"  # the suite's small resource: its text is "Background Fetch"
SLOW = "/common/handlers/slow.py"  # a body that takes its time: a fetch holding it stays active
UPLOAD = "/resources/upload.py"  # answers with the request's body
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

