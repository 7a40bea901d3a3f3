"""Headless Debian chromium driven by playwright, browsing through a running bgfetch proxy."""

import contextlib
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
DASHBOARD = "http://bgfetch.internal/"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    return None


@contextlib.contextmanager
def chromium():
    """A headless chromium for a whole test module; closed at the end."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def new_page(browser, proxy=None, **context_options):
    """A page in a fresh browser context, its traffic through `proxy` (None: direct)."""
    if proxy is not None:
        context_options["proxy"] = {"server": proxy.url}
    context = browser.new_context(**context_options)
    try:
        yield context.new_page()
    finally:
        context.close()
