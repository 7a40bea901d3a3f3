"""HTTPS, as most real downloads are: a background fetch from nginx over TLS, and the stored body
served to a client over intercepted HTTPS (HTTP/1.1 and HTTP/2), each beside plain mitmdump
doing the same HTTPS (it decrypts the origin's TLS and encrypts the client's)."""

from __future__ import annotations

from .measure import ProcWatch, background_fetch, curl, curl_sha256, human_size, warm, write_body
from .rig import Rig
from .series import Series
from .sweep import transfer_timeout

SCENARIOS = {
    "direct": "direct curl over TLS",
    "plain_h1": "plain mitmdump, HTTPS, HTTP/1.1",
    "plain_h2": "plain mitmdump, HTTPS, HTTP/2",
    "fetch": "bgfetch background fetch of an HTTPS origin",
    "serve_h1": "bgfetch stored body, intercepted HTTPS, HTTP/1.1",
    "serve_h2": "bgfetch stored body, intercepted HTTPS, HTTP/2",
}
VERSION = {"h1": "--http1.1", "h2": "--http2"}


class Tls:
    def __init__(self, rig: Rig, runs: int, size: int):
        self.rig, self.runs, self.size = rig, runs, size
        self.body = rig.www / f"tls-{size}.bin"
        self.series = {k: Series(k, f"{name} ({human_size(size)})") for k, name in SCENARIOS.items()}
        self.timeout = transfer_timeout(size)

    def measure(self) -> dict:
        self.sha256 = write_body(self.body, self.size)
        try:
            for run in range(1, self.runs + 1):
                self._run(run)
        finally:
            self.body.unlink(missing_ok=True)
        return {k: s.summary() for k, s in self.series.items()}

    def _timed(self, key: str, run: int, url: str, proxy, pids: dict, extra: list[str], warm_first) -> bool:
        warm(*warm_first)
        return self.series[key].timed(run, pids, self.size, lambda: curl(
            url, proxy=proxy.proxy if proxy else None, timeout=self.timeout, extra=extra))

    def _run(self, run: int) -> None:
        rig = self.rig
        url = rig.nginx.https_url(self.body.name)
        self._timed("direct", run, url, None, {}, ["-k"], [self.body])
        for version, flag in VERSION.items():
            self._timed(f"plain_{version}", run, url, rig.plain, {"mitmdump": rig.plain.proc.pid},
                        ["--cacert", str(rig.plain.ca), flag], [self.body])
        if not rig.fresh_bgfetch():
            for key in ("fetch", "serve_h1", "serve_h2"):
                self.series[key].skipped = rig.bg_skip
            return
        bg, stored_url = rig.bg, f"{url}?run={run}"
        warm(self.body)
        try:
            watch = ProcWatch(bg.pids())
            seconds, _ = background_fetch(bg.proxy, bg.api_port, stored_url, f"tls-{run}", self.size, self.timeout,
                                          extra=["--cacert", str(bg.ca)])
            procs = watch.finish()
            rig.settle()
            self.series["fetch"].record(run, procs, seconds=seconds, bytes=self.size)
        except Exception as e:
            self.series["fetch"].fail(run, e)
            return
        for version, flag in VERSION.items():
            self._timed(f"serve_{version}", run, stored_url, bg, bg.pids(), ["--cacert", str(bg.ca), flag],
                        rig.stored_files())
        if run == self.runs:
            digest, n = curl_sha256(stored_url, bg.proxy, self.timeout, extra=["--cacert", str(bg.ca), "--http2"])
            ok = (digest, n) == (self.sha256, self.size)
            self.series["serve_h2"].facts["sha256_ok"] = ok
            print(f"  {self.series['serve_h2'].name:<44} sha256 {'matches' if ok else 'DIFFERS'}", flush=True)
