"""Scale in count: a store of 100,000 finished registrations, written straight into its SQLite file
(`harness.seed`), under a bgfetch mitmdump: start-up, mitmdump's memory, small requests that no
rule matches, `GET /api/fetches` a page at a time, and the dashboard's first screen in Chromium."""

from __future__ import annotations

import time
from pathlib import Path

from harness.seed import BODY, seed

from .load import small_config, small_requests
from .measure import Api, ProcWatch, curl, peak_rss_mb
from .rig import Rig
from .series import Series, median, percentile

SEEDED_URL = "http://seeded.invalid/file-"  # a host that does not resolve: only the store can answer
SMALL_PAIRS_PER_RUN = 3
API_CALLS = 40  # per kind of listing and run
LISTINGS = {  # what is timed: getIds() as it was, a page of all, a deep page, the dashboard's page
    "active": "/api/fetches",
    "all": "/api/fetches?all=1&limit=1000",
    "deep": "/api/fetches?all=1&limit=1000&cursor={deep}",
    "dashboard": "/api/fetches?all=1&order=newest&limit=50&details=1",
}
CHROMIUM = Path("/usr/bin/chromium")
DASHBOARD_ROWS = 50  # dashboard.html's PAGE


def _seconds(fig: dict) -> str:
    return f"{fig['seconds']:.2f} s"


class Scale:
    """Every scenario on one store of `count` registrations; start-up also on an empty store, the small
    requests also through plain mitmdump, in pairs."""

    def __init__(self, rig: Rig, runs: int, *, count: int, small_requests: int):
        self.rig, self.runs, self.count, self.small_count = rig, runs, count, small_requests
        self.dir = rig.tmp / "scale"
        self.db = self.dir / "bgfetch.sqlite3"
        n = f"{count:,}"
        self.series = {
            "seed": Series("seed", f"writing {n} registrations into the store's file", _seconds),
            "startup_empty": Series("startup_empty", "bgfetch mitmdump start-up, empty store", _seconds),
            "startup": Series("startup", f"bgfetch mitmdump start-up, {n} registrations", _seconds),
            "rss": Series("rss", f"bgfetch mitmdump peak RSS, {n} registrations",
                          lambda f: f"{f['mitmdump_mb']:.0f} MB (store {f['store_mb']:.0f} MB)"),
            "small_plain": Series("small_plain", f"{small_requests:,} small requests, plain mitmdump",
                                  lambda f: f"{f['seconds']:.3f} s"),
            "small_scale": Series("small_scale", f"{small_requests:,} small requests, bgfetch with {n}",
                                  lambda f: f"{f['seconds']:.3f} s"),
            **{f"api_{k}": Series(f"api_{k}", f"GET {path.split('{')[0]} with {n}",
                                  lambda f: f"median {f['median_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms")
               for k, path in LISTINGS.items()},
            "dashboard": Series("dashboard", f"dashboard first screen ({DASHBOARD_ROWS} rows) in Chromium, {n}",
                                _seconds),
        }

    def measure(self) -> dict:
        if self.rig.bg_skip:
            for s in self.series.values():
                s.skipped = self.rig.bg_skip
            return self.summary()
        self.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        seed(str(self.db), self.count, SEEDED_URL)
        self.series["seed"].record(1, seconds=time.perf_counter() - t0)
        small = self.rig.www / "scale-small.bin"
        small.write_bytes(b"x" * 1024)
        small.chmod(0o644)
        self.small_url = self.rig.nginx.url(small.name)
        self.config = small_config(self.rig.tmp / "scale-small-urls.txt", self.small_url, self.small_count)
        try:
            for run in range(1, self.runs + 1):
                self._startup("startup_empty", run, self.dir / f"empty-{run}.sqlite3")
                bg = self._startup("startup", run, self.db)
                if bg is None:
                    continue
                try:
                    self._on_store(bg, run)
                finally:
                    bg.stop()
        finally:
            small.unlink(missing_ok=True)
        return self.summary()

    def summary(self) -> dict:
        return {k: s.summary() for k, s in self.series.items()}

    def _startup(self, key: str, run: int, db: Path):
        """Start a bgfetch mitmdump on `db`; the seconds until it passes a plain request through and
        serves a stored URL (on the empty store: only the first). The running mitmdump, or None."""
        bg = self.rig.bgfetch_mitmdump(f"bgfetch mitmdump ({key})", self.dir / f"{key}-{run}", db)
        try:
            t0 = time.perf_counter()
            bg.start(timeout=120)
            self._until(lambda: curl(self.small_url, proxy=bg.proxy, timeout=10).status == 200)
            if key == "startup":
                self._until(lambda: curl(f"{SEEDED_URL}{self.count - 1}", proxy=bg.proxy, timeout=10).size == len(BODY))
            self.series[key].record(run, seconds=time.perf_counter() - t0)
        except Exception as e:
            self.series[key].fail(run, e)
            bg.stop()
            return None
        if key == "startup_empty":
            bg.stop()
            return None
        return bg

    @staticmethod
    def _until(check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer within {timeout:.0f} s")
            time.sleep(0.02)

    def _on_store(self, bg, run: int) -> None:
        for pair in range(SMALL_PAIRS_PER_RUN):
            sides = [("small_plain", self.rig.plain.proxy, {"mitmdump": self.rig.plain.proc.pid}),
                     ("small_scale", bg.proxy, bg.pids())]
            for key, proxy, pids in sides[::-1] if pair % 2 else sides:
                try:
                    procs, figures = small_requests(self.config, self.small_count, proxy, pids)
                    self.series[key].record((run - 1) * SMALL_PAIRS_PER_RUN + pair + 1, procs, **figures)
                except Exception as e:
                    self.series[key].fail(run, e)
        self._api(bg, run)
        self._dashboard(bg, run)
        pids = bg.pids()
        self.series["rss"].record(run, mitmdump_mb=peak_rss_mb(pids["mitmdump"]), store_mb=peak_rss_mb(pids["store"]))

    def _api(self, bg, run: int) -> None:
        api = Api(bg.api_port)
        try:
            deep = api.get("/api/fetches?all=1&limit=1000")[2]["next"]
            for _ in range(self.count // 2000):  # to the middle of the list
                deep = api.get(f"/api/fetches?all=1&limit=1000&cursor={deep}")[2].get("next", deep)
            for key, path in LISTINGS.items():
                try:
                    watch, times = ProcWatch(bg.pids()), []
                    for _ in range(API_CALLS):
                        seconds, status, body = api.get(path.format(deep=deep))
                        if status != 200 or not isinstance(body, dict) or "ids" not in body:
                            raise RuntimeError(f"GET {path} answered {status}: {str(body)[:200]}")
                        times.append(seconds)
                    self.series[f"api_{key}"].record(run, watch.finish(), median_ms=1000 * median(times),
                                                     p99_ms=1000 * percentile(times, 99), ids=len(body["ids"]))
                except Exception as e:
                    self.series[f"api_{key}"].fail(run, e)
        finally:
            api.close()

    def _dashboard(self, bg, run: int) -> None:
        """Seconds from asking for the page (through the proxy) until its first screen of rows is there."""
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            self.series["dashboard"].skipped = "playwright is not installed"
            return
        if not CHROMIUM.exists():
            self.series["dashboard"].skipped = f"{CHROMIUM} is missing"
            return
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                     args=["--no-sandbox", "--proxy-bypass-list=<-loopback>"])
                try:
                    context = browser.new_context(proxy={"server": bg.proxy})
                    page = context.new_page()
                    t0 = time.perf_counter()
                    page.goto("http://bgfetch.internal/")
                    page.locator("li.fetch").nth(DASHBOARD_ROWS - 1).wait_for(timeout=30_000)
                    seconds = time.perf_counter() - t0
                    rows = page.locator("li.fetch").count()
                    context.close()
                finally:
                    browser.close()
            self.series["dashboard"].record(run, seconds=seconds, rows=rows)
        except Exception as e:
            self.series["dashboard"].fail(run, e)
