"""The question the proxy asks of every request: does the store hold this URL? (read-only)"""

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Iterable

import httpx

from store.db import lookups, schema
from store.proxyside import protocol
from store.proxyside.bloom import MAX_BITS, BloomFilter, bits_for
from store.proxyside.protocol import url_digest
from vocabulary import credential_key

logger = logging.getLogger("bgfetch.lookup")

STALE_MIN = 1000  # removed URLs below which a rebuild is not worth its read of the database
PENDING_MAX = 100_000  # digests kept while a rebuild runs; beyond, one more rebuild follows
ASK_SECONDS = 5.0  # how long a fleet node's proxy waits for its store's answer


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

    ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)  # what a build may fail with

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
        return self._opened

    @property
    def _opened(self) -> bool:
        return self.conn is not None

    async def open(self) -> None:
        """Connect to the database (the store has made it) and start building the filter;
        sqlite3.Error when it cannot be read."""
        self._connect()
        self.rebuild()

    def _connect(self) -> None:
        if self.conn is None:
            conn = schema.connect(self.path, readonly=True, bodies=False)
            try:
                lookups.record_url_count(conn)
            except sqlite3.Error:
                conn.close()
                raise
            self.conn = conn

    def connected(self, port: int, secret: str) -> None:
        """The store (started again, perhaps) answers on `port`: this lookup reads the database itself."""

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
        elif self._opened:
            self._pending = [] if self._pending is None else self._pending  # kept from now on
            self._build = asyncio.get_running_loop().create_task(self._rebuilt(), name="bgfetch lookup")

    async def _rebuilt(self) -> None:
        try:
            await self._rebuild()
        except self.ERRORS as exc:  # the filter in use still holds every URL: keep it
            self._pending = None
            logger.error("bgfetch: the lookup of stored URLs was not rebuilt from %s: %s", self.path, exc)

    async def _rebuild(self) -> None:
        while True:
            self._again = False
            pending = self._pending = [] if self._pending is None else self._pending
            removed = self.removed
            try:
                built = await asyncio.to_thread(self._filled)
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

    def find(self, url: str, fields: Iterable[tuple[str, str]]) -> int | None | Awaitable[int | None]:
        """The record to serve for a GET of `url` with these request header fields (their
        credentials must match, and those its response varies on), if any; for a URL the filter
        admits, a fleet's lookup gives an awaitable of it instead (its store is asked, and
        mitmproxy's thread does not wait)."""
        if not self._opened or (self.filter is not None and url_digest(url) not in self.filter):
            return None
        return self._find(url, list(fields))

    def _find(self, url: str, fields: list[tuple[str, str]]) -> int | None | Awaitable[int | None]:
        return lookups.servable_record(self.conn, url, credential_key(fields), fields)

    def _filled(self) -> BloomFilter:
        """A filter sized for, and holding, every URL of the database's records (in a thread)."""
        conn = schema.connect(self.path, readonly=True, bodies=False)
        try:
            return _filter_of(lookups.record_url_count(conn), map(url_digest, lookups.record_urls(conn)))
        finally:
            conn.close()

    def close(self) -> None:
        self.filter = None
        if self._build is not None:
            self._build.cancel()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class FleetLookup(Lookup):
    """The lookup of a fleet node's proxy, which reads no database itself: its store answers
    from its copy of the fleet's records (`URLS_PATH` for the filter, `LOOKUP_PATH` for a URL
    the filter admits), on the internal port it tells once started (`connected`)."""

    ERRORS = (httpx.HTTPError, ValueError)

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.base = ""
        self.headers: dict[str, str] = {}
        self.client: httpx.AsyncClient | None = None

    def connected(self, port: int, secret: str) -> None:
        """The store (started again, perhaps) answers on `port`."""
        self.base, self.headers = f"http://127.0.0.1:{port}", {protocol.SECRET: secret}

    def _connect(self) -> None:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=ASK_SECONDS, trust_env=False)

    @property
    def _opened(self) -> bool:
        return self.client is not None

    def _filled(self) -> BloomFilter:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=60, trust_env=False) as client:
            answer = client.get(protocol.URLS_PATH)
        answer.raise_for_status()
        data, size = answer.content, protocol.DIGEST_BYTES
        count = len(data) // size
        return _filter_of(count, (data[at:at + size] for at in range(0, count * size, size)))

    async def _find(self, url: str, fields: list[tuple[str, str]]) -> int | None:
        try:
            answer = await self.client.post(self.base + protocol.LOOKUP_PATH, headers=self.headers,
                                            json={"url": url, "fields": fields})
            answer.raise_for_status()
            return answer.json()["record"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # the store restarts: the request passes through
            logger.warning("bgfetch: the store did not say whether it holds %s: %r", url[:200], exc)
            return None

    def close(self) -> None:
        super().close()
        if self.client is not None:
            client, self.client = self.client, None
            asyncio.get_running_loop().create_task(client.aclose())


def _filter_of(count: int, digests: Iterable[bytes]) -> BloomFilter:
    """A filter sized for `count` URLs, holding these digests."""
    built = BloomFilter(bits_for(count))
    for digest in digests:
        built.add(digest)
    return built
