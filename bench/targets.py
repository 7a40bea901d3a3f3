"""Issue 8's targets, judged from one run's results: each a ratio taken in the same run, PASS, MISS or n/a."""

from __future__ import annotations

from .measure import human_size
from .series import paired_ratio
from .sweep import worst_rss

RSS_LIMIT_MB = 150.0
# "flat": the peak at the largest body is at most this much (or 10 %) above the one at the next
# largest (1 GiB against 4 GiB in a full run). Both transfers last long enough to fill every
# bounded buffer (the store's: chunks waiting for the writer, about 8 MiB); a 64 MiB one ends in
# a tenth of a second, before they fill, so it would count that window as growth.
FLAT_MB = 10.0
LATENCY_LIMIT_MS = 50.0
LAG_LIMIT_MS = 50.0
STARTUP_LIMIT_S = 3.0
FIRST_SCREEN_LIMIT_S = 1.0
WRITER_STALL_LIMIT_MS = 100.0


def _target(what: str, target: str, ok: bool | None, measured: str, why: str = "") -> dict:
    return {"what": what, "target": target, "ok": ok, "measured": measured, "why": why}


def _missing(*summaries: dict | None) -> str:
    """Why a target cannot be judged: the first scenario it needs that has no figures."""
    for sc in summaries:
        if sc is None:
            return "not measured in this run"
        if sc.get("skipped"):
            return f"{sc['name']}: {sc['skipped']}"
    return ""


def _ratio_target(what: str, want: float, a: dict | None, b: dict | None, versus: str, field: str = "mbps",
                  at_most: bool = False, also: str = "") -> dict:
    """a/b (median of the per-run ratios) against `want`: at least, or with `at_most` at most."""
    target = f"{'≤' if at_most else '≥'} {want:g}× {versus}"
    why = _missing(a, b)
    ratio = None if why else paired_ratio(a, b, field)
    if ratio is None:
        return _target(what, target, None, "n/a", why or "no run with both figures")
    shown = "{:,.3f} s" if field == "seconds" else "{:,.0f} MB/s"
    measured = f"{ratio:.2f}× ({shown.format(a[field]).split()[0]} vs {shown.format(b[field])})" + also
    return _target(what, target, ratio <= want if at_most else ratio >= want, measured)


def _paired(a: dict | None, b: dict | None, field: str = "mbps") -> float | None:
    """a/b, the median of the per-run ratios; None when either scenario has no figures."""
    return None if _missing(a, b) else paired_ratio(a, b, field)


def _cpu_per_request(a: dict | None, b: dict | None) -> str:
    """The same comparison in CPU time per request, which a busy machine's contention distorts less."""
    ratio = _paired(a, b, "cpu_us_per_request")
    if ratio is None:
        return ""
    return f"; CPU per request {ratio:.2f}× ({a['cpu_us_per_request']:.0f} vs {b['cpu_us_per_request']:.0f} µs)"


def _empty_script_floor(empty: dict | None, plain: dict | None) -> str:
    """What a script with nothing in it costs mitmdump: the floor under any addon."""
    ratio = _paired(empty, plain, "seconds")
    return "" if ratio is None else f"; an empty script: {ratio:.2f}×"


def _crowd_through_plain(readers: dict | None, plain: dict | None) -> str:
    """The same crowd of readers through plain mitmdump from the origin, for scale."""
    ratio = _paired(readers, plain)
    return "" if ratio is None else f"; the same clients through plain mitmdump: {plain['mbps']:,.0f} MB/s ({ratio:.2f}×)"


def _rss_targets(throughput: list[dict]) -> list[dict]:
    """Peak RSS of mitmdump and of the store, fetching and serving, at the largest body vs the next largest."""
    out = []
    for proc in ("mitmdump", "store"):
        what = f"peak RSS of {'mitmproxy' if proc == 'mitmdump' else 'the store'}, fetching and serving"
        target = f"< {RSS_LIMIT_MB:.0f} MB, flat in the body's size"
        peaks = {t["size"]: mb for t in throughput if (mb := worst_rss(t["scenarios"], proc))}
        if not peaks:
            out.append(_target(what, target, None, "n/a", "no bgfetch run succeeded"))
            continue
        sizes = sorted(peaks)
        small, large = sizes[-2] if len(sizes) > 1 else sizes[0], sizes[-1]
        flat = peaks[large] <= peaks[small] + max(FLAT_MB, 0.1 * peaks[small])
        measured = ", ".join(f"{peaks[s]:.0f} MB at {human_size(s)}" for s in sizes)
        out.append(_target(what, target, max(peaks.values()) < RSS_LIMIT_MB and flat, measured,
                           "" if flat else f"grows by more than {FLAT_MB:.0f} MB or 10 % from {human_size(small)} to {human_size(large)}"))
    return out


def evaluate(result: dict) -> list[dict]:
    """Every row of issue 8's table that this run measured, or n/a with the reason."""
    size = result["target_size"]
    at = next((t["scenarios"] for t in result["throughput"] if t["size"] == size), {})
    load, counts = result["load"], result["counts"]
    body = human_size(size)
    out = [
        _ratio_target(f"background fetch of {body}, time to success", 0.8, at.get("bgfetch_fetch"), at.get("plain"),
                      "plain mitmdump"),
        _ratio_target(f"background fetch of {body}, time to success", 2, at.get("bgfetch_fetch"), at.get("squid_miss"),
                      "Squid on a miss"),
        _ratio_target(f"a stored {body} body served through the proxy", 1.1, at.get("bgfetch_serve_proxy"),
                      at.get("plain"), "plain mitmdump"),
        _ratio_target("the same body read from the listen port (records body)", 2, at.get("bgfetch_serve_direct"),
                      at.get("squid_hit"), "Squid on a hit"),
        _ratio_target(f"{counts['small_requests']:,} small requests that no rule matches, keep-alive, time", 1.05,
                      load.get("small_bgfetch"), load.get("small_plain"), "plain mitmdump's", "seconds", at_most=True,
                      also=_cpu_per_request(load.get("small_bgfetch"), load.get("small_plain"))
                      + _empty_script_floor(load.get("small_empty"), load.get("small_plain"))),
        *_rss_targets(result["throughput"]),
    ]
    readers = load.get("readers")
    what = f"{counts['clients']} clients reading one stored {human_size(counts['readers_size'])} body at once"
    why = _missing(readers) or ("" if readers.get("sha256_ok") is not None else "not checked")
    out += [
        _target(what + ": byte-identical", "all sha256 equal", None if why else readers["sha256_ok"],
                f"{readers['identical']} of {counts['clients']}" if not why else "n/a", why),
        _ratio_target(what + ": aggregate", 1.0, readers, load.get("one_stream"), "one plain mitmdump stream",
                      also=_crowd_through_plain(readers, load.get("readers_plain"))),
        *_queue_targets(load.get("queue"), counts["registrations"]),
        _lag_target(load.get("lag")),
        *_scale_targets(result.get("scale") or {}, counts.get("scale", 0)),
        *_delete_target(result.get("delete"), counts.get("delete_size")),
        *_sustained_targets(result.get("sustained") or {}, counts),
        *_tls_targets(result.get("tls") or {}, size),
        *_segmented_targets(result.get("segmented") or {}, counts),
    ]
    return out


def _sustained_targets(sc: dict, counts: dict) -> list[dict]:
    """Every round's fetch against plain mitmdump (the worst round of the medians), and the bytes written."""
    if not sc:
        return []
    rounds, body = counts["rounds"], human_size(counts["sustained_size"])
    what = f"{rounds} rounds of a {body} background fetch then served, back to back (no sync)"
    fetches = [sc.get(f"fetch_{n}") for n in range(1, rounds + 1)]
    why = _missing(*fetches, sc.get("plain"))
    ratios = [] if why else [paired_ratio(f, sc["plain"]) for f in fetches]
    fetch = (_target(what + ": every fetch", "≥ 0.8× plain mitmdump", None, "n/a", why) if why or None in ratios else
             _target(what + ": every fetch", "≥ 0.8× plain mitmdump", min(ratios) >= 0.8,
                     f"worst {min(ratios):.2f}×; rounds " + ", ".join(f"{r:.2f}" for r in ratios)
                     + f" (plain {sc['plain']['mbps']:,.0f} MB/s)"))
    disk, what_disk = sc.get("disk"), what + ": bytes the store process wrote"
    if why := _missing(disk):
        return [fetch, _target(what_disk, "≤ 1.3× the bodies", None, "n/a", why)]
    worst = max(r["written_ratio"] for r in disk["runs"])
    return [fetch, _target(what_disk, "≤ 1.3× the bodies", worst <= 1.3,
                           f"{disk['written_ratio']:.2f}× (worst run {worst:.2f}×; /proc/<pid>/io write_bytes)")]


def _tls_targets(sc: dict, size: int) -> list[dict]:
    if not sc:
        return []
    body = human_size(size)
    return [
        _ratio_target(f"background fetch of {body} from an HTTPS origin", 0.9, sc.get("fetch"), sc.get("plain_h1"),
                      "plain mitmdump (HTTPS)"),
        _ratio_target(f"a stored {body} body served over intercepted HTTPS, HTTP/1.1", 1.1, sc.get("serve_h1"),
                      sc.get("plain_h1"), "plain mitmdump (HTTPS, HTTP/1.1)"),
        _ratio_target(f"a stored {body} body served over intercepted HTTPS, HTTP/2", 1.1, sc.get("serve_h2"),
                      sc.get("plain_h2"), "plain mitmdump (HTTPS, HTTP/2)"),
    ]


def _segmented_targets(sc: dict, counts: dict) -> list[dict]:
    if not sc:
        return []
    return [_ratio_target(f"background fetch of {human_size(counts['segmented_size'])} from an origin capping each"
                          " connection (limit_rate)", 3.5, sc.get("fetch"), sc.get("direct"), "direct curl")]


def _delete_target(sc: dict | None, size: int | None) -> list[dict]:
    """The slowest write (PATCH of another registration) around a DELETE of a big body, in the worst run."""
    if not sc or not size:
        return []
    what = f"DELETE of a {human_size(size)} body: writer stall (PATCH of another registration every 10 ms)"
    target = f"never > {WRITER_STALL_LIMIT_MS:g} ms"
    if why := _missing(sc):
        return [_target(what, target, None, "n/a", why)]
    worst = max(r["write_max_ms"] for r in sc["runs"])
    return [_target(what, target, worst <= WRITER_STALL_LIMIT_MS,
                    f"max {worst:.0f} ms (p99 {sc['write_p99_ms']:.0f}, idle median {sc['write_idle_ms']:.1f}); "
                    f"the DELETE answered in {sc['delete_ms']:.0f} ms, the space was back after "
                    f"{sc['space_back_seconds']:.1f} s; reads max {sc['read_max_ms']:.0f} ms")]


def _below(what: str, limit: float, unit: str, sc: dict | None, field: str, also: str = "", digits: int = 2) -> dict:
    """The median of `field` (the worst run's too) under `limit`."""
    target = f"< {limit:g} {unit}"
    if why := _missing(sc):
        return _target(what, target, None, "n/a", why)
    worst = max(r[field] for r in sc["runs"])
    return _target(what, target, sc[field] < limit, f"{sc[field]:.{digits}f} {unit} (worst run {worst:.{digits}f})" + also)


def _scale_targets(scale: dict, count: int) -> list[dict]:
    """The rows of issue 17 for a store of `count` registrations."""
    if not scale:
        return []
    n = f"{count:,} registrations stored"
    keys = ("api_active", "api_all", "api_deep", "api_dashboard")
    listings = [scale.get(k) for k in keys]
    why = _missing(*listings)
    worst = max(listings, key=lambda sc: sc["median_ms"]) if not why else None
    empty = scale.get("startup_empty")
    return [
        _below(f"{n}: proxy start-up (until it passes a request and serves a stored URL)", STARTUP_LIMIT_S, "s",
               scale.get("startup"), "seconds",
               "" if _missing(empty) else f"; an empty store: {empty['seconds']:.2f} s"),
        _ratio_target(f"{n}: small requests that no rule matches, time", 1.05, scale.get("small_scale"),
                      scale.get("small_plain"), "plain mitmdump's", "seconds", at_most=True,
                      also=_cpu_per_request(scale.get("small_scale"), scale.get("small_plain"))),
        _below(f"{n}: peak RSS of mitmproxy", RSS_LIMIT_MB, "MB", scale.get("rss"), "mitmdump_mb", digits=0),
        _target(f"{n}: GET /api/fetches, a page at a time", f"median < {LATENCY_LIMIT_MS:g} ms",
                None if why else worst["median_ms"] < LATENCY_LIMIT_MS,
                "n/a" if why else ", ".join(f"{k.removeprefix('api_')} {sc['median_ms']:.1f} ms"
                                            for k, sc in zip(keys, listings)), why),
        _below(f"dashboard with {count:,} registrations in Chromium: first screen", FIRST_SCREEN_LIMIT_S, "s",
               scale.get("dashboard"), "seconds"),
    ]


def _queue_targets(sc: dict | None, asked: int) -> list[dict]:
    what = f"{asked:,} registrations queued at once (concurrency 4)"
    why = _missing(sc)
    if why:
        return [_target(what + ": all succeed", "all success", None, "n/a", why),
                _target(what + ": GET /api/fetches meanwhile", f"median < {LATENCY_LIMIT_MS:g} ms", None, "n/a", why)]
    runs = sc["runs"]
    all_ok = all(r["succeeded"] == asked for r in runs) and not sc["errors"]
    worst = min(r["succeeded"] for r in runs)
    return [
        _target(what + ": all succeed", "all success", all_ok,
                f"{worst:,} of {asked:,} in the worst of {len(runs)} runs" + (f"; {len(sc['errors'])} runs failed" if sc["errors"] else "")),
        _target(what + ": GET /api/fetches meanwhile", f"median < {LATENCY_LIMIT_MS:g} ms", sc["median_ms"] < LATENCY_LIMIT_MS,
                f"median {sc['median_ms']:.1f} ms, p99 {sc['p99_ms']:.1f} ms, max {sc['max_ms']:.1f} ms"),
    ]


def _lag_target(sc: dict | None) -> dict:
    what = "event-loop lag of the store while serving and 4 transfers write"
    target = f"never > {LAG_LIMIT_MS:g} ms"
    why = _missing(sc)
    if why:
        return _target(what, target, None, "n/a", why)
    worst = max(r["max_ms"] for r in sc["runs"])
    return _target(what, target, sc["max_ms"] <= LAG_LIMIT_MS,
                   f"max {sc['max_ms']:.1f} ms (worst run {worst:.1f}), p99 {sc['p99_ms']:.1f} ms, median "
                   f"{sc['median_ms']:.1f} ms; idle median {sc['idle_median_ms']:.1f} ms",
                   "measured from outside: the latency of GET /api/fetches/<id> every 10 ms")
