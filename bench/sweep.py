"""Throughput against body size: one body through curl, plain mitmdump, Squid and bgfetch, `runs` times per size."""

from __future__ import annotations

from .measure import ProcWatch, background_fetch, curl, curl_sha256, human_size, warm, write_body
from .rig import Rig
from .series import Series
from .servers import LOOPBACK
from .squid import HITS

SCENARIOS = {
    "direct": "direct curl from nginx",
    "plain": "plain mitmdump (stream_large_bodies=1m)",
    "squid_miss": "Squid, miss (first fetch)",
    "squid_hit": "Squid, hit (second fetch)",
    "bgfetch_fetch": "bgfetch background fetch, to success",
    "bgfetch_serve_proxy": "bgfetch stored body via the proxy",
    "bgfetch_serve_direct": "bgfetch stored body from the listen port",
}
BGFETCH = ("bgfetch_fetch", "bgfetch_serve_proxy", "bgfetch_serve_direct")


def worst_rss(scenarios: dict, proc: str, keys: tuple[str, ...] = BGFETCH) -> float | None:
    """The highest peak RSS (MB) of `proc` over these scenarios of one body size; None if none was measured."""
    return max((scenarios[k].get(f"rss_{proc}_mb") or 0 for k in keys), default=0) or None


def transfer_timeout(size: int) -> float:
    return 120 + size / 10_000_000


class SizeRuns:
    """Every scenario at one body size; Squid only when `with_squid` (it is compared at the targets' size)."""

    def __init__(self, rig: Rig, size: int, runs: int, *, with_squid: bool, verify: bool):
        self.rig, self.size, self.runs, self.verify = rig, size, runs, verify
        self.with_squid = with_squid and rig.squid is not None
        self.series = {k: Series(k, f"{n} ({human_size(size)})") for k, n in SCENARIOS.items()}
        self.body = rig.www / f"body-{size}.bin"
        self.timeout = transfer_timeout(size)
        self.last_stored: list[tuple[str, str | None, str]] = []

    def measure(self) -> dict:
        self.sha256 = write_body(self.body, self.size)
        print(f"body of {human_size(self.size)} written; {self.runs} runs", flush=True)
        try:
            for run in range(1, self.runs + 1):
                self.one_run(run)
            if self.verify and self.last_stored:
                self.check_stored()
        finally:
            self.body.unlink(missing_ok=True)
        for key in BGFETCH:
            if self.rig.bg_skip and not self.series[key].runs:
                self.series[key].skipped = self.rig.bg_skip
        if not self.with_squid:
            for key in ("squid_miss", "squid_hit"):
                self.series[key].skipped = self.rig.squid_skip or "measured at the targets' size only"
        return {"size": self.size, "scenarios": {k: s.summary() for k, s in self.series.items()}}

    def _curl(self, key: str, run: int, url: str, proxy: str | None, pids: dict, warm_first: list,
              squid_logs: tuple[str, ...] = ()) -> bool:
        """One timed curl of a whole body; False when it failed (the failure is kept).
        `squid_logs`: the result codes Squid must log for it (a miss must be a miss, a hit a hit)."""
        warm(*warm_first)
        before = self.rig.nginx.requests_seen()

        def check(_) -> None:
            origin = self.rig.nginx.requests_seen() - before
            if key.startswith("bgfetch_serve") and origin:
                raise RuntimeError(f"the origin saw {origin} requests while the store served the body")
            if squid_logs and (got := self.rig.squid.last_status(url)) not in squid_logs:
                raise RuntimeError(f"Squid logged {got} for this request, expected {' or '.join(squid_logs)}")

        return self.series[key].timed(run, pids, self.size, lambda: curl(url, proxy=proxy, timeout=self.timeout), check)

    def one_run(self, run: int) -> None:
        rig, s = self.rig, self.series
        url = rig.nginx.url(self.body.name)
        print(f"{human_size(self.size)}, run {run}/{self.runs}", flush=True)
        self._curl("direct", run, url, None, {}, [self.body])
        self._curl("plain", run, url, rig.plain.proxy, {"mitmdump": rig.plain.proc.pid}, [self.body])
        if self.with_squid:
            self.squid_run(run, f"{url}?squid={run}")
        if not rig.fresh_bgfetch():
            return
        fetch_id, run_url = f"bench-{run}", f"{url}?run={run}"
        warm(self.body)
        try:
            watch = ProcWatch(rig.bg.pids())
            secs, _ = background_fetch(rig.bg.proxy, rig.bg.api_port, run_url, fetch_id, self.size, self.timeout)
            procs = watch.finish()
            copied = rig.settle()  # the WAL's copy into the database, deferred until the writer rests
            s["bgfetch_fetch"].record(run, procs, seconds=secs, bytes=self.size, wal_copied_seconds=copied)
        except Exception as e:
            s["bgfetch_fetch"].fail(run, e)
            for key in BGFETCH[1:]:
                s[key].fail(run, "not measured: the background fetch failed")
            return
        direct = f"http://{LOOPBACK}:{rig.bg.api_port}/api/fetches/{fetch_id}/records/0/body"
        self.last_stored = []
        for key, proxy, target in (("bgfetch_serve_proxy", rig.bg.proxy, run_url),
                                   ("bgfetch_serve_direct", None, direct)):
            if self._curl(key, run, target, proxy, rig.bg.pids(), rig.stored_files()):
                self.last_stored.append((key, proxy, target))

    def squid_run(self, run: int, url: str) -> None:
        """A miss (the origin's file warm), then a hit of the same URL (Squid's cache file warm)."""
        squid = self.rig.squid
        pids = {"squid": squid.proc.pid}
        self._curl("squid_miss", run, url, squid.proxy, pids, [self.body], squid_logs=("TCP_MISS",))
        cached = squid.newest_object()
        self._curl("squid_hit", run, url, squid.proxy, pids, [cached] if cached else [], squid_logs=HITS)

    def check_stored(self) -> None:
        """Untimed: the body a client gets from the store (last run) is byte-identical to the origin's file."""
        for key, proxy, target in self.last_stored:
            digest, n = curl_sha256(target, proxy=proxy, timeout=self.timeout)
            ok = digest == self.sha256 and n == self.size
            self.series[key].facts["sha256_ok"] = ok
            print(f"  {self.series[key].name:<44} sha256 {'matches' if ok else f'DIFFERS ({n} bytes)'}", flush=True)
