"""An origin that caps each connection (nginx `limit_rate`, as many CDNs and mirrors do): a body
through direct curl, one connection, against a background fetch, which may open several `Range`
connections (`bgfetch_segments`); the stored body checked byte for byte."""

from __future__ import annotations

from .measure import ProcWatch, background_fetch, curl, curl_sha256, human_size, warm, write_body
from .rig import Rig
from .series import Series
from .servers import LIMIT_RATE, LOOPBACK


class Segmented:
    def __init__(self, rig: Rig, runs: int, size: int):
        self.rig, self.runs, self.size = rig, runs, size
        self.body = rig.www / f"segmented-{size}.bin"
        self.timeout = 120 + size / 5_000_000  # 5 MB/s at the least: far below the cap
        body = human_size(size)
        self.series = {
            "direct": Series("direct", f"direct curl, limit_rate {LIMIT_RATE} per connection ({body})"),
            "fetch": Series("fetch", f"bgfetch background fetch, same origin ({body})"),
        }

    def measure(self) -> dict:
        sha256 = write_body(self.body, self.size)
        try:
            for run in range(1, self.runs + 1):
                self._run(run, sha256)
        finally:
            self.body.unlink(missing_ok=True)
        return {k: s.summary() for k, s in self.series.items()}

    def _run(self, run: int, sha256: str) -> None:
        rig, url = self.rig, self.rig.nginx.limited_url(self.body.name)
        warm(self.body)
        try:
            r = curl(url, timeout=self.timeout)
            if (r.status, r.size) != (200, self.size):
                raise RuntimeError(f"HTTP {r.status}, {r.size} bytes")
            self.series["direct"].record(run, seconds=r.seconds, bytes=r.size)
        except Exception as e:
            self.series["direct"].fail(run, e)
        if not rig.fresh_bgfetch():
            self.series["fetch"].skipped = rig.bg_skip
            return
        fetch_id = f"segmented-{run}"
        warm(self.body)
        try:
            watch = ProcWatch(rig.bg.pids())
            seconds, _ = background_fetch(rig.bg.proxy, rig.bg.api_port, f"{url}?run={run}", fetch_id, self.size,
                                          self.timeout)
            procs = watch.finish()
            body = f"http://{LOOPBACK}:{rig.bg.api_port}/api/fetches/{fetch_id}/records/0/body"
            identical = curl_sha256(body, timeout=self.timeout) == (sha256, self.size)
            if not identical:
                raise RuntimeError("the stored body differs from the origin's")
            self.series["fetch"].record(run, procs, seconds=seconds, bytes=self.size, identical=1)
        except Exception as e:
            self.series["fetch"].fail(run, e)
