"""The dashboard over a store of many fetches, in a real headless chromium: it reads a page at a
time (the first screen, then more when scrolled to the end) and takes live events for what it
shows, never the whole list."""

import re

import pytest
from playwright.sync_api import expect

from harness.proxy import Proxy
from harness.seed import seed
from tests import browser

COUNT = 600
PAGE = 50  # dashboard.html's PAGE
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    if why := browser.missing():
        pytest.skip(why)
    proxy = Proxy(tmp_path_factory.mktemp("dashboard-pages"))
    seed(str(proxy.db), COUNT)
    proxy.start()
    yield proxy
    proxy.stop()


class Requests:
    """The API requests a page makes, by kind."""

    def __init__(self, page) -> None:
        self.urls: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))

    def count(self, pattern: str) -> int:
        return sum(1 for url in self.urls if re.search(pattern, url))


def test_first_screen_scrolling_and_live_updates_never_load_every_fetch(seeded, origin):
    origin.add("/fresh.bin", size=1000)
    with browser.chromium() as chromium, browser.new_page(chromium, seeded) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        requests = Requests(page)
        page.goto(browser.DASHBOARD)
        items = page.locator("li.fetch")
        expect(items.first).to_have_attribute("data-id", f"seed-{COUNT - 1}", timeout=WAIT_MS)  # newest first
        expect(items).to_have_count(PAGE)
        expect(items.nth(PAGE - 1)).to_have_attribute("data-id", f"seed-{COUNT - PAGE}")
        assert requests.count(r"/api/fetches\?") == 1  # one page, with the registrations in it
        assert requests.count(r"/api/fetches/seed-\d+$") == 0  # none asked for one by one
        # The links to stored bodies are asked for the items near the screen only.
        expect(items.first.get_by_role("link", name=f"Save file-{COUNT - 1}")).to_be_visible(timeout=WAIT_MS)
        assert 0 < requests.count(r"/records$") < PAGE

        page.locator("#older").scroll_into_view_if_needed()  # pages come until the end is off the screen
        expect(items.nth(2 * PAGE - 1)).to_have_attribute("data-id", f"seed-{COUNT - 2 * PAGE}", timeout=WAIT_MS)
        page.wait_for_timeout(500)
        shown = items.count()
        assert shown % PAGE == 0 and 2 * PAGE <= shown < COUNT
        assert requests.count(r"/api/fetches\?") == shown // PAGE
        assert "cursor=" in [url for url in requests.urls if "/api/fetches?" in url][-1]

        # Live: an event of a fetch made now puts it on top; one of a fetch on no page read
        # so far (the oldest) changes nothing on the screen.
        seeded.api("PATCH", "/api/fetches/seed-0", json={"title": "Renamed, far below"})
        seeded.background(origin.url("/fresh.bin"), 'id="fresh", title="Fresh"')
        expect(items.first).to_have_attribute("data-id", "fresh", timeout=WAIT_MS)
        expect(items.first.locator(".state")).to_have_text("Complete", timeout=WAIT_MS)
        expect(items).to_have_count(shown + 1)
        assert page.locator('li.fetch[data-id="seed-0"]').count() == 0
        assert requests.count(r"/api/fetches\?") == shown // PAGE and requests.count(r"/api/fetches/seed-\d+$") == 0
        assert errors == []
    seeded.api("DELETE", "/api/fetches/fresh")


def test_the_list_ends_where_the_store_does(seeded):
    with browser.chromium() as chromium, browser.new_page(chromium, seeded) as page:
        page.goto(browser.DASHBOARD)
        items = page.locator("li.fetch")
        expect(items).to_have_count(PAGE, timeout=WAIT_MS)
        page.get_by_role("button", name="Show older").click()
        expect(items.nth(2 * PAGE - 1)).to_be_attached(timeout=WAIT_MS)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        # Kept at the end of the list, the page goes on reading until the store has no more.
        for _ in range(COUNT // PAGE):
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            if items.count() == COUNT:
                break
            page.wait_for_timeout(200)
        expect(items).to_have_count(COUNT, timeout=WAIT_MS)
        expect(page.locator("#older")).to_be_hidden()
        expect(items.last).to_have_attribute("data-id", "seed-0")
