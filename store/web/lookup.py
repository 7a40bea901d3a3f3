"""The proxy's questions to its store when it cannot read the database itself (a fleet): which URLs, which record.

Both routes are on the internal port only (the shared secret). A fleet node's store answers
from its copy in memory of the fleet's records, so the proxy finds what any node stores or is
fetching, without a query of its own.
"""

import json

from store.proxyside import protocol
from store.web.handler import Problem, StoreHandler
from vocabulary import credential_key

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
    """`POST LOOKUP_PATH` with `{"url": ..., "fields": [[name, value], ...]}` (a request's header
    fields): `{"record": n}` for the record that answers a GET of that URL with those fields
    (the same credentials, and the values its response varies on), `{"record": null}` if none."""

    CHECKS_FORGERY = False

    def post(self) -> None:
        try:
            asked = json.loads(self.request.body)
            url, fields = asked["url"], [(str(name), str(value)) for name, value in asked["fields"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise Problem(400, "bad-handover", f"{protocol.LOOKUP_PATH} takes {{url, fields}}: {exc}") from None
        self.send_json({"record": self.store.servable(url, credential_key(fields), fields)})
