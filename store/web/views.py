"""A registration's records as the API shows them, picked with the Cache API's match rules."""

import sqlite3
import urllib.parse

from store.engine import headers


def registration_path(reg_id: str) -> str:
    """Where the API shows a registration: `/api/fetches/<id>`, the id percent-encoded."""
    return f"/api/fetches/{urllib.parse.quote(reg_id, safe='')}"


def view(reg_id: str, row: sqlite3.Row) -> dict:
    """A record: its request, its response once known, how much is stored, where the body is."""
    response = None
    if row["status"] is not None:
        response = {
            "status": row["status"],
            "headers": [list(field) for field in headers.replayed(headers.parse(row["response_headers"]))],
            "size": row["size"],
        }
    return {
        "index": row["idx"],
        "request": {"url": row["url"], "method": row["method"]},
        "response": response,
        "stored": row["stored"],
        "complete": bool(row["complete"]),
        "bodyUrl": f"{registration_path(reg_id)}/records/{row['idx']}/body",
    }


def matching(
    rows: list[sqlite3.Row], url: str | None, method: str = "GET",
    ignore_search: bool = False, ignore_method: bool = False,
) -> list[sqlite3.Row]:
    """`matchAll(request, options)`: every row without a `url`; else the rows whose URL equals
    it (its query ignored with `ignore_search`). As in the Cache API, a query request whose
    method is not GET matches nothing unless `ignore_method`."""
    if url is None:
        return rows
    if method != "GET" and not ignore_method:
        return []
    wanted = _key(url, ignore_search)
    return [row for row in rows if _key(row["url"], ignore_search) == wanted]


def _key(url: str, ignore_search: bool) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="" if ignore_search else parts.query, fragment=""))
