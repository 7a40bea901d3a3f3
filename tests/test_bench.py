"""Unit tests of the bench's arithmetic and verdicts on made-up runs: medians, paired ratios, PASS/MISS/n/a,
the report, Squid's log, free ports. They need no server; bench/soak.py's own run: test_soak.py."""

from pathlib import Path

from bench import report, servers, targets
from bench.series import Series, paired_ratio, percentile
from bench.squid import Squid
from bench.sweep import SCENARIOS

GIB = 1 << 30


def series(key: str, figures: list[dict], procs: list[dict] | None = None) -> dict:
    s = Series(key, key)
    for run, fig in enumerate(figures, 1):
        s.runs.append({"run": run, "seconds": 1.0, "mbps": 1.0, **fig, "procs": (procs or [{}] * len(figures))[run - 1]})
    return s.summary()


def rss(mitmdump: float, store: float) -> dict:
    return {p: {"peak_rss_mb": mb, "cpu_pct": 50.0, "threads_pct": [40.0, 10.0], "peak_is_lifetime": False}
            for p, mb in (("mitmdump", mitmdump), ("store", store))}


def result(fetch_mbps: float, serve_mbps: float, store_rss_4g: float) -> dict:
    """Throughput at 1 GiB and 4 GiB: plain 500 MB/s, Squid 200 (miss) and 800 (hit); no load part."""
    def at(size: int, store_rss: float) -> dict:
        sc = {k: {"key": k, "name": k, "skipped": "not measured", "runs": [], "errors": []} for k in SCENARIOS}
        sc["plain"] = series("plain", [{"mbps": 500}, {"mbps": 500}, {"mbps": 500}])
        sc["squid_miss"] = series("squid_miss", [{"mbps": 200}] * 3)
        sc["squid_hit"] = series("squid_hit", [{"mbps": 800}] * 3)
        for key, mbps in (("bgfetch_fetch", fetch_mbps), ("bgfetch_serve_proxy", serve_mbps),
                          ("bgfetch_serve_direct", 2000)):
            copied = {"wal_copied_seconds": 2.5} if key == "bgfetch_fetch" else {}
            sc[key] = series(key, [{"mbps": mbps, **copied}] * 3, [rss(100, store_rss)] * 3)
        return {"size": size, "scenarios": sc}

    return {"target_size": GIB, "throughput": [at(GIB, 80), at(4 * GIB, store_rss_4g)], "load": {},
            "counts": {"small_requests": 2000, "clients": 100, "readers_size": 100 << 20, "registrations": 1000}}


def verdicts(res: dict) -> dict[str, bool | None]:
    return {f"{t['what']} {t['target']}": t["ok"] for t in targets.evaluate(res)}


def test_percentile_and_paired_ratio():
    assert percentile([5, 1, 4, 2, 3], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([], 99) is None
    # each run's ratio is taken before the median: 2.0, 1.0, 3.0 -> 2.0 (the ratio of medians would be 1.5)
    a = series("a", [{"mbps": 200}, {"mbps": 300}, {"mbps": 900}])
    b = series("b", [{"mbps": 100}, {"mbps": 300}, {"mbps": 300}])
    assert paired_ratio(a, b) == 2.0


def test_summary_takes_medians_and_the_worst_rss():
    s = series("k", [{"seconds": 3.0}, {"seconds": 1.0}, {"seconds": 2.0}],
               [rss(90, 70), rss(120, 60), rss(100, 65)])
    assert s["seconds"] == 2.0
    assert s["rss_mitmdump_mb"] == 120 and s["rss_store_mb"] == 70


def test_targets_pass_miss_and_na():
    got = verdicts(result(fetch_mbps=450, serve_mbps=600, store_rss_4g=82))
    assert got["background fetch of 1 GiB, time to success ≥ 0.8× plain mitmdump"] is True
    assert got["background fetch of 1 GiB, time to success ≥ 2× Squid on a miss"] is True
    assert got["a stored 1 GiB body served through the proxy ≥ 1.1× plain mitmdump"] is True
    assert got["the same body read from the listen port (records body) ≥ 2× Squid on a hit"] is True
    assert got["peak RSS of the store, fetching and serving < 150 MB, flat in the body's size"] is True
    # the load part did not run: its targets are n/a, not PASS
    assert got["2,000 small requests that no rule matches, keep-alive, time ≤ 1.05× plain mitmdump's"] is None

    got = verdicts(result(fetch_mbps=350, serve_mbps=500, store_rss_4g=140))
    assert got["background fetch of 1 GiB, time to success ≥ 0.8× plain mitmdump"] is False
    assert got["a stored 1 GiB body served through the proxy ≥ 1.1× plain mitmdump"] is False
    # 140 MB is under the limit but not flat: 80 MB at 1 GiB
    assert got["peak RSS of the store, fetching and serving < 150 MB, flat in the body's size"] is False

    # a 64 MiB fetch ends before the store's bounded buffers fill: flatness is judged from 1 to 4 GiB
    res = result(fetch_mbps=450, serve_mbps=600, store_rss_4g=88)
    res["throughput"].insert(0, {**res["throughput"][0], "size": 64 << 20})
    res["throughput"][0]["scenarios"] = {k: {**v, "rss_store_mb": 70} if k.startswith("bgfetch") else v
                                         for k, v in res["throughput"][0]["scenarios"].items()}
    rows = {t["what"]: t for t in targets.evaluate(res)}
    store = rows["peak RSS of the store, fetching and serving"]
    assert store["ok"] is True and store["measured"] == "70 MB at 64 MiB, 80 MB at 1 GiB, 88 MB at 4 GiB"


def test_markdown_names_every_target_and_its_verdict():
    res = result(fetch_mbps=350, serve_mbps=600, store_rss_4g=82)
    res.update(started="2026-01-01T00:00:00+00:00", profile="full", runs=3, sizes=[GIB, 4 * GIB],
               machine={k: "x" for k in ("nproc", "cpu", "memory", "kernel", "python", "mitmproxy", "sqlite",
                                         "nginx", "squid", "curl")})
    res["targets"] = targets.evaluate(res)
    text = report.markdown(res)
    assert "| background fetch of 1 GiB, time to success | ≥ 0.8× plain mitmdump | 0.70× (350 vs 500 MB/s) | MISS |" in text
    assert "| 4 GiB | – | 500 | 200 | 800 | 350 | 600 | 2000 | 2.5 | – / 100 / 82 |" in text


def test_squid_status_of_the_last_request_for_a_url(tmp_path: Path):
    squid = Squid("squid", tmp_path, 100)
    url = "http://127.0.0.1:1/body.bin?squid=1"
    squid.access_log.write_text(
        f"1.0 10 127.0.0.1 TCP_MISS/200 100 GET {url} - HIER_DIRECT/127.0.0.1 application/octet-stream\n"
        f"2.0 10 127.0.0.1 TCP_MISS/200 100 GET {url}0 - HIER_DIRECT/127.0.0.1 application/octet-stream\n"
        f"3.0 10 127.0.0.1 TCP_HIT/200 100 GET {url} - HIER_NONE/- application/octet-stream\n")
    assert squid.last_status(url) == "TCP_HIT"
    assert squid.last_status(url + "0") == "TCP_MISS"
    assert squid.last_status("http://127.0.0.1:1/other") is None


def test_small_requests_against_plain_with_the_empty_script_floor():
    res = result(fetch_mbps=450, serve_mbps=600, store_rss_4g=82)
    res["load"] = {
        "small_plain": series("small_plain", [{"seconds": 2.0, "cpu_us_per_request": 1000}] * 9),
        "small_empty": series("small_empty", [{"seconds": 2.04, "cpu_us_per_request": 1020}] * 9),
        "small_bgfetch": series("small_bgfetch", [{"seconds": 2.06, "cpu_us_per_request": 1030}] * 8
                                + [{"seconds": 4.0, "cpu_us_per_request": 2000}]),  # one noisy pair of nine
    }
    row = next(t for t in targets.evaluate(res) if t["what"].startswith("2,000 small requests"))
    assert row["ok"] is True
    assert row["measured"] == ("1.03× (2.060 vs 2.000 s); CPU per request 1.03× (1030 vs 1000 µs); "
                               "an empty script: 1.02×")


def test_free_ports_are_never_handed_out_twice(monkeypatch):
    given = iter([40001, 40002, 40001, 40003])  # the kernel may offer a port again before it is bound

    class FakeSocket:
        def __init__(self, *args):
            self.port = next(given)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            pass

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(servers.socket, "socket", FakeSocket)
    monkeypatch.setattr(servers, "_HANDED_OUT", set())
    assert [servers.free_port() for _ in range(3)] == [40001, 40002, 40003]


def test_readers_against_one_plain_stream_with_the_same_crowd_through_plain_for_scale():
    res = result(fetch_mbps=450, serve_mbps=600, store_rss_4g=82)
    res["load"] = {
        "one_stream": series("one_stream", [{"mbps": 800}] * 3),
        "readers": {**series("readers", [{"mbps": 840}] * 3), "sha256_ok": True, "identical": 100},
        "readers_plain": series("readers_plain", [{"mbps": 700}] * 3),
    }
    row = next(t for t in targets.evaluate(res) if t["what"].endswith("at once: aggregate"))
    assert row["ok"] is True
    assert row["measured"] == "1.05× (840 vs 800 MB/s); the same clients through plain mitmdump: 700 MB/s (1.20×)"


def test_a_store_of_many_registrations_judged_by_its_medians():
    res = result(fetch_mbps=450, serve_mbps=600, store_rss_4g=82)
    res["counts"]["scale"] = 100_000
    listing = [{"median_ms": 2.0}, {"median_ms": 3.0}, {"median_ms": 60.0}]
    res["scale"] = {
        "startup_empty": series("startup_empty", [{"seconds": 1.8}] * 3),
        "startup": series("startup", [{"seconds": 2.0}, {"seconds": 2.2}, {"seconds": 3.4}]),
        "rss": series("rss", [{"mitmdump_mb": 104.4}] * 3),
        "small_plain": series("small_plain", [{"seconds": 2.0}] * 3),
        "small_scale": series("small_scale", [{"seconds": 2.2}] * 3),
        **{f"api_{k}": series(f"api_{k}", listing) for k in ("active", "all", "deep")},
        "api_dashboard": series("api_dashboard", [{"median_ms": 4.0}] * 3),
    }
    rows = {t["what"]: t for t in targets.evaluate(res)}
    startup = rows["100,000 registrations stored: proxy start-up (until it passes a request and serves a stored URL)"]
    assert (startup["ok"], startup["measured"]) == (True, "2.20 s (worst run 3.40); an empty store: 1.80 s")
    assert rows["100,000 registrations stored: small requests that no rule matches, time"]["ok"] is False  # 1.10×
    assert rows["100,000 registrations stored: peak RSS of mitmproxy"]["measured"] == "104 MB (worst run 104)"
    listed = rows["100,000 registrations stored: GET /api/fetches, a page at a time"]
    assert (listed["ok"], listed["measured"]) == (True, "active 3.0 ms, all 3.0 ms, deep 3.0 ms, dashboard 4.0 ms")
    assert rows["dashboard with 100,000 registrations in Chromium: first screen"]["ok"] is None  # not measured


def test_a_delete_is_judged_by_its_slowest_write_in_the_worst_run():
    res = result(fetch_mbps=450, serve_mbps=600, store_rss_4g=82)
    res["counts"]["delete_size"] = 4 * GIB
    figures = {"delete_ms": 8.0, "space_back_seconds": 5.0, "write_idle_ms": 1.4, "write_p99_ms": 40.0,
               "read_max_ms": 20.0}
    res["delete"] = series("delete", [{**figures, "write_max_ms": ms} for ms in (60.0, 70.0, 120.0)])
    row = next(t for t in targets.evaluate(res) if t["what"].startswith("DELETE of a 4 GiB body"))
    assert row["ok"] is False and row["measured"].startswith("max 120 ms (p99 40, idle median 1.4)")


def test_sustained_rounds_tls_and_a_capped_origin_judged_in_one_run():
    res = result(fetch_mbps=450, serve_mbps=600, store_rss_4g=82)
    res["counts"].update(rounds=3, sustained_size=GIB, segmented_size=GIB)
    res["sustained"] = {
        "plain": series("plain", [{"mbps": 500}] * 3),
        **{f"fetch_{n}": series(f"fetch_{n}", [{"mbps": mbps}] * 3) for n, mbps in ((1, 600), (2, 380), (3, 450))},
        "disk": series("disk", [{"written_ratio": r} for r in (1.1, 1.2, 1.25)]),
    }
    res["tls"] = {"plain_h1": series("plain_h1", [{"mbps": 300}] * 3), "plain_h2": series("plain_h2", [{"mbps": 250}] * 3),
                  "fetch": series("fetch", [{"mbps": 280}] * 3), "serve_h1": series("serve_h1", [{"mbps": 340}] * 3),
                  "serve_h2": series("serve_h2", [{"mbps": 260}] * 3)}
    res["segmented"] = {"direct": series("direct", [{"mbps": 26}] * 3), "fetch": series("fetch", [{"mbps": 95}] * 3)}
    rows = {t["what"]: t for t in targets.evaluate(res)}
    rounds = "3 rounds of a 1 GiB background fetch then served, back to back (no sync)"
    assert rows[f"{rounds}: every fetch"]["ok"] is False  # round 2: 0.76×
    assert rows[f"{rounds}: every fetch"]["measured"] == "worst 0.76×; rounds 1.20, 0.76, 0.90 (plain 500 MB/s)"
    assert rows[f"{rounds}: bytes the store process wrote"]["ok"] is True
    assert rows["background fetch of 1 GiB from an HTTPS origin"]["ok"] is True  # 0.93×
    assert rows["a stored 1 GiB body served over intercepted HTTPS, HTTP/1.1"]["ok"] is True  # 1.13×
    assert rows["a stored 1 GiB body served over intercepted HTTPS, HTTP/2"]["ok"] is False  # 1.04×
    capped = rows["background fetch of 1 GiB from an origin capping each connection (limit_rate)"]
    assert (capped["ok"], capped["measured"]) == (True, "3.65× (95 vs 26 MB/s)")
