"""Telling the dashboard's state changes from ones a web page forged, when no token is set.

Any page a proxy user visits can send requests to the API: a form post, a `fetch` in
`no-cors` mode, a navigation. Browsers mark every request they send: `Origin` on every method
but GET and HEAD, and `Sec-Fetch-Site` (Fetch Metadata) on all of them. A state change
(POST, PATCH, DELETE) that carries either mark must also carry HEADER with the per-start
secret that only the dashboard page receives, in its HTML, which no page of another origin
can read. Requests without the marks (curl, scripts, the addon's commands) are not a
browser's and need nothing, as before; with `bgfetch_token` set, the token is the proof.

The secret is made when the store starts and is not the addon's secret for the internal
port. HEADER does not start with `x-bgfetch-`, which the addon strips from client requests.
"""

import hmac
import secrets
from collections.abc import Mapping

HEADER = "Bgfetch-Csrf-Token"
BROWSER_MARKS = ("Origin", "Sec-Fetch-Site")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def from_browser(fields: Mapping[str, str]) -> bool:
    """Whether a browser sent the request (it carries a mark that browsers always add)."""
    return any(name in fields for name in BROWSER_MARKS)


def forged(method: str, fields: Mapping[str, str], secret: str) -> bool:
    """Whether a browser's state change lacks the dashboard's secret (compared in constant time)."""
    if method in SAFE_METHODS or not from_browser(fields):
        return False
    given = fields.get(HEADER)
    return given is None or not hmac.compare_digest(given.encode(), secret.encode())
