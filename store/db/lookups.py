"""The reads behind the proxy's question "does the store hold this URL?", on a read-only connection.

The proxy's process runs them (store/proxyside/lookup.py) beside the store's own writer: WAL
lets both read and write at once.
"""

import sqlite3
from collections.abc import Iterable, Iterator

from store.db import variants

# A record with a 2xx response that may be reused (not `no-store`), or one whose request is on
# its way to the origin right now (status not yet known, registration fetching): the store
# answers once the headers come, so a URL being downloaded is never fetched a second time.
# With integrity, only once verified.
SERVABLE_SQL = """
SELECT r.id, r.selecting FROM records r JOIN registrations g ON g.id = r.registration_id
WHERE r.url = ? AND r.credential = ? AND r.method = 'GET' AND g.result != 'failure'
  AND ((r.status BETWEEN 200 AND 299 AND r.reusable) OR (r.status IS NULL AND g.state = 'fetching'))
  AND (r.integrity IS NULL OR r.complete)
ORDER BY r.complete DESC, r.status IS NULL, r.id DESC LIMIT 16
"""


def servable_record(conn: sqlite3.Connection, url: str, credential: str,
                    fields: Iterable[tuple[str, str]] = ()) -> int | None:
    """The record to serve for a GET of `url` by a request with these credentials (the
    vocabulary's `credential_key`) and header `fields` (a response that varies must have been
    selected for the same ones: `variants`), if any."""
    fields = list(fields)
    for record_id, selecting in conn.execute(SERVABLE_SQL, [url, credential]):
        if variants.matches(selecting, fields):
            return record_id
    return None


def record_url_count(conn: sqlite3.Connection) -> int:
    """How many records there are (an upper bound of their distinct URLs)."""
    return conn.execute("SELECT count(*) FROM records").fetchone()[0]


def record_urls(conn: sqlite3.Connection) -> Iterator[str]:
    """Every distinct URL of the records."""
    for row in conn.execute("SELECT DISTINCT url FROM records"):
        yield row[0]
