"""End to end: no input gets a 500 from the store. Deep JSON, numbers of any length (in JSON, in
Range, in Last-Event-ID, in a record's index) and bodies over the API's limit are 4xx problems
naming what is wrong; the crafted cases first, then fuzzing, all through a real mitmdump."""

import json

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.origin import NOTHING_LISTENS
from store.web import validate

API = "http://bgfetch.internal/api"
HUGE = "9" * 5000  # Python's int() refuses more than 4,300 digits
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
JSON = {"Content-Type": "application/json"}
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None)
dead = f"{NOTHING_LISTENS}/a"  # a fetch of it waits as paused


def problem_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def send(proxy, method: str, path: str, body: str | bytes, through_proxy: bool = False) -> httpx.Response:
    """`body` as a JSON request to the API, on the listen port or through the proxy."""
    if through_proxy:
        with proxy.client() as client:
            return client.request(method, API + path.removeprefix("/api"), content=body, headers=JSON)
    return proxy.api(method, path, content=body, headers=JSON)


def paused(proxy, reg_id: str) -> None:
    assert proxy.api("POST", "/api/fetches", json={"id": reg_id, "requests": [dead]}).status_code == 201
    proxy.wait_for(reg_id, state="paused")


# -- crafted cases ----------------------------------------------------------------------------

BODY_ROUTES = [("POST", "/api/fetches"), ("PATCH", "/api/fetches/p"), ("POST", "/api/fetches/p/abort")]


def test_deep_json_is_a_400_in_every_body(proxy):
    paused(proxy, "p")
    too_deep = "[" * (validate.MAX_DEPTH + 1) + "]" * (validate.MAX_DEPTH + 1)
    objects = '{"a":' * 100_000 + "1" + "}" * 100_000
    unclosed = '["' + '\\"' * 100_000  # a string never closed: one pass over it, not one per quote
    for method, path in BODY_ROUTES:
        for body in (DEEP, objects, too_deep, "[" * 100_000):
            for through_proxy in (False, True):
                found = problem_of(send(proxy, method, path, body, through_proxy), 400)
                assert (found["type"], found["field"]) == ("https://bgfetch.dev/problems/invalid-json", ""), (method, path)
                assert f"deeper than {validate.MAX_DEPTH} levels" in found["detail"]
        assert problem_of(send(proxy, method, path, unclosed), 400)["detail"].startswith("The body is not JSON")
    # as deep as allowed: read, then refused for what it holds, naming the field
    inside = {"id": "x", "requests": [dead], "title": json.loads("[" * (validate.MAX_DEPTH - 1) + "]" * (validate.MAX_DEPTH - 1))}
    assert problem_of(proxy.api("POST", "/api/fetches", json=inside), 400)["field"] == "title"
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": ["p"]}


def test_numbers_of_any_length_in_json_name_their_field(proxy):
    paused(proxy, "p")
    cases = [
        ("POST", "/api/fetches", f'{{"id": "n", "requests": ["{dead}"], "downloadTotal": {HUGE}}}', "downloadTotal"),
        ("POST", "/api/fetches", f'{{"id": "n", "requests": ["{dead}"], "downloadTotal": {"9" * 1_000_000}}}', "downloadTotal"),
        ("POST", "/api/fetches", f'{{"id": "n", "requests": ["{dead}"], "downloadTotal": 1e999999}}', "downloadTotal"),
        ("POST", "/api/fetches", f'{{"id": "n", "requests": ["{dead}"], "downloadTotal": -{HUGE}}}', "downloadTotal"),
        ("POST", "/api/fetches", f'{{"id": "n", "requests": ["{dead}"], "downloadTotal": {2**53 + 1}}}', "downloadTotal"),
        ("POST", "/api/fetches", f'{{"id": {HUGE}, "requests": ["{dead}"]}}', "id"),
        ("POST", "/api/fetches", f'{{"id": "n", "requests": [{HUGE}]}}', "requests[0]"),
        ("POST", "/api/fetches", f'{{"id": "n", "requests": ["{dead}"], "icons": [{{"src": {HUGE}}}]}}', "icons[0].src"),
        ("PATCH", "/api/fetches/p", f'{{"records": [{{"index": {HUGE}}}]}}', "records[0].index"),
        ("PATCH", "/api/fetches/p", f'{{"records": [{{"index": 0.0}}]}}', "records[0].index"),
        ("PATCH", "/api/fetches/p", f'{{"title": {HUGE}}}', "title"),
    ]
    for method, path, body, field in cases:
        for through_proxy in (False, True):
            found = problem_of(send(proxy, method, path, body, through_proxy), 400)
            assert (found["type"], found["field"]) == ("https://bgfetch.dev/problems/invalid-request", field), body[:80]
    for constant in ("NaN", "Infinity", "-Infinity"):  # not JSON (RFC 8259), though Python reads them
        body = f'{{"id": "n", "requests": ["{dead}"], "downloadTotal": {constant}}}'
        assert constant in problem_of(send(proxy, "POST", "/api/fetches", body), 400)["detail"]
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": ["p"]}


def test_api_bodies_over_a_mebibyte_are_413_and_never_read_whole(proxy):
    big = json.dumps({"id": "big", "requests": [dead], "title": "x" * validate.MAX_BODY_BYTES}).encode()
    pieces = [big[i:i + 65536] for i in range(0, len(big), 65536)]
    for method, path in [*BODY_ROUTES, ("GET", "/api/fetches")]:
        declared = problem_of(send(proxy, method, path, big), 413)  # Content-Length: refused before the body
        assert (declared["type"], declared["field"]) == ("https://bgfetch.dev/problems/content-too-large", "")
        assert str(validate.MAX_BODY_BYTES) in declared["detail"]
        problem_of(send(proxy, method, path, big, through_proxy=True), 413)
    for through_proxy in (False, True):  # chunked: counted as it arrives, dropped past the limit
        if through_proxy:
            with proxy.client() as client:
                chunked = client.post(f"{API}/fetches", content=iter(pieces), headers=JSON)
        else:
            chunked = proxy.api("POST", "/api/fetches", content=iter(pieces), headers=JSON)
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        problem_of(chunked, 413)
    just_under = json.dumps({"id": "big", "requests": [dead], "title": "x" * (validate.MAX_BODY_BYTES - 100)})
    assert len(just_under) <= validate.MAX_BODY_BYTES
    assert problem_of(send(proxy, "POST", "/api/fetches", just_under), 400)["field"] == "title"  # read, then checked
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": []}


def test_range_positions_of_any_length(origin, proxy):
    origin.add("/r.bin", size=1000)
    proxy.api("POST", "/api/fetches", json={"id": "r", "requests": [origin.url("/r.bin")]})
    proxy.wait_for("r", result="success")
    data = origin.data("/r.bin")
    etag = origin.etag("/r.bin")
    cases = [  # (Range, If-Range, status, body, Content-Range)
        (f"bytes={HUGE}-", None, 416, None, "bytes */1000"),
        (f"bytes={HUGE}-{HUGE}", None, 416, None, "bytes */1000"),
        (f"bytes=0-{HUGE}", None, 206, data, "bytes 0-999/1000"),
        (f"bytes=-{HUGE}", None, 206, data, "bytes 0-999/1000"),
        (f"bytes={'0' * 5000}5-{'0' * 5000}9", None, 206, data[5:10], "bytes 5-9/1000"),
        (f"bytes={HUGE}-1", None, 200, data, None),  # last before first: not a valid range, ignored
        (f"bytes=0-9, {HUGE}-", None, 200, data, None),  # several ranges: the whole body
        ("bytes=\u0663-5".encode(), None, 200, data, None),  # an Arabic-Indic digit is no DIGIT
        ("bytes=0-9", HUGE, 200, data, None),  # If-Range of another version: the whole body
        ("bytes=0-9", etag, 206, data[:10], "bytes 0-9/1000"),
        ("bytes=0-9", origin.last_modified("/r.bin"), 206, data[:10], "bytes 0-9/1000"),  # the stored date
        ("bytes=0-9", "W/" + etag, 200, data, None),  # a weak validator never matches (RFC 9110 13.1.5)
    ]
    urls = [proxy.api_url("/api/fetches/r/records/0/body"), f"{API}/fetches/r/records/0/body", origin.url("/r.bin")]
    with proxy.client() as through:
        for url in urls:
            client = through if url != urls[0] else httpx.Client(timeout=10)
            for value, if_range, status, body, content_range in cases:
                sent = {"Range": value, **({"If-Range": if_range} if if_range else {})}
                response = client.get(url, headers=sent)
                assert response.status_code == status, (url, value[:40], response.text[:200])
                if body is not None:
                    assert response.content == body, (url, value[:40])
                assert response.headers.get("content-range") == content_range, (url, value[:40])
    assert origin.count("/r.bin") == 1  # every answer came from the store


def test_last_event_id_of_any_length(proxy):
    for name in ("Last-Event-ID", "lastEventId"):
        for value in (HUGE, "12345678901234567890", "\u00b2", "1 2", "-1", ""):  # ² passed isdigit(), not int()
            sent = {"headers": {name: value.encode("latin-1")}} if name == "Last-Event-ID" else {"params": {name: value}}
            found = problem_of(proxy.api("GET", "/api/events", **sent), 400)
            assert found["field"] == name and name in found["detail"], value[:40]
            with proxy.client() as client:
                assert problem_of(client.get(f"{API}/events", **sent), 400)["field"] == name
        sent = {"headers": {name: "1234567890123456789"}} if name == "Last-Event-ID" else {"params": {name: "0"}}
        with httpx.stream("GET", proxy.api_url("/api/events"), timeout=10, **sent) as stream:
            assert stream.status_code == 200 and next(stream.iter_lines()) == "retry: 2000"


def test_a_record_index_of_any_length(origin, proxy):
    origin.add("/i.bin", size=100)
    proxy.api("POST", "/api/fetches", json={"id": "i", "requests": [origin.url("/i.bin")]})
    proxy.wait_for("i", result="success")
    with proxy.client() as client:
        for get in (lambda path: proxy.api("GET", path), lambda path: client.get("http://bgfetch.internal" + path)):
            for index in (HUGE, "2147483648", "99999999999", "1"):
                found = problem_of(get(f"/api/fetches/i/records/{index}/body"), 404)
                assert found["field"] == "index" and "has no record" in found["detail"]
                assert len(found["detail"]) < 200
            assert get("/api/fetches/i/records/%D9%A3/body").status_code == 404  # an Arabic-Indic 3 is no index
            assert get(f"/api/fetches/i/records/{'0' * 5000}/body").content == origin.data("/i.bin")


# -- fuzzing: the same inputs, generated -------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.integers(min_value=1, max_value=4000).map(lambda n: int("9" * n)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["id", "requests", "title", "icons", "downloadTotal", "records", "index", "url", "headers", "src", "x"]), inner, max_size=4),
    max_leaves=20,
)
RAW_BODIES = st.one_of(
    JSON_VALUES.map(json.dumps),
    st.integers(min_value=0, max_value=200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=0, max_value=200_000).map(lambda n: '{"a":' * n + "0" + "}" * n),
    st.integers(min_value=1, max_value=100_000).map(lambda n: f'{{"id": "f", "requests": ["{dead}"], "downloadTotal": {"7" * n}}}'),
    st.integers(min_value=1, max_value=100_000).map(lambda n: f'{{"records": [{{"index": {"3" * n}}}]}}'),
    st.text(alphabet='[]{}",:0123456789\\e.-tfn ', max_size=300),
    st.binary(max_size=200).map(lambda data: data.decode("latin-1")),
)
POSITION = st.one_of(st.just(""), st.from_regex(r"[0-9]{1,20}", fullmatch=True), st.integers(1, 9000).map(lambda n: "9" * n))


def test_fuzzed_json_bodies_never_get_a_server_error(proxy):
    paused(proxy, "p")

    @FUZZ
    @given(body=RAW_BODIES, route=st.sampled_from(BODY_ROUTES))
    def check(body, route):
        response = send(proxy, *route, body)
        assert 400 <= response.status_code < 500 or response.status_code in (200, 201), response.text[:300]
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == response.status_code

    check()


def test_fuzzed_range_if_range_event_ids_and_indexes_never_get_a_server_error(origin, proxy):
    origin.add("/z.bin", size=500)
    proxy.api("POST", "/api/fetches", json={"id": "z", "requests": [origin.url("/z.bin")]})
    proxy.wait_for("z", result="success")
    header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)

    @FUZZ
    @given(
        ranges=st.one_of(st.tuples(POSITION, POSITION).map(lambda p: f"bytes={p[0]}-{p[1]}"), header_text),
        if_range=st.one_of(st.none(), header_text, POSITION),
        event_id=st.one_of(POSITION, header_text),
        index=POSITION.filter(bool),
    )
    def check(ranges, if_range, event_id, index):
        sent = {"Range": ranges, **({"If-Range": if_range} if if_range is not None else {})}
        body = proxy.api("GET", "/api/fetches/z/records/0/body", headers=sent)
        assert body.status_code in (200, 206, 416), (ranges, body.text[:200])
        events = proxy.api("GET", "/api/events", params={"lastEventId": event_id}) if not event_id.isdigit() else None
        assert events is None or events.status_code == 400
        record = proxy.api("GET", f"/api/fetches/z/records/{index}/body")
        assert record.status_code in (200, 404)

    check()
