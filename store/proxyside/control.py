"""The store's control API as mitmproxy's commands call it: the paths of a fetch, and the line
`bgfetch.list` shows for each (the call itself is `keeper.StoreKeeper.call`)."""

import urllib.parse
from collections.abc import Callable

FETCHES = "/api/fetches"


def fetch_path(fetch_id: str, action: str = "") -> str:
    """The path of one fetch, or of an `action` on it ("abort")."""
    return f"{FETCHES}/{urllib.parse.quote(fetch_id, safe='')}" + (f"/{action}" if action else "")


def describe(registration: dict, size: Callable[[int], str]) -> str:
    """One line of `bgfetch.list`: id, state or result (and why it failed), bytes, title;
    `size` writes a number of bytes as mitmproxy does."""
    outcome = registration["result"] or registration["state"]
    if registration["failureReason"]:
        outcome += f" ({registration['failureReason']})"
    total = registration["downloadTotal"]
    done = size(registration["downloaded"]) + (f" of {size(total)}" if total else "")
    return f"{registration['id']}  {outcome}  {done}  {registration['title']}"
