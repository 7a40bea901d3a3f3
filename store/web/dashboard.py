"""The dashboard: one self-contained HTML page at `/`, like a browser's downloads page.

The page holds no data: its script reads the control API (asking for `bgfetch_token` when
the API wants one), so the page itself is served without the token. It holds the store's
per-start secret for state changes (`forgery`), which its script sends back. In a secure
context (the listen port on 127.0.0.1, or https) only a load of the page gets it (a script's
`fetch` of `/` says so in `Sec-Fetch-Mode` and gets the page without it), and the page keeps
its own browsing context group (COOP), so not even a script of its own origin could read it
from a window it opened; over plain http browsers send neither, and the sandbox of stored
bodies (`attachment`) keeps every other page out of the origin. A Content-Security-Policy
allows only its own inline script and style (by hash), requests to its own origin, and
icons; no site may frame it.
"""

import base64
import hashlib
import re
from pathlib import Path

from store.web.handler import StoreHandler

PAGE = Path(__file__).with_name("dashboard.html").read_bytes()
SECRET_SLOT = b"{{page-secret}}"  # in a <meta> tag, outside the hashed script and style


def _hash(tag: str) -> str:
    inline = re.search(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), PAGE, re.DOTALL).group(1)
    return "'sha256-%s'" % base64.b64encode(hashlib.sha256(inline).digest()).decode()


POLICY = "; ".join([
    "default-src 'none'",
    f"script-src {_hash('script')}",
    f"style-src {_hash('style')}",
    "img-src * data: blob:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])


class Dashboard(StoreHandler):
    """`GET /`: the page."""

    SUPPORTED_METHODS = ("GET", "HEAD")

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", POLICY)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")  # it holds the secret
        self.set_header("Cross-Origin-Opener-Policy", "same-origin")
        loaded = self.request.headers.get("Sec-Fetch-Mode", "navigate") == "navigate"
        page = PAGE.replace(SECRET_SLOT, self.settings["page_secret"].encode() if loaded else b"")
        if self.request.method == "HEAD":
            self.set_header("Content-Length", str(len(page)))
            self.finish()
        else:
            self.finish(page)

    head = get
