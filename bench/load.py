"""Load on one bgfetch store: many small requests, many readers of one body, a queue of registrations, loop lag."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from .measure import MB, Api, ProcWatch, background_fetch, curl, curl_sha256, human_size, warm, write_body
from .rig import Rig
from .series import Series, median, percentile
from .servers import LOOPBACK, clean_env
from .sweep import transfer_timeout
from .targets import LAG_LIMIT_MS

SMALL_BODY = 1024
PROBE_SECONDS = 0.010  # the loop-lag probe: one tiny API request every 10 ms
SMALL_PAIRS_PER_RUN = 3
ONE_STREAMS_PER_RUN = 5  # the readers' yardstick is a transfer of a tenth of a second: its median of 5


def _ms(fig: dict, *fields: str) -> str:
    return "  ".join(f"{f.removesuffix('_ms').replace('_', ' ')} {fig[f]:.1f} ms" for f in fields if fig.get(f) is not None)


def small_requests(config: Path, count: int, proxy: str | None, pids: dict) -> tuple[dict, dict]:
    """One curl process fetching the `count` URLs of `config` over one kept-alive connection (through
    `proxy`): `ProcWatch.finish()` of `pids` and the figures (seconds, per second, CPU per request)."""
    cmd = ["curl", "-s", "-K", str(config), "-w", "%{http_code} %{num_connects}\n"] + (["-x", proxy] if proxy else [])
    watch = ProcWatch(pids)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600)
    seconds = time.perf_counter() - t0
    lines = out.stdout.split()
    codes, connects = lines[0::2], [int(c) for c in lines[1::2]]
    if len(codes) != count or set(codes) != {"200"}:
        raise RuntimeError(f"{len(codes)} answers, statuses {sorted(set(codes))}; curl exit {out.returncode}")
    procs = watch.finish()
    # the proxy's CPU time per request: a figure that a busy machine's contention hides less
    used = [p["cpu_seconds"] for p in procs.values() if p["cpu_seconds"] is not None]
    return procs, {"seconds": seconds, "per_second": count / seconds, "connections": sum(connects),
                   "cpu_us_per_request": 1e6 * sum(used) / count if used else None}


def small_config(path: Path, url: str, count: int) -> Path:
    """A curl config of `count` GETs of `url` (each with its own query), bodies to /dev/null."""
    path.write_text("".join(f'url = "{url}?n={n}"\noutput = "/dev/null"\n' for n in range(count)))
    return path


class Load:
    """The load scenarios, in the order that builds each one's state: a stored body to read, then
    the loop lag while it is read, then the queue, then small requests past a store of many records."""

    def __init__(self, rig: Rig, runs: int, *, small_requests: int, clients: int, readers_size: int,
                 registrations: int, lag_size: int):
        self.rig, self.runs = rig, runs
        self.small_count, self.clients, self.readers_size = small_requests, clients, readers_size
        self.registrations, self.lag_size = registrations, lag_size
        www = rig.www
        self.small, self.readers_body, self.lag_body = www / "small.bin", www / "readers.bin", www / "lag.bin"
        n = f"{small_requests:,}"
        self.series = {
            "small_direct": Series("small_direct", f"{n} small requests, direct", self._rate),
            "small_plain": Series("small_plain", f"{n} small requests, plain mitmdump", self._rate),
            "small_bgfetch": Series("small_bgfetch", f"{n} small requests, bgfetch mitmdump", self._rate),
            "small_empty": Series("small_empty", f"{n} small requests, mitmdump + empty script", self._rate),
            "one_stream": Series("one_stream", f"one plain mitmdump stream of {human_size(readers_size)} (median of {ONE_STREAMS_PER_RUN})"),
            "readers": Series("readers", f"{clients} clients reading one stored {human_size(readers_size)}"),
            "readers_plain": Series("readers_plain",
                                    f"{clients} clients reading {human_size(readers_size)}, plain mitmdump"),
            "queue": Series("queue", f"{registrations:,} registrations queued at once",
                            lambda f: f"{f['succeeded']:.0f} succeeded in {f['seconds']:.1f} s; GET /api/fetches "
                                      + _ms(f, "median_ms", "p99_ms", "max_ms")),
            "lag": Series("lag", "API latency (loop lag seen from outside) while serving + 4 transfers write",
                          lambda f: _ms(f, "idle_median_ms", "median_ms", "p99_ms", "max_ms")
                                    + f"; {f['over_limit']:.0f} of {f['probes']:.0f} probes over {LAG_LIMIT_MS:g} ms"),
        }

    def _rate(self, fig: dict) -> str:
        cpu = f", {fig['cpu_us_per_request']:.0f} µs CPU/request" if fig.get("cpu_us_per_request") else ""
        return f"{fig['per_second']:8.0f} req/s  {fig['seconds']:7.3f} s  {fig['connections']:.0f} connection(s){cpu}"

    def measure(self) -> dict:
        self.small.write_bytes(b"x" * SMALL_BODY)
        self.small.chmod(0o644)
        self.readers_sha256 = write_body(self.readers_body, self.readers_size)
        write_body(self.lag_body, self.lag_size)
        self.stored_url = self.rig.nginx.url(self.readers_body.name)
        try:
            if self.rig.fresh_bgfetch():
                self._store_readers_body()
            for key in ("readers", "queue", "lag", "small_bgfetch"):
                if self.rig.bg_skip:
                    self.series[key].skipped = self.rig.bg_skip
            for step in (self.readers, self.lag, self.queue, self.small_requests):
                for run in range(1, self.runs + 1):
                    self.rig.settle()  # not beside the copy of the last step's WAL
                    step(run)
        finally:
            for body in (self.small, self.readers_body, self.lag_body):
                body.unlink(missing_ok=True)
        return {k: s.summary() for k, s in self.series.items()}

    def _store_readers_body(self) -> None:
        """Untimed: the body that the readers and the loop-lag scenario read, fetched into the store."""
        try:
            background_fetch(self.rig.bg.proxy, self.rig.bg.api_port, self.stored_url, "readers",
                             self.readers_size, transfer_timeout(self.readers_size))
        except Exception as e:
            for key in ("readers", "lag"):
                self.series[key].skipped = f"storing the body to read failed: {e}"

    def _bg_ready(self, key: str, run: int) -> bool:
        """Whether the bgfetch scenario `key` can run now (a failure is kept when it cannot)."""
        if self.series[key].skipped:
            return False
        if not self.rig.bg_alive():
            self.series[key].fail(run, f"the bgfetch mitmdump has died\n{self.rig.bg.logs() if self.rig.bg else ''}")
            return False
        return True

    # -- 2,000 small requests over one keep-alive connection ---------------------------------------------

    def small_requests(self, run: int) -> None:
        """One curl process, `count` URLs from a config file, one connection kept alive (curl reuses it).
        SMALL_PAIRS_PER_RUN pairs of plain and bgfetch runs: each takes about 2 s, and the machine's noise
        from one to the next (±8 %) is larger than the addon's cost, so the median needs many pairs."""
        config = small_config(self.rig.tmp / "small-urls.txt", self.rig.nginx.url(self.small.name), self.small_count)
        for pair in range(SMALL_PAIRS_PER_RUN):
            self._small_pair(config, (run - 1) * SMALL_PAIRS_PER_RUN + pair + 1)

    def _small_pair(self, config: Path, run: int) -> None:
        proxies = [("small_plain", self.rig.plain.proxy, {"mitmdump": self.rig.plain.proc.pid}),
                   ("small_empty", self.rig.empty.proxy, {"mitmdump": self.rig.empty.proc.pid})]
        if self._bg_ready("small_bgfetch", run):
            proxies.append(("small_bgfetch", self.rig.bg.proxy, self.rig.bg.pids()))
        if run % 2 == 0:  # alternate which proxy goes first, so neither always meets the warmer machine
            proxies.reverse()
        for key, proxy, pids in [("small_direct", None, {}), *proxies]:
            try:
                procs, figures = small_requests(config, self.small_count, proxy, pids)
                self.series[key].record(run, procs, **figures)
            except Exception as e:
                self.series[key].fail(run, e)

    # -- many clients reading one stored body --------------------------------------------------------------

    def readers(self, run: int) -> None:
        size, n = self.readers_size, self.clients
        warm(self.readers_body)
        try:
            watch = ProcWatch({"mitmdump": self.rig.plain.proc.pid})
            streams = [curl(self.stored_url, proxy=self.rig.plain.proxy, timeout=transfer_timeout(size))
                       for _ in range(ONE_STREAMS_PER_RUN)]
            if bad := [r for r in streams if (r.status, r.size) != (200, size)]:
                raise RuntimeError(f"HTTP {bad[0].status}, {bad[0].size} bytes")
            self.series["one_stream"].record(run, watch.finish(), seconds=median([r.seconds for r in streams]),
                                             bytes=size)
        except Exception as e:
            self.series["one_stream"].fail(run, e)
        timeout = transfer_timeout(size * n)
        # the same crowd through plain mitmdump from nginx: what mitmproxy itself does with 100
        # streams (and a history like the bgfetch mitmdump's for the small requests that follow)
        warm(self.readers_body)
        self._crowd("readers_plain", run, self.rig.plain.proxy, {"mitmdump": self.rig.plain.proc.pid}, timeout)
        if not self._bg_ready("readers", run):
            return
        warm(*self.rig.stored_files())
        self._crowd("readers", run, self.rig.bg.proxy, self.rig.bg.pids(), timeout)
        if run == self.runs:
            try:
                self.check_readers(timeout)
            except Exception as e:
                self.series["readers"].fail(run, f"checking the bodies: {e}")

    def _crowd(self, key: str, run: int, proxy: str, pids: dict, timeout: float) -> None:
        """`clients` curls at once, each reading the whole body through `proxy`."""
        size, n = self.readers_size, self.clients
        try:
            watch = ProcWatch(pids)
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                results = list(pool.map(lambda _: curl(self.stored_url, proxy=proxy, timeout=timeout), range(n)))
            seconds = time.perf_counter() - t0
            bad = [r for r in results if (r.status, r.size) != (200, size)]
            if bad:
                raise RuntimeError(f"{len(bad)} of {n} clients got a wrong answer, e.g. HTTP {bad[0].status}, "
                                   f"{bad[0].size} bytes")
            self.series[key].record(run, watch.finish(), seconds=seconds, bytes=size * n)
        except Exception as e:
            self.series[key].fail(run, e)

    def check_readers(self, timeout: float) -> None:
        """Untimed (hashing costs the client CPU the proxy needs): `clients` readers at once, each body's sha256."""
        with concurrent.futures.ThreadPoolExecutor(self.clients) as pool:
            got = list(pool.map(lambda _: curl_sha256(self.stored_url, proxy=self.rig.bg.proxy, timeout=timeout),
                                range(self.clients)))
        same = sum(1 for digest, size in got if (digest, size) == (self.readers_sha256, self.readers_size))
        self.series["readers"].facts.update(identical=same, sha256_ok=same == self.clients)
        print(f"  {self.series['readers'].name:<44} {same} of {self.clients} bodies byte-identical (sha256)", flush=True)

    # -- the event loop's lag, seen from outside ---------------------------------------------------------

    def lag(self, run: int) -> None:
        """GET /api/fetches/readers every 10 ms: idle first, then while the stored body is read through the
        proxy over and over and 4 background fetches write. The latency of that tiny request bounds the
        store's event-loop lag from above (it adds HTTP parsing, a SQLite read and the JSON)."""
        if not self._bg_ready("lag", run):
            return
        bg, api = self.rig.bg, Api(self.rig.bg.api_port)
        ids = [f"lag-{run}-{k}" for k in range(4)]
        stop = threading.Event()
        served = []

        def serve() -> None:
            for _ in range(1000):  # bounded; ends when the transfers do
                if stop.is_set():
                    return
                served.append(curl(self.stored_url, proxy=bg.proxy, timeout=transfer_timeout(self.readers_size)).size)

        reader = threading.Thread(target=serve, daemon=True)
        try:
            idle = [self._probe(api) for _ in range(50)]
            watch = ProcWatch(bg.pids())
            reader.start()
            url = self.rig.nginx.url(self.lag_body.name)
            for fetch_id in ids:
                r = curl(f"{url}?lag={fetch_id}", proxy=bg.proxy, timeout=60,
                         headers=[f'Background-Fetch: id="{fetch_id}", respond=accepted'])
                if r.status != 202:
                    raise RuntimeError(f"starting {fetch_id}: HTTP {r.status}, expected 202")
            t0, busy, done = time.perf_counter(), [], {}
            deadline = t0 + transfer_timeout(4 * self.lag_size)
            while len(done) < len(ids) and time.perf_counter() < deadline:
                busy.append(self._probe(api))
                if len(busy) % 20 == 0:  # every ~0.2 s: which transfers have ended (not timed)
                    for fetch_id in ids:
                        reg = api.get(f"/api/fetches/{fetch_id}")[2] or {}
                        if reg.get("result"):
                            done[fetch_id] = reg["result"]
            seconds = time.perf_counter() - t0
            failed = {k: v for k, v in done.items() if v != "success"} | {k: "unfinished" for k in ids if k not in done}
            if failed:
                raise RuntimeError(f"transfers that did not succeed: {failed}")
            self.series["lag"].record(run, watch.finish(), seconds=seconds, probes=len(busy), served_mb=sum(served) / MB,
                                      over_limit=sum(1 for b in busy if b > LAG_LIMIT_MS / 1000),
                                      idle_median_ms=1000 * median(idle), median_ms=1000 * median(busy),
                                      p99_ms=1000 * percentile(busy, 99), max_ms=1000 * max(busy))
        except Exception as e:
            self.series["lag"].fail(run, e)
        finally:
            stop.set()
            if reader.is_alive():
                reader.join(timeout=transfer_timeout(self.readers_size))
            api.close()

    def _probe(self, api: Api) -> float:
        seconds, status, _ = api.get("/api/fetches/readers")
        if status != 200:
            raise RuntimeError(f"GET /api/fetches/readers answered {status}")
        time.sleep(PROBE_SECONDS)
        return seconds

    # -- a queue of registrations ----------------------------------------------------------------------

    def queue(self, run: int) -> None:
        """`registrations` background fetches made at once through the proxy (a client process with 8
        connections); meanwhile GET /api/fetches on the listen port, timed, until none is active."""
        if not self._bg_ready("queue", run):
            return
        bg, count, prefix = self.rig.bg, self.registrations, f"q{run}-"
        api = Api(bg.api_port)
        cmd = [sys.executable, "-m", "bench.clients", "register", bg.proxy,
               self.rig.nginx.url(f"{self.small.name}?q={prefix}"), prefix, str(count), "8"]
        client = None
        try:
            watch = ProcWatch(bg.pids())
            t0 = time.perf_counter()
            client = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                                      text=True, env=clean_env())
            latencies, deadline = [], t0 + 120 + count * 0.5
            while time.perf_counter() < deadline:
                seconds, status, body = api.get("/api/fetches")
                latencies.append(seconds)
                if status != 200:
                    raise RuntimeError(f"GET /api/fetches answered {status}")
                if client.poll() is not None and not body["ids"]:
                    break
                time.sleep(0.02)
            drained = time.perf_counter() - t0
            made = json.loads(client.communicate(timeout=60)[0] or "{}")
            if made.get("statuses") != {"202": count}:
                raise RuntimeError(f"the client got {made.get('statuses')} (errors: {made.get('errors')})")
            results = [(api.get(f"/api/fetches/{prefix}{n}")[2] or {}).get("result") for n in range(count)]
            self.series["queue"].record(
                run, watch.finish(), seconds=drained, created_seconds=made["seconds"], per_second=count / drained,
                succeeded=results.count("success"), polls=len(latencies), median_ms=1000 * median(latencies),
                p99_ms=1000 * percentile(latencies, 99), max_ms=1000 * max(latencies))
        except Exception as e:
            self.series["queue"].fail(run, e)
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
            api.close()
