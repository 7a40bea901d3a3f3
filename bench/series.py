"""The runs of one scenario: each run's figures as they come, the errors, and the medians over the runs."""

from __future__ import annotations

import math
import statistics
from typing import Callable

from .measure import MB, CurlResult, ProcWatch


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values: list[float], p: float) -> float | None:
    """The `p`-th percentile (0-100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def throughput(fig: dict) -> str:
    """How a transfer's run is printed: MB/s and seconds (and when the store's WAL was copied, after a fetch)."""
    copied = fig.get("wal_copied_seconds")
    return f"{fig['mbps']:8.0f} MB/s  {fig['seconds']:7.3f} s" + (f"  WAL copied {copied:.1f} s later" if copied else "")


class Series:
    """One scenario (e.g. "plain mitmdump at 1 GiB"): a figures dict per run, medians in `summary()`.

    `show` formats one run's figures for the progress line printed as each run ends."""

    def __init__(self, key: str, name: str, show: Callable[[dict], str] = throughput):
        self.key, self.name, self.show = key, name, show
        self.runs: list[dict] = []
        self.errors: list[str] = []
        self.skipped: str | None = None
        self.facts: dict = {}  # what is true of the whole series, e.g. {"sha256_ok": True}

    def record(self, run: int, procs: dict | None = None, **figures) -> dict:
        """Keep one run's figures; `seconds` and `bytes` give `mbps`; `procs` is `ProcWatch.finish()`."""
        if "bytes" in figures and figures.get("seconds"):
            figures["mbps"] = figures["bytes"] / figures["seconds"] / MB
        rec = {"run": run, **figures, "procs": procs or {}}
        self.runs.append(rec)
        procs = "  ".join(f"{k} {v['peak_rss_mb']:.0f} MB {v['cpu_pct']:.0f}% CPU (busiest threads "
                          f"{'/'.join(f'{t:.0f}' for t in v['threads_pct'])}%)"
                          for k, v in rec["procs"].items() if None not in (v["peak_rss_mb"], v["cpu_pct"]))
        print(f"  {self.name:<44} {self.show(rec)}  {procs}", flush=True)
        return rec

    def timed(self, run: int, pids: dict, size: int, transfer: Callable[[], CurlResult],
              check: Callable[[CurlResult], None] = lambda r: None) -> bool:
        """Run one timed `transfer` of a whole body of `size` bytes, watching `pids`, and keep its
        figures; False when it failed (or `check` raised), the failure kept."""
        try:
            watch = ProcWatch(pids)
            r = transfer()
            if (r.status, r.size) != (200, size):
                raise RuntimeError(f"{self.name}: HTTP {r.status}, {r.size} bytes, expected 200 and {size}")
            check(r)
            self.record(run, watch.finish(), seconds=r.seconds, bytes=r.size)
            return True
        except Exception as e:
            self.fail(run, e)
            return False

    def fail(self, run: int, err: BaseException | str) -> None:
        self.errors.append(f"run {run}: {err}")
        print(f"  {self.name:<44} FAILED: {err}", flush=True)

    def summary(self) -> dict:
        """Medians of every numeric figure over the runs; worst peak RSS and median CPU per process."""
        out: dict = {"key": self.key, "name": self.name, "runs": self.runs, "errors": self.errors, **self.facts}
        if self.skipped:
            out["skipped"] = self.skipped
            return out
        if not self.runs:
            out["skipped"] = "no run succeeded" + (f": {self.errors[-1]}" if self.errors else "")
            return out
        fields = {k for r in self.runs for k, v in r.items()
                  if k != "run" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for field in sorted(fields):
            out[field] = median([r.get(field) for r in self.runs])
        for proc in sorted({p for r in self.runs for p in r["procs"]}):
            vals = [r["procs"][proc] for r in self.runs if proc in r["procs"]]
            rss = [v["peak_rss_mb"] for v in vals if v["peak_rss_mb"] is not None]
            out[f"rss_{proc}_mb"] = max(rss) if rss else None  # the worst run, not the median
            out[f"cpu_{proc}_pct"] = median([v["cpu_pct"] for v in vals])
            out[f"top_thread_{proc}_pct"] = median([max(v["threads_pct"], default=None) for v in vals])
        out["text"] = " ".join(self.show(out).split())
        return out


def paired_ratio(a: dict, b: dict, field: str = "mbps") -> float | None:
    """Median over the runs of a[run] / b[run] (two summaries): each ratio is taken from two measurements
    of the same run, seconds apart, so a machine that slows down for a while slows both."""
    av, bv = ({r["run"]: r[field] for r in s.get("runs", []) if r.get(field)} for s in (a, b))
    return median([av[r] / bv[r] for r in av if r in bv])
