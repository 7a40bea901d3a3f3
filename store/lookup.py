"""The question the proxy asks of every request: does the store hold this URL? (read-only)"""

import sqlite3

from . import schema

# A record with a 2xx response, or one whose request is on its way to the origin right now
# (status not yet known, registration fetching): the store answers once the headers come, so
# a URL being downloaded is never fetched a second time. With integrity, only once verified.
SERVABLE_SQL = """
SELECT r.id FROM records r JOIN registrations g ON g.id = r.registration_id
WHERE r.url = ? AND r.credential = ? AND r.method = 'GET' AND g.result != 'failure'
  AND (r.status BETWEEN 200 AND 299 OR (r.status IS NULL AND g.state = 'fetching'))
  AND (r.integrity IS NULL OR r.complete)
ORDER BY r.complete DESC, r.status IS NULL, r.id DESC LIMIT 1
"""


class Lookup:
    """An indexed read of the store's database, safe beside the store's own writer (WAL)."""

    def __init__(self, path: str) -> None:
        self.conn: sqlite3.Connection = schema.connect(path, readonly=True)

    def find(self, url: str, credential: str) -> int | None:
        """The record to serve for a GET of `url` with these credentials, if any."""
        row = self.conn.execute(SERVABLE_SQL, [url, credential]).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self.conn.close()
