"""The dashboard: one self-contained HTML page at `/`, like a browser's downloads page.

The page holds no data: its script reads the control API (asking for `bgfetch_token` when
the API wants one), so the page itself is served without the token. A Content-Security-Policy
allows only its own inline script and style (by hash), requests to its own origin, and icons.
"""

import base64
import hashlib
import re
from pathlib import Path

from .web import StoreHandler

PAGE = Path(__file__).with_name("dashboard.html").read_bytes()


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
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")
        if self.request.method == "HEAD":
            self.set_header("Content-Length", str(len(PAGE)))
            self.finish()
        else:
            self.finish(PAGE)

    head = get
