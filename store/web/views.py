"""A registration's records as the API shows them, picked with the Cache API's match rules."""

import urllib.parse

from store.engine import Record, headers


def registration_path(reg_id: str) -> str:
    """Where the API shows a registration: `/api/fetches/<id>`, the id percent-encoded."""
    return f"/api/fetches/{urllib.parse.quote(reg_id, safe='')}"


def view(reg_id: str, record: Record) -> dict:
    """A record: its request, its response once known, how much is stored, where the body is."""
    response = None
    if record.status is not None:
        response = {
            "status": record.status,
            "headers": [list(field) for field in headers.replayed(record.response_headers)],
            "size": record.size,
        }
    return {
        "index": record.index,
        "request": {"url": record.url, "method": record.method},
        "response": response,
        "stored": record.stored,
        "complete": record.complete,
        "bodyUrl": f"{registration_path(reg_id)}/records/{record.index}/body",
    }


def matching(
    records: list[Record], url: str | None, method: str = "GET",
    ignore_search: bool = False, ignore_method: bool = False,
) -> list[Record]:
    """`matchAll(request, options)`: every record without a `url`; else the records whose URL
    equals it (its query ignored with `ignore_search`), duplicates each in its place. Unless
    `ignore_method`, a query whose method is not GET matches nothing (as in the Cache API) and
    a GET query matches only GET records (`[u, PUT u]` matches 1, 2 with `ignoreMethod`, as the
    web-platform-tests' "Match with query options" asks)."""
    if url is None:
        return records
    if method != "GET" and not ignore_method:
        return []
    wanted = _key(url, ignore_search)
    return [
        record for record in records
        if _key(record.url, ignore_search) == wanted and (ignore_method or record.method == "GET")
    ]


def _key(url: str, ignore_search: bool) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="" if ignore_search else parts.query, fragment=""))
