"""End to end, through a real mitmdump and origin: /metrics scraped with prometheus_client's own
parser while a background fetch pauses and resumes and a stored body is served (store/engine/
metrics.py, store/web/operations.py); /healthz and /readyz, unready while another process
holds the database's lock; the token; the log lines of the state changes, as text and as JSON
(store/engine/changelog.py, store/proxyside/pipes.py)."""

import json
import sqlite3

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from harness.metrics import Scrape, moved
from harness.poll import eventually

MiB = 1 << 20


def scrape(proxy, **headers: str) -> Scrape:
    response = proxy.api("GET", "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return Scrape(response.text)


def test_counters_move_by_what_a_fetch_with_a_pause_and_a_served_body_did(origin, proxy):
    origin.add("/ep.bin", size=2 * MiB)
    origin.behave("/ep.bin", throttle=MiB, cut_after=MiB // 2, cuts=1)
    url = origin.url("/ep.bin")
    before = scrape(proxy)
    proxy.background(url, 'id="ep"')
    proxy.wait_until("ep", lambda r: r["state"] == "fetching" and r["downloaded"] > 0)
    during = scrape(proxy)
    assert during("bgfetch_transfers", state="running") == 1
    assert during("bgfetch_registrations", state="fetching", result="none", reason="none") == 1
    assert moved(before, during, "bgfetch_registrations_created_total") == 1
    with proxy.client() as client:  # while it downloads (and pauses once): served as it arrives
        streamed = client.get(url)
    assert streamed.content == origin.data("/ep.bin")
    proxy.wait_for("ep", result="success")
    with proxy.client() as client:  # stored: the origin is not asked
        stored = client.get(url)
        part = client.get(url, headers={"Range": "bytes=0-99"})
    assert stored.content == origin.data("/ep.bin") and part.content == origin.data("/ep.bin")[:100]
    assert origin.count("/ep.bin") == 2  # the first request, and the resume after the cut
    after = scrape(proxy)

    for event, times in {"start": 2, "pause": 1, "retry": 1, "succeed": 1, "fail": 0, "abort": 0}.items():
        assert moved(before, after, "bgfetch_transitions_total", event=event) == times, event
    assert moved(before, after, "bgfetch_pauses_total", reason="connection-lost") == 1
    assert moved(before, after, "bgfetch_retries_total", reason="connection-lost") == 1
    assert moved(before, after, "bgfetch_transitions_total", event="pause") == after.total("bgfetch_pauses_total")
    assert moved(before, after, "bgfetch_registrations_finished_total", result="success", reason="none") == 1
    assert moved(before, after, "bgfetch_fetched_bytes_total") == origin.body_bytes_sent("/ep.bin") == 2 * MiB
    assert moved(before, after, "bgfetch_served_bytes_total", route="proxy", source="transfer") == 2 * MiB
    assert moved(before, after, "bgfetch_served_responses_total", route="proxy", source="transfer") == 1
    assert moved(before, after, "bgfetch_served_bytes_total", route="proxy", source="store") == 2 * MiB + 100
    assert moved(before, after, "bgfetch_served_responses_total", route="proxy", source="store") == 2
    assert after("bgfetch_registrations", state="done", result="success", reason="none") == 1
    assert after("bgfetch_transfers", state="running") == after("bgfetch_transfers", state="paused") == 0
    assert after("bgfetch_store_bytes") == 2 * MiB
    assert after("bgfetch_wal_bytes") >= 0 and after("bgfetch_database_bytes") > 0 and after("bgfetch_bodies_bytes") > 0
    assert after("bgfetch_event_loop_lag_seconds_count") >= 1

    # through the proxy, at bgfetch_host, the same store's metrics
    with proxy.client() as client:
        through = Scrape(client.get("http://bgfetch.internal/metrics").text)
    assert through("bgfetch_fetched_bytes_total") == after("bgfetch_fetched_bytes_total")
    # the log: a line per state change, the pause's retry and start folded into the resumed line
    lines = [line for line in proxy.log.read_text().splitlines() if "id=ep " in line]
    states = [line.split("state=")[1].split()[0] for line in lines]
    assert states == ["pending", "fetching", "paused", "fetching", "done"], lines
    assert "reason=connection-lost" in lines[2] and "resumed=true" in lines[3] and f"url={url}" in lines[0]
    assert "result=success" in lines[4] and f"bytes={2 * MiB}" in lines[4]


def test_revalidations_count_their_outcome_and_the_bytes_they_serve(origin, proxy):
    origin.add("/stale.bin", size=300_000, headers={"Cache-Control": "no-cache"})  # stale at once
    origin.add("/fresh.bin", size=1000, headers={"Cache-Control": "max-age=3600"})
    for path in ("/stale.bin", "/fresh.bin"):
        proxy.background(origin.url(path), f'id="{path[1:-4]}"')
        proxy.wait_for(path[1:-4], result="success")
    size = 300_000

    def get(path: str) -> bytes:
        with proxy.client() as client:
            return client.get(origin.url(path)).content

    def renewed() -> bool:  # the new entity stored in the old one's place
        etag = origin.etag("/stale.bin")
        eventually(lambda: proxy.api("GET", "/api/fetches/stale/records").json()["records"][0]["response"]["headers"],
                   until=lambda fields: ["etag", etag] in fields, what="the renewal to take the old one's place")
        return True

    steps = [  # what happens; then how each outcome and source moves, and the bytes from the origin
        (lambda: get("/stale.bin") == origin.data("/stale.bin"), {"not-modified": 1}, {"revalidated": size}, 0),
        (lambda: get("/fresh.bin") == origin.data("/fresh.bin"), {}, {"store": 1000}, 0),
        (lambda: origin.behave("/stale.bin", status=503) or get("/stale.bin") == origin.data("/stale.bin"),
         {"origin-error": 1}, {"revalidated": size}, 0),
        (lambda: origin.reset_behaviour("/stale.bin") or origin.change("/stale.bin")  # stored as it is served
         or get("/stale.bin") == origin.data("/stale.bin") and renewed(), {"modified": 1}, {"origin": size}, size),
        (lambda: origin.stop() or get("/stale.bin") == origin.data("/stale.bin"),
         {"unreachable": 1}, {"revalidated": size}, 0),
    ]
    for n, (act, outcomes, sources, fetched) in enumerate(steps):
        before = scrape(proxy)
        assert act(), n
        after = scrape(proxy)
        for outcome in ("not-modified", "modified", "unreachable", "origin-error", "other"):
            assert moved(before, after, "bgfetch_revalidations_total", outcome=outcome) == outcomes.get(outcome, 0), n
        for source in ("store", "revalidated", "transfer", "origin"):
            assert moved(before, after, "bgfetch_served_bytes_total", route="proxy", source=source) == sources.get(source, 0), n
            assert moved(before, after, "bgfetch_served_responses_total", route="proxy", source=source) == (source in sources), n
        assert moved(before, after, "bgfetch_fetched_bytes_total") == fetched, n


def test_labels_carry_no_url_and_openmetrics_is_offered(origin, proxy):
    origin.add("/secret-name.bin", size=1000)
    proxy.background(origin.url("/secret-name.bin"), 'id="a-private-id"')
    proxy.wait_for("a-private-id", result="success")
    text = proxy.api("GET", "/metrics").text
    assert "secret-name" not in text and "a-private-id" not in text and "127.0.0.1" not in text
    response = proxy.api("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in openmetrics_families(response.text)}
    assert families["bgfetch_registrations_created"].samples[0].value == 1


def test_the_token_protects_metrics_as_it_does_the_api_and_not_the_health_checks(make_proxy):
    proxy = make_proxy("bgfetch_token=s3cret").start()
    assert proxy.api("GET", "/metrics").status_code == 401
    with proxy.client() as client:
        assert client.get("http://bgfetch.internal/metrics").status_code == 401
        assert client.get("http://bgfetch.internal/readyz").status_code == 200
    scraped = scrape(proxy, Authorization="Bearer s3cret")
    assert scraped("bgfetch_transfer_slots") == 4
    for path in ("/healthz", "/readyz"):
        assert proxy.api("GET", path).status_code == 200, path


def test_readyz_is_unready_while_another_process_holds_the_database_lock_and_ready_after(proxy):
    ready = proxy.api("GET", "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "parts": [{"part": "store", "ready": True},
                                                         {"part": "database", "ready": True}]}
    holder = sqlite3.connect(proxy.db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        unready = proxy.api("GET", "/readyz")
        assert unready.status_code == 503
        database = unready.json()["parts"][1]
        assert database["part"] == "database" and not database["ready"]
        assert f"database locked by another process: {proxy.db}" in database["detail"]
        assert proxy.api("GET", "/healthz").json() == {"status": "ok"}  # the process still answers
        with proxy.client() as client:
            assert client.get("http://bgfetch.internal/readyz").status_code == 503
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    eventually(lambda: proxy.api("GET", "/readyz").status_code, 10, until=lambda status: status == 200,
               what="/readyz to answer 200 once the lock is given back")


def test_json_lines_carry_each_state_change_for_log_shippers(origin, make_proxy):
    proxy = make_proxy("bgfetch_log_format=json").start()
    origin.add("/j.bin", size=1000)
    origin.behave("/j.bin", status=404)
    proxy.background(origin.url("/j.bin"), 'id="j"')
    proxy.wait_for("j", result="failure")
    proxy.wait_for_log('"state": "done"')
    found = []
    for line in proxy.log.read_text().splitlines():
        text = line.partition("] ")[2]  # after mitmdump's [time]
        if text.startswith("{") and '"id": "j"' in text:
            found.append(json.loads(text))
    assert [(f["state"], f["result"], f["reason"]) for f in found] == [
        ("pending", "", ""), ("fetching", "", ""), ("done", "failure", "bad-status")]
    assert all(f["level"] == "info" and f["logger"] == "store.fetches" and f["url"] == origin.url("/j.bin")
               for f in found)
    assert "time" in found[0] and found[-1]["bytes"] == 0
