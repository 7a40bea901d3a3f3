"""The question the proxy asks of every request: does the store hold this URL? (read-only)"""

import asyncio
import logging
import sqlite3
from collections.abc import Iterable

from store.db import lookups, schema
from store.proxyside.bloom import MAX_BITS, BloomFilter, bits_for
from store.proxyside.protocol import url_digest
from vocabulary import credential_key

logger = logging.getLogger("bgfetch.lookup")

STALE_MIN = 1000  # removed URLs below which a rebuild is not worth its read of the database
PENDING_MAX = 100_000  # digests kept while a rebuild runs; beyond, one more rebuild follows


class Lookup:
    """An indexed read of the store's database, safe beside the store's own writer (WAL),
    behind a Bloom filter of every URL a record has.

    Most requests are for URLs the store has never seen: those cost a hash and a few bit
    tests, not a query on mitmproxy's thread (measured there: about 50 µs a query under load,
    10 % of a small request). The filter is built from the database in a thread once the
    database is open (`open`), learns each URL the store announces (`add_digest`) or a flow
    hands over (`add`), and is built again in a thread when it fills or when removals have
    made half of it stale; its memory is fixed by its size, whatever the number of URLs
    created and deleted. Until the database is open, `find` knows nothing (`ready` is false);
    until the first filter is built, the index answers every question: a store of 100,000
    URLs takes about half a second to build, and the proxy does not wait for it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.filter: BloomFilter | None = None
        self.removed = 0  # URLs removed from the store since the filter was built
        self._pending: list[bytes] | None = []  # digests added while a build runs
        self._again = False
        self._build: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.conn is not None

    async def open(self) -> None:
        """Connect to the database (the store has made it) and start building the filter;
        sqlite3.Error when it cannot be read."""
        if self.conn is None:
            conn = schema.connect(self.path, readonly=True, bodies=False)
            try:
                lookups.record_url_count(conn)
            except sqlite3.Error:
                conn.close()
                raise
            self.conn = conn
        self.rebuild()

    def add(self, url: str) -> None:
        self.add_digest(url_digest(url))

    def add_digest(self, digest: bytes) -> None:
        if self._pending is not None:
            if len(self._pending) < PENDING_MAX:
                self._pending.append(digest)
            else:
                self._again = True
        if self.filter is not None:
            self.filter.add(digest)
            if self.filter.full and self.filter.mask + 1 < MAX_BITS:
                self.rebuild()

    def forget(self, count: int) -> None:
        """`count` URLs left the store: their bits stay until the next rebuild."""
        self.removed += count
        if self.filter is not None and self.removed >= max(STALE_MIN, self.filter.added // 2):
            self.rebuild()

    def rebuild(self) -> None:
        """Build the filter again from the database in a thread (once more after the one
        running, if one is)."""
        if self._build is not None and not self._build.done():
            self._again = True
        elif self.conn is not None:
            self._pending = [] if self._pending is None else self._pending  # kept from now on
            self._build = asyncio.get_running_loop().create_task(self._rebuilt(), name="bgfetch lookup")

    async def _rebuilt(self) -> None:
        try:
            await self._rebuild()
        except sqlite3.Error as exc:  # the filter in use still holds every URL: keep it
            self._pending = None
            logger.error("bgfetch: the lookup of stored URLs was not rebuilt from %s: %s", self.path, exc)

    async def _rebuild(self) -> None:
        while True:
            self._again = False
            pending = self._pending = [] if self._pending is None else self._pending
            removed = self.removed
            try:
                built = await asyncio.to_thread(_filled, self.path)
            except BaseException:
                self._pending = None if self.filter is not None else pending
                raise
            for digest in pending:  # what came while the thread read, in no order it could see
                built.add(digest)
            self._pending = None
            self.filter, self.removed = built, self.removed - removed
            logger.debug("bgfetch: lookup filter of %d URLs in %d KiB", built.added, len(built.array) // 1024)
            if not self._again:
                return

    def find(self, url: str, fields: Iterable[tuple[str, str]]) -> int | None:
        """The record to serve for a GET of `url` with these request header fields (their
        credentials must match, and those its response varies on), if any."""
        if self.conn is None or (self.filter is not None and url_digest(url) not in self.filter):
            return None
        fields = list(fields)
        return lookups.servable_record(self.conn, url, credential_key(fields), fields)

    def close(self) -> None:
        self.filter = None
        if self._build is not None:
            self._build.cancel()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _filled(path: str) -> BloomFilter:
    """A filter sized for, and holding, every URL of the database's records (in a thread)."""
    conn = schema.connect(path, readonly=True, bodies=False)
    try:
        built = BloomFilter(bits_for(lookups.record_url_count(conn)))
        for url in lookups.record_urls(conn):
            built.add(url_digest(url))
        return built
    finally:
        conn.close()
