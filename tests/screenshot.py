"""Make docs/dashboard.png: the dashboard with fetches in each state, through a real proxy.

Run by hand: `.venv/bin/python -m tests.screenshot [PATH]`. Everything runs on loopback: a
throttled origin, mitmdump with the addon, headless chromium.
"""

import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from harness.origin import Origin
from harness.proxy import Proxy, free_port
from tests import browser

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def icon(letter: str, colour: str) -> list[dict]:
    """A small inline SVG icon: a coloured tile with a letter."""
    svg = (
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 48 48'>"
        f"<rect width='48' height='48' rx='10' fill='{colour}'/>"
        "<text x='24' y='32' font-family='system-ui,sans-serif' font-size='24' font-weight='700' "
        f"fill='white' text-anchor='middle'>{letter}</text></svg>"
    )
    return [{"src": "data:image/svg+xml," + urllib.parse.quote(svg), "sizes": "48x48", "type": "image/svg+xml"}]


def fetch(proxy: Proxy, reg_id: str, urls: list[str], title: str, icons: list[dict]) -> None:
    body = {"id": reg_id, "requests": urls, "title": title, "icons": icons}
    response = proxy.api("POST", "/api/fetches", json=body)
    response.raise_for_status()


def populate(proxy: Proxy, origin: Origin) -> None:
    """One fetch in each state, oldest first: done, failed, aborted, paused, downloading."""
    origin.add("/podcast/episode-12.mp3", size=3 * MiB, content_type="audio/mpeg")
    origin.add("/podcast/cover.jpg", size=180_000, content_type="image/jpeg")
    fetch(proxy, "ep-12", [origin.url("/podcast/episode-12.mp3"), origin.url("/podcast/cover.jpg")],
          "Episode 12: The network layer", icon("P", "#7b3fe4"))
    proxy.wait_for("ep-12", result="success")

    origin.add("/nightly/app-nightly.tar.gz", size=10)
    origin.behave("/nightly/app-nightly.tar.gz", status=404)
    fetch(proxy, "nightly", [origin.url("/nightly/app-nightly.tar.gz")], "Nightly build", icon("N", "#1f7a4d"))
    proxy.wait_for("nightly", result="failure")

    origin.add("/data/survey-2024.csv.gz", size=8 * MiB)
    origin.behave("/data/survey-2024.csv.gz", throttle=2 * MiB)
    fetch(proxy, "survey", [origin.url("/data/survey-2024.csv.gz")], "Survey data 2024", [])
    time.sleep(1.5)
    proxy.api("POST", "/api/fetches/survey/abort", json={})

    down = f"http://127.0.0.1:{free_port()}/maps/europe.osm.pbf"
    fetch(proxy, "maps", [down], "Offline maps: Europe", icon("M", "#c2410c"))
    proxy.wait_for("maps", state="paused")

    origin.add("/iso/debian-12-netinst.iso", size=64 * MiB, content_type="application/octet-stream")
    origin.behave("/iso/debian-12-netinst.iso", throttle=3 * MiB)
    fetch(proxy, "debian", [origin.url("/iso/debian-12-netinst.iso")], "Debian 12 installer", icon("D", "#a80030"))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Origin() as origin:
        proxy = Proxy(Path(tmp)).start()
        try:
            populate(proxy, origin)
            with browser.chromium() as chromium, browser.new_page(
                chromium, proxy, viewport={"width": 960, "height": 820}, device_scale_factor=2
            ) as page:
                page.goto(browser.DASHBOARD)
                page.locator('li[data-id="debian"] .detail').filter(has_text=" left").wait_for(timeout=30_000)
                page.wait_for_timeout(2500)  # a few seconds of progress: a steady speed estimate
                page.screenshot(path=str(out), full_page=True)
        finally:
            proxy.stop()
    print(out)


if __name__ == "__main__":
    main()
