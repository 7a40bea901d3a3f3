"""The dashboard in a real headless chromium, browsing through a running proxy and store."""

import hashlib
import re
import urllib.parse
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from harness.proxy import free_port
from tests import browser

MiB = 1 << 20
WAIT_MS = 30_000  # for expect(): generous, the machine may be loaded
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def chromium():
    if why := browser.missing():
        pytest.skip(why)
    with browser.chromium() as instance:
        yield instance


class Watched:
    """A page plus what must never happen on it: dialogs, script errors, CSP violations."""

    def __init__(self, page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def item(self, reg_id: str):
        return self.page.locator(f'li.fetch[data-id="{reg_id}"]')

    def open(self, url: str = browser.DASHBOARD) -> "Watched":
        self.page.goto(url)
        expect(self.page.locator("#live")).to_have_text("Live", timeout=WAIT_MS)
        return self


@pytest.fixture
def watched(chromium, proxy):
    with browser.new_page(chromium, proxy) as page:
        watched = Watched(page)
        yield watched
    assert watched.dialogs == [] and watched.errors == []


def start(proxy, origin, path: str, header: str) -> None:
    """A header-triggered background fetch answered at once (202), the transfer going on."""
    with proxy.client() as client:
        response = client.get(origin.url(path), headers={"Background-Fetch": f"{header}, respond=accepted"})
    assert response.status_code == 202, response.text


# -- without a browser -------------------------------------------------------------------------


def test_page_is_served_on_both_ports_without_the_token_with_a_strict_policy(make_proxy):
    proxy = make_proxy("bgfetch_token=s3cret").start()
    direct = httpx.get(proxy.api_url("/"), timeout=10)
    assert direct.status_code == 200
    assert direct.headers["content-type"] == "text/html; charset=utf-8"
    policy = direct.headers["content-security-policy"]
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy
    with proxy.client() as client:
        through = client.get(browser.DASHBOARD)
        assert (through.status_code, through.content) == (200, direct.content)
        assert client.get(browser.DASHBOARD + "api/fetches").status_code == 401
    page = direct.content
    assert not re.search(rb'(src|href)="(https?:)?//|@import|url\(', page)  # nothing from outside
    assert b"innerHTML" not in page and b"insertAdjacentHTML" not in page
    head = httpx.head(proxy.api_url("/"), timeout=10)
    assert head.headers["content-length"] == str(len(page)) and head.content == b""


# -- in the browser --------------------------------------------------------------------------


def test_throttled_fetch_advances_live_then_abort_flips_it_to_aborted(origin, proxy, watched):
    origin.add("/slow.bin", size=16 * MiB)  # 40 s at this pace: still going when aborted
    origin.behave("/slow.bin", throttle=384 * 1024)
    start(proxy, origin, "/slow.bin", 'id="slow", title="Slow file"')
    watched.open()
    item = watched.item("slow")
    bar = item.get_by_role("progressbar", name="Progress of Slow file")
    expect(item.locator(".state")).to_have_text("Downloading", timeout=WAIT_MS)
    # No download-total: the total is the response's Content-Length, read from its record.
    expect(bar).to_have_attribute("aria-valuemax", str(16 * MiB), timeout=WAIT_MS)
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)
    first = int(bar.get_attribute("aria-valuenow"))
    watched.page.wait_for_function(
        "([el, first]) => Number(el.getAttribute('aria-valuenow')) > first",
        arg=[bar.element_handle(), first], timeout=WAIT_MS,
    )
    expect(item.locator(".detail")).to_have_text(re.compile(r"B of 17 MB · [\d.]+ [kM]?B/s · \d+ (s|min) left"), timeout=WAIT_MS)

    item.get_by_role("button", name="Abort Slow file").click()
    expect(item.locator(".state")).to_have_text("Aborted", timeout=WAIT_MS)
    expect(bar).to_be_hidden()
    expect(item.get_by_role("button", name=re.compile("^Delete"))).to_be_visible()
    assert proxy.registration("slow")["failureReason"] == "aborted"


def test_completed_fetch_links_to_its_body(origin, proxy, watched):
    origin.add("/cover.jpg", size=300_000, content_type="image/jpeg")
    start(proxy, origin, "/cover.jpg", 'id="cover", title="Cover art"')
    proxy.wait_for("cover", result="success")
    watched.open()
    item = watched.item("cover")
    expect(item.locator(".state")).to_have_text("Complete", timeout=WAIT_MS)
    expect(item.locator(".detail")).to_have_text("300 kB")
    save = item.get_by_role("link", name="Save cover.jpg")
    opener = item.get_by_role("link", name="Open cover.jpg")
    assert save.get_attribute("download") == "cover.jpg"
    assert save.get_attribute("href") == opener.get_attribute("href") == "/api/fetches/cover/records/0/body"
    with watched.page.expect_download(timeout=WAIT_MS) as download:
        save.click()
    saved = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == origin.sha256("/cover.jpg")
    assert download.value.suggested_filename == "cover.jpg"


def test_listen_port_serves_the_same_page_without_the_proxy(origin, proxy, chromium):
    origin.add("/direct.bin", size=70_000)
    start(proxy, origin, "/direct.bin", 'id="direct"')
    proxy.wait_for("direct", result="success")
    with browser.new_page(chromium) as page:
        watched = Watched(page).open(proxy.api_url("/"))
        with page.expect_download(timeout=WAIT_MS) as download:
            watched.item("direct").get_by_role("link", name="Save direct.bin").click()
        assert Path(download.value.path()).read_bytes() == origin.data("/direct.bin")
        assert watched.dialogs == [] and watched.errors == []


def test_hostile_title_stays_text(origin, proxy, watched):
    origin.add("/x.bin", size=1000)
    start(proxy, origin, "/x.bin", f'id="hostile", title="{HOSTILE}"')
    proxy.wait_for("hostile", result="success")
    watched.open()
    expect(watched.page.get_by_text(HOSTILE, exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(watched.item("hostile").get_by_role("link", name="Save x.bin")).to_be_visible(timeout=WAIT_MS)
    assert watched.page.locator("main img:not([hidden])").count() == 0
    assert watched.dialogs == []


def test_failed_fetch_shows_its_reason_at_a_phone_width(origin, proxy, chromium):
    origin.add("/gone.bin", size=10)
    origin.behave("/gone.bin", status=404)
    long_title = "A very long title without any space " + "x" * 120
    start(proxy, origin, "/gone.bin", f'id="gone", title="{long_title}"')
    proxy.wait_for("gone", result="failure")
    with browser.new_page(chromium, proxy, viewport={"width": 360, "height": 740}) as page:
        watched = Watched(page).open()
        item = watched.item("gone")
        expect(item.locator(".state")).to_have_text("Failed", timeout=WAIT_MS)
        expect(item.locator(".detail")).to_contain_text("error status")
        expect(item.locator(".error")).to_contain_text("404")
        expect(item.get_by_role("button", name=re.compile("^Delete"))).to_be_in_viewport()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert watched.errors == []


def test_new_fetch_from_the_url_field_and_delete_when_done(origin, proxy, watched):
    origin.add("/new.bin", size=200_000)
    watched.open()
    expect(watched.page.locator("#empty")).to_be_visible(timeout=WAIT_MS)
    watched.page.get_by_label("Fetch a URL in the background").fill(origin.url("/new.bin"))
    watched.page.get_by_role("button", name="Fetch", exact=True).click()
    item = watched.page.locator("li.fetch", has_text="new.bin")
    expect(item.locator(".state")).to_have_text("Complete", timeout=WAIT_MS)
    reg_id = item.get_attribute("data-id")
    assert proxy.registration(reg_id)["result"] == "success"
    assert origin.count("/new.bin") == 1

    item.get_by_role("button", name="Delete new.bin and its stored files").click()
    expect(item).to_have_count(0, timeout=WAIT_MS)
    expect(watched.page.locator("#empty")).to_be_visible()
    assert proxy.api("GET", f"/api/fetches/{reg_id}").status_code == 404


def test_icon_shows_and_an_unreachable_one_falls_back_to_the_glyph(origin, proxy, watched):
    origin.add("/a.bin", size=1000)
    dot = "data:image/svg+xml," + urllib.parse.quote(
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 8 8'><circle cx='4' cy='4' r='4'/></svg>"
    )
    offline = f"http://127.0.0.1:{free_port()}/icon.png"  # nothing listens: the proxy answers 502
    for reg_id, icons in [
        ("drawn", [{"src": offline, "sizes": "16x16"}, {"src": dot, "sizes": "64x64", "type": "image/svg+xml"}]),
        ("broken", [{"src": offline, "sizes": "any"}]),
    ]:
        body = {"id": reg_id, "requests": [origin.url("/a.bin")], "title": reg_id, "icons": icons}
        assert proxy.api("POST", "/api/fetches", json=body).status_code == 201
    watched.open()
    drawn, broken = watched.item("drawn").locator(".icon"), watched.item("broken").locator(".icon")
    expect(drawn.locator("img")).to_have_attribute("src", dot, timeout=WAIT_MS)
    watched.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=drawn.locator("img").element_handle())
    expect(drawn.locator(".glyph")).to_be_hidden()
    expect(broken.locator(".glyph")).to_be_visible(timeout=WAIT_MS)
    expect(broken.locator("img")).to_be_hidden()


def test_newest_first_and_a_lost_event_stream_reconnects(origin, proxy, watched):
    origin.add("/one.bin", size=1000)
    origin.add("/two.bin", size=1000)
    start(proxy, origin, "/one.bin", 'id="one"')
    proxy.wait_for("one", result="success")
    watched.open()
    expect(watched.item("one").locator(".state")).to_have_text("Complete", timeout=WAIT_MS)

    proxy.stop()
    expect(watched.page.locator("#live")).to_have_text("Reconnecting…", timeout=WAIT_MS)
    proxy.start()
    expect(watched.page.locator("#live")).to_have_text("Live", timeout=WAIT_MS)
    start(proxy, origin, "/two.bin", 'id="two"')
    expect(watched.item("two").locator(".state")).to_have_text("Complete", timeout=WAIT_MS)
    assert watched.page.locator("li.fetch").evaluate_all("items => items.map(i => i.dataset.id)") == ["two", "one"]


def test_token_is_asked_once_and_kept_in_the_tab(origin, make_proxy, chromium):
    proxy = make_proxy("bgfetch_token=s3cret").start()
    origin.add("/private.bin", size=50_000)
    start(proxy, origin, "/private.bin", 'id="private"')
    with browser.new_page(chromium, proxy) as page:
        watched = Watched(page)
        page.goto(browser.DASHBOARD)
        token = page.get_by_label("API token")
        expect(token).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#message")).to_have_text("This store needs its API token.")
        token.fill("wrong")
        token.press("Enter")
        expect(page.locator("#message")).to_have_text("That token was refused.", timeout=WAIT_MS)
        token.fill("s3cret")
        token.press("Enter")
        expect(page.locator("#live")).to_have_text("Live", timeout=WAIT_MS)
        item = watched.item("private")
        expect(item.locator(".state")).to_have_text("Complete", timeout=WAIT_MS)

        page.reload()  # the tab keeps the token: no second question
        expect(item.locator(".state")).to_have_text("Complete", timeout=WAIT_MS)
        expect(token).to_be_hidden()
        with page.expect_download(timeout=WAIT_MS) as download:
            item.get_by_role("link", name="Save private.bin").click()
        assert Path(download.value.path()).read_bytes() == origin.data("/private.bin")
        assert watched.dialogs == [] and watched.errors == []
