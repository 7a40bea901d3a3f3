"""The proxy's questions to its store when it cannot read the database itself (a fleet): which URLs, which record.

Both routes are on the internal port only (the shared secret). A fleet node's store answers
from its copy in memory of the fleet's records, so the proxy finds what any node stores or is
fetching, without a query of its own.
"""

from store.proxyside import protocol
from store.web.handler import StoreHandler
from store.web.proxied import handed_over

DIGESTS_AT_ONCE = 4096  # digests written per flush


class Urls(StoreHandler):
    """`GET URLS_PATH`: the digest of every URL the records have, one after the other."""

    CHECKS_FORGERY = False

    async def get(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        batch = []
        for url in self.store.urls():
            batch.append(protocol.url_digest(url))
            if len(batch) == DIGESTS_AT_ONCE:
                self.write(b"".join(batch))
                batch = []
                await self.flush()
        self.write(b"".join(batch))


class Lookup(StoreHandler):
    """`GET LOOKUP_PATH` with URL and CREDENTIAL: `{"record": n}` for the record that answers a
    GET of that URL with those credentials, `{"record": null}` when none does."""

    CHECKS_FORGERY = False

    def get(self) -> None:
        url = handed_over(self.request.headers.get(protocol.URL), protocol.URL)
        credential = self.request.headers.get(protocol.CREDENTIAL, "")
        self.send_json({"record": self.store.servable(url, credential)})
