"""`python -m bench.watch`: a real mitmdump with bgfetch, scraped every half second while it works,
drawn as the panels of the Grafana dashboard (`bench.panels`) into docs/metrics.png.

The run (about a minute): background fetches queued beyond the concurrency, some cut by the
origin (pauses, resumes), one to an address where nothing listens (pauses, then aborted), one
the origin refuses (bad-status); then readers of the stored bodies, a stale page revalidated
again and again (and once changed), and a webhook that fails now and then.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from harness.metrics import Scrape
from harness.origin import NOTHING_LISTENS, Origin
from harness.proxy import Proxy

from .panels import PANELS, series

MiB = 1 << 20
RATE_WINDOW = 4  # scrapes: rates over 2 s, as Prometheus' rate() over a window
REPO = Path(__file__).resolve().parent.parent


class Scraper(threading.Thread):
    """Scrapes `url` every `interval` seconds until stopped: (seconds since start, Scrape)."""

    def __init__(self, url: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.scrapes: list[tuple[float, Scrape]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        while not self.halt.wait(self.interval):
            self.scrapes.append((time.monotonic() - began, Scrape(httpx.get(self.url, timeout=5).text)))


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver that answers one POST in four with a 503 (the store tries again)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503 if random.random() < 0.25 else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def work(origin: Origin, proxy: Proxy) -> None:
    """What the store is asked to do while it is scraped."""
    for n in range(8):
        origin.add(f"/ep{n}.bin", size=24 * MiB)
        origin.behave(f"/ep{n}.bin", throttle=6 * MiB, **({"cut_after": 5 * MiB, "cuts": 2} if n % 3 == 0 else {}))
    origin.add("/refused.bin", size=1000)
    origin.behave("/refused.bin", status=404)
    origin.add("/page.html", data=b"<p>news</p>" * 2000, headers={"Cache-Control": "no-cache"})
    for n in range(8):
        proxy.background(origin.url(f"/ep{n}.bin"), f'id="ep{n}"')
        time.sleep(1)
    proxy.background(f"{NOTHING_LISTENS}/gone.bin", 'id="gone"')
    proxy.background(origin.url("/refused.bin"), 'id="refused"')
    proxy.background(origin.url("/page.html"), 'id="page"')
    for n in range(8):
        proxy.wait_for(f"ep{n}", 120, result="success")
    proxy.api("POST", "/api/fetches/gone/abort", json={})

    def read(n: int) -> None:
        with proxy.client() as client:
            for _ in range(6):
                client.get(origin.url(f"/ep{n % 8}.bin"))
                client.get(origin.url("/page.html"))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(read, range(8)))
    origin.change("/page.html")
    with proxy.client() as client:
        for _ in range(10):
            client.get(origin.url("/page.html"))
            time.sleep(0.5)
    time.sleep(3)


def draw(scrapes: list[tuple[float, Scrape]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(15, 10))
    for panel, ax in zip(PANELS, axes.flat):
        scale, unit = {"bytes": (MiB, "MiB"), "Bps": (MiB, "MiB/s"), "s": (1e-3, "ms"), "ops": (1, "/s")}.get(panel.unit, (1, ""))
        lines = {}
        for query in panel.queries:
            lines.update({legend: points for legend, points in series(query, scrapes, RATE_WINDOW).items()
                          if any(value for _, value in points) or not panel.stacked})
        for legend, points in sorted(lines.items()):
            times, values = zip(*points)
            ax.plot(times, [v / scale for v in values], label=legend, linewidth=1.2)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if lines:
            ax.legend(fontsize=6, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=8)
    fig.suptitle("bgfetch's /metrics during a run, scraped every 0.5 s (rates over 2 s): the panels of"
                 " deploy/grafana-dashboard.json (python -m bench.watch)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "metrics.png")
    args = parser.parse_args()
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as work_dir, Origin() as origin:
        proxy = Proxy(Path(work_dir), "bgfetch_quota=1GB", "bgfetch_concurrency=3",
                      f"bgfetch_webhook=http://127.0.0.1:{hook.server_address[1]}/hook").start()
        scraper = Scraper(proxy.api_url("/metrics"))
        scraper.start()
        try:
            work(origin, proxy)
        finally:
            scraper.halt.set()
            scraper.join()
            proxy.stop()
            hook.shutdown()
    print(draw(scraper.scrapes, args.out))


if __name__ == "__main__":
    main()
