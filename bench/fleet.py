"""A fleet against plain mitmdump (`make bench ARGS="--only fleet"`): two bgfetch nodes on PostgreSQL and SeaweedFS.

Everything runs on this machine: nginx, plain mitmdump, two nodes (each a mitmdump and its
store), PostgreSQL and SeaweedFS (harness/). Per run, one body of `size` through plain mitmdump,
the same body as a background fetch on node A (to success), then served through node B, which
did not fetch it; once, a takeover: node A is killed (kill -9, its store too) a quarter into a
fetch, and the time until node B's copy of it grows again. Medians; ratios in the same run.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from pathlib import Path

from harness.postgres import Postgres
from harness.proxy import Proxy
from harness.seaweed import SeaweedS3

from .measure import MB, background_fetch, curl, human_size, write_body
from .servers import Mitmdump, Nginx, ensure_binary

LEASE = 5  # seconds: bgfetch_lease of the nodes
TARGETS = (  # (key, what, wanted)
    ("fetch", "background fetch on a node, to success, vs plain mitmdump", 0.5),
    ("serve", "a stored body served through a node that did not fetch it, vs plain mitmdump", 0.8),
)


class FleetRuns:
    def __init__(self, tmp: Path, size: int, runs: int) -> None:
        self.tmp, self.size, self.runs = tmp, size, runs
        self.www = tmp / "www"
        self.seconds: dict[str, list[float]] = {"plain": [], "fetch": [], "serve": []}

    def measure(self) -> dict:
        self.www.mkdir(parents=True)
        self.tmp.chmod(0o755)
        self.www.chmod(0o755)
        write_body(self.www / "body.bin", self.size)
        nginx = Nginx(ensure_binary("nginx"), self.tmp / "nginx", self.www).start()
        plain = Mitmdump("plain mitmdump", self.tmp / "plain", []).start()
        nodes: list[Proxy] = []
        try:
            with Postgres() as database, SeaweedS3() as objects:
                db, bodies = database.create_database(), objects.new_bodies()
                for name in "ab":
                    (self.tmp / name).mkdir()
                    nodes.append(Proxy(self.tmp / name, f"bgfetch_bodies={bodies}", f"bgfetch_lease={LEASE}",
                                       db=db, env=objects.credentials).start(60))
                for run in range(1, self.runs + 1):
                    self.one_run(run, nginx, plain, *nodes)
                takeover = self.takeover(nginx, *nodes)
        finally:
            for node in nodes:
                node.stop()
            plain.stop()
            nginx.stop()
        return self.summary(takeover)

    def one_run(self, run: int, nginx: Nginx, plain: Mitmdump, a: Proxy, b: Proxy) -> None:
        url = nginx.url(f"body.bin?run={run}")  # a URL of its own: nothing stored yet
        self.seconds["plain"].append(self._curl(url, plain.proxy))
        seconds, _ = background_fetch(a.url, a.listen_port, url, f"fleet-{run}", self.size, 120 + self.size / 5e6)
        self.seconds["fetch"].append(seconds)
        self.seconds["serve"].append(self._curl(url, b.url))
        print(f"run {run}: " + ", ".join(f"{k} {self.size / v[-1] / MB:.0f} MB/s" for k, v in self.seconds.items()),
              flush=True)

    def _curl(self, url: str, proxy: str) -> float:
        result = curl(url, proxy=proxy)
        if result.status != 200 or result.size != self.size:
            raise RuntimeError(f"{url} through {proxy}: HTTP {result.status}, {result.size} bytes")
        return result.seconds

    def takeover(self, nginx: Nginx, a: Proxy, b: Proxy) -> float:
        """Seconds from node A's death a quarter into a fetch until node B's copy of it grows."""
        a.background(nginx.url("body.bin?takeover=1"), 'id="takeover"')
        a.wait_until("takeover", lambda r: r["downloaded"] >= self.size // 4, timeout=300)
        os.kill(a.store_pid(), signal.SIGKILL)
        a.kill()
        killed = time.monotonic()
        time.sleep(0.5)  # node A's last commits reach node B
        before = b.registration("takeover")["downloaded"]
        b.wait_until("takeover", lambda r: r["downloaded"] > before, timeout=LEASE + 60)
        took = time.monotonic() - killed
        b.wait_for("takeover", result="success", timeout=300)
        print(f"takeover after kill -9: {took:.1f} s (lease {LEASE} s)", flush=True)
        return took

    def summary(self, takeover: float) -> dict:
        mbs = {k: self.size / statistics.median(v) / MB for k, v in self.seconds.items()}
        rows = [{"what": what, "wanted": f">= {wanted}x plain mitmdump", "measured": mbs[key] / mbs["plain"],
                 "detail": f"{mbs[key]:,.0f} vs {mbs['plain']:,.0f} MB/s", "pass": mbs[key] / mbs["plain"] >= wanted}
                for key, what, wanted in TARGETS]
        rows.append({"what": "takeover after kill -9 of the node that fetches", "wanted": f"<= lease + 3 s ({LEASE + 3} s)",
                     "measured": takeover, "detail": f"{takeover:.1f} s with a {LEASE} s lease",
                     "pass": takeover <= LEASE + 3})
        return {"size": self.size, "runs": self.runs, "mb_per_s": mbs, "takeover_s": takeover, "targets": rows}


def markdown(result: dict) -> str:
    lines = [f"Fleet of two nodes (PostgreSQL + SeaweedFS on this machine), {human_size(result['size'])}, "
             f"medians of {result['runs']}:", "", "| what | target | measured | verdict |", "|---|---|---|---:|"]
    for row in result["targets"]:
        measured = f"{row['measured']:.2f}x" if "plain" in row["wanted"] else f"{row['measured']:.1f} s"
        lines.append(f"| {row['what']} | {row['wanted']} | {measured} ({row['detail']}) | "
                     f"{'PASS' if row['pass'] else 'MISS'} |")
    return "\n".join(lines) + "\n"


def write(result: dict, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "fleet.json", directory / "fleet.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n")
    paths[1].write_text(markdown(result))
    return paths
