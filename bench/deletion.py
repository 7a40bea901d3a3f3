"""DELETE of a big stored body, watched from outside: the latency of a write (PATCH of another
registration's title, which waits for the store's one writer thread) and of a read (GET) every
10 ms, from before the DELETE until the store holds neither its chunks nor their free pages."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
from pathlib import Path

from store.db import schema

from .measure import MB, Api, ProcWatch, background_fetch, curl, human_size, write_body
from .rig import Rig
from .series import Series, median, percentile
from .servers import LOOPBACK
from .sweep import transfer_timeout

PROBE_SECONDS = 0.010
IDLE_PROBES = 50
SPACE_BACK_TIMEOUT = 180.0  # seconds for the store to give the space back after the DELETE


class Writes:
    """A keep-alive connection that times PATCH /api/fetches/<id> (a new title each time)."""

    def __init__(self, port: int, reg_id: str):
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
        self.path, self.n = f"/api/fetches/{reg_id}", 0

    def patch(self) -> float:
        self.n += 1
        body = json.dumps({"title": f"probe {self.n}"})
        t0 = time.perf_counter()
        self.conn.request("PATCH", self.path, body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        seconds = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"PATCH {self.path} answered {resp.status}")
        return seconds

    def close(self) -> None:
        self.conn.close()


def _ms(fig: dict) -> str:
    return (f"DELETE answered in {fig['delete_ms']:.0f} ms; writes max {fig['write_max_ms']:.0f} ms (p99 "
            f"{fig['write_p99_ms']:.0f}, idle median {fig['write_idle_ms']:.1f}), reads max {fig['read_max_ms']:.0f} ms; "
            f"space back after {fig['space_back_seconds']:.1f} s")


class Deletion:
    """Each run: a fresh store, one background fetch of `size` bytes (untimed), then the DELETE, probed."""

    def __init__(self, rig: Rig, runs: int, size: int):
        self.rig, self.runs, self.size = rig, runs, size
        self.body = rig.www / "delete.bin"
        self.series = Series("delete", f"DELETE of a stored {human_size(size)} body, probed every 10 ms", _ms)

    def measure(self) -> dict:
        write_body(self.body, self.size)
        (self.rig.www / "probe.bin").write_bytes(b"p" * 100)
        (self.rig.www / "probe.bin").chmod(0o644)
        try:
            for run in range(1, self.runs + 1):
                if not self.rig.fresh_bgfetch():
                    self.series.skipped = self.rig.bg_skip
                    break
                try:
                    self._run(run)
                except Exception as e:
                    self.series.fail(run, e)
        finally:
            self.body.unlink(missing_ok=True)
        return self.series.summary()

    def _run(self, run: int) -> None:
        bg = self.rig.bg
        background_fetch(bg.proxy, bg.api_port, self.rig.nginx.url("probe.bin"), "probe", 100, 60)
        background_fetch(bg.proxy, bg.api_port, self.rig.nginx.url(self.body.name), "big", self.size,
                         transfer_timeout(self.size))
        if self.rig.settle(timeout=transfer_timeout(self.size)) is None:
            raise RuntimeError("the store's WAL was not copied after the fetch")
        db = Path(self.rig.bg_db)
        api, writes = Api(bg.api_port), Writes(bg.api_port, "probe")
        try:
            idle = [self._probe(writes.patch) for _ in range(IDLE_PROBES)]
            watch = ProcWatch(bg.pids())
            t0 = time.perf_counter()
            deleting = concurrent.futures.ThreadPoolExecutor(1)
            answer = deleting.submit(_delete, bg.api_port, "big")
            write_times, read_times = [], []
            while not answer.done() or (left := _left(db)) > self.size // 16:
                if time.perf_counter() - t0 > SPACE_BACK_TIMEOUT:
                    raise RuntimeError(f"the store did not give the space back within {SPACE_BACK_TIMEOUT:.0f} s "
                                       f"({left / MB:.0f} MB left in chunks and free pages)")
                write_times.append(self._probe(writes.patch))
                read_times.append(self._probe(lambda: api.get("/api/fetches/probe")[0]))
            space_back = time.perf_counter() - t0
            deleting.shutdown()
            status, deleted = answer.result()
            if status != 204:
                raise RuntimeError(f"DELETE answered {status}")
            if curl(self.rig.nginx.url(self.body.name) + "?after", proxy=bg.proxy).size != self.size:
                raise RuntimeError("the proxy does not pass the body's URL through after the DELETE")
            self.series.record(run, watch.finish(), delete_ms=1000 * deleted, space_back_seconds=space_back,
                               write_idle_ms=1000 * median(idle), write_max_ms=1000 * max(write_times or [0]),
                               write_p99_ms=1000 * (percentile(write_times, 99) or 0),
                               read_max_ms=1000 * max(read_times or [0]), probes=len(write_times))
        finally:
            api.close()
            writes.close()

    @staticmethod
    def _probe(call) -> float:
        seconds = call()
        time.sleep(PROBE_SECONDS)
        return seconds


def _left(db: Path) -> int:
    """Bytes the store still holds in body chunks and in free pages not given back (read-only, beside it)."""
    conn = schema.connect(str(db), readonly=True)
    try:
        stored = conn.execute("SELECT COALESCE(SUM(size), 0) FROM chunks").fetchone()[0]
        free = sum(conn.execute(f"PRAGMA {name}.freelist_count").fetchone()[0]
                   * conn.execute(f"PRAGMA {name}.page_size").fetchone()[0] for name in ("main", schema.BODIES))
        return stored + free
    finally:
        conn.close()


def _delete(port: int, reg_id: str) -> tuple[int, float]:
    """(status, seconds) of DELETE /api/fetches/<reg_id>."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
    try:
        t0 = time.perf_counter()
        conn.request("DELETE", f"/api/fetches/{reg_id}")
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t0
    finally:
        conn.close()
