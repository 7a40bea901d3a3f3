"""Sustained work as a user does it: rounds of "background-fetch a body, then serve it through the
proxy", back to back, without a sync or a settled store between them; each fetch against plain
mitmdump streams of the same body, and the bytes the store process wrote against the bodies'."""

from __future__ import annotations

from .measure import ProcWatch, background_fetch, curl, human_size, warm, write_body, written_bytes
from .rig import Rig
from .series import Series, median
from .sweep import transfer_timeout

PLAIN_STREAMS = 3  # before the rounds and after them: the yardstick is the median of the six


def _disk(fig: dict) -> str:
    return (f"{fig['written_ratio']:.2f}× the bodies ({fig['written_bytes'] / 1e9:.2f} GB written, "
            f"{fig['cancelled_bytes'] / 1e9:.2f} GB of it truncated before it reached the disk)")


class Sustained:
    """`runs` runs of `rounds` rounds each, on a fresh store per run."""

    def __init__(self, rig: Rig, runs: int, size: int, rounds: int):
        self.rig, self.runs, self.size, self.rounds = rig, runs, size, rounds
        self.body = rig.www / f"sustained-{size}.bin"
        body = human_size(size)
        self.series = {
            "plain": Series("plain", f"plain mitmdump, {body} (median of {2 * PLAIN_STREAMS} around the rounds)"),
            **{f"fetch_{n}": Series(f"fetch_{n}", f"round {n}: background fetch of {body}") for n in range(1, rounds + 1)},
            **{f"serve_{n}": Series(f"serve_{n}", f"round {n}: served through the proxy") for n in range(1, rounds + 1)},
            "disk": Series("disk", f"bytes the store wrote over {rounds} rounds", _disk),
        }

    def measure(self) -> dict:
        write_body(self.body, self.size)
        try:
            for run in range(1, self.runs + 1):
                if not self.rig.fresh_bgfetch():
                    for s in self.series.values():
                        s.skipped = self.rig.bg_skip
                    break
                try:
                    self._run(run)
                except Exception as e:
                    self.series["disk"].fail(run, e)
        finally:
            self.body.unlink(missing_ok=True)
        return {k: s.summary() for k, s in self.series.items()}

    def _plain(self) -> list[float]:
        url, plain = self.rig.nginx.url(self.body.name), self.rig.plain.proxy
        results = [curl(url, proxy=plain, timeout=transfer_timeout(self.size)) for _ in range(PLAIN_STREAMS)]
        if bad := [r for r in results if (r.status, r.size) != (200, self.size)]:
            raise RuntimeError(f"plain mitmdump: HTTP {bad[0].status}, {bad[0].size} bytes")
        return [r.seconds for r in results]

    def _run(self, run: int) -> None:
        bg, timeout = self.rig.bg, transfer_timeout(self.size)
        warm(self.body)  # the origin's file in the page cache; then no sync until the end
        plain = self._plain()
        store = bg.pids()["store"]
        before = written_bytes(store)
        for n in range(1, self.rounds + 1):
            url = f"{self.rig.nginx.url(self.body.name)}?run={run}&round={n}"
            watch = ProcWatch(bg.pids())
            seconds, _ = background_fetch(bg.proxy, bg.api_port, url, f"sustained-{run}-{n}", self.size, timeout)
            self.series[f"fetch_{n}"].record(run, watch.finish(), seconds=seconds, bytes=self.size)
            watch = ProcWatch(bg.pids())
            served = curl(url, proxy=bg.proxy, timeout=timeout)
            if (served.status, served.size) != (200, self.size):
                raise RuntimeError(f"round {n}: served HTTP {served.status}, {served.size} bytes")
            self.series[f"serve_{n}"].record(run, watch.finish(), seconds=served.seconds, bytes=self.size)
        plain += self._plain()
        self.series["plain"].record(run, seconds=median(plain), bytes=self.size)
        if self.rig.settle(timeout=4 * timeout) is None:  # what the store still had to write, counted too
            raise RuntimeError("the store did not settle after the rounds")
        after = written_bytes(store)
        if before is None or after is None:
            raise RuntimeError(f"/proc/{store}/io cannot be read")
        written, cancelled = after[0] - before[0], after[1] - before[1]
        self.series["disk"].record(run, written_bytes=written, cancelled_bytes=cancelled,
                                   written_ratio=written / (self.rounds * self.size))
