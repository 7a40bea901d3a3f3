"""Checking a stored response with its origin before it is served (RFC 9111 §4.3).

`Revalidation.check` asks `freshness` whether the stored response of a record may be served as
it is. If not, it sends the conditional request — the client's own request fields (its
credentials and the fields the response varies on) with the stored validators — and sorts the
answer:

- `304`: the stored header fields are refreshed (`Storage.refresh_response`), and it is served;
- the origin unreachable, or a `5xx`: the stored response is served, as `stale-if-error` would
  have it: bgfetch keeps what it stored for when the origin is gone;
- a new entity (`2xx`): it goes to this client as the origin sends it (`Relay`);
- anything else (a `4xx`): the origin's answer goes to this client as it is (`Relay`); what is
  stored stays.

A record with `integrity` is pinned to its verified body and never checked.
"""

import logging
from dataclasses import dataclass

import httpx

from store.db import Record, Storage
from store.engine import freshness, headers

logger = logging.getLogger(__name__)

Fields = list[tuple[str, str]]
TIMEOUT = httpx.Timeout(15.0, connect=5.0)  # an origin slower than this to answer is as good as gone


@dataclass(frozen=True)
class Stored:
    """Serve this record's stored response (confirmed, or the best there is)."""

    record: Record


@dataclass(frozen=True)
class Relay:
    """Send the origin's answer to the client as it comes; the caller closes it."""

    response: httpx.Response


Outcome = Stored | Relay


class Revalidation:
    """Checks stored responses with `client`; `mode` is bgfetch_revalidate (for records that
    do not say)."""

    def __init__(self, storage: Storage, client: httpx.AsyncClient, mode: str) -> None:
        self.storage = storage
        self.client = client
        self.mode = mode

    def verdict(self, record: Record, request_fields: Fields) -> freshness.Verdict:
        mode = freshness.NEVER if record.integrity else record.revalidate or self.mode
        return freshness.verdict(mode, record.url, record.response_headers, request_fields, bool(record.credential))

    async def check(self, record: Record, request_fields: Fields) -> Outcome:
        """What to answer a GET/HEAD of `record`'s stored response with, for a client whose
        request carries `request_fields`."""
        verdict = self.verdict(record, request_fields)
        if verdict.fresh:
            return Stored(record)
        asked = [*headers.upstream(request_fields), *verdict.conditions, ("Accept-Encoding", "identity")]
        request = self.client.build_request("GET", record.url, headers=asked, timeout=TIMEOUT)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            logger.info("%s: not revalidated (%s: %s); serving the stored response", record.url, type(exc).__name__, exc)
            return Stored(record)
        if response.status_code == 304:
            await response.aclose()
            return Stored(await self._refreshed(record, list(response.headers.multi_items())))
        if response.status_code >= 500:
            await response.aclose()
            logger.info("%s: the origin answered %d; serving the stored response", record.url, response.status_code)
            return Stored(record)
        return Relay(response)

    async def _refreshed(self, record: Record, answer: Fields) -> Record:
        """The record with its fields refreshed by a 304 (as stored, if the 304 was for another)."""
        fields = freshness.refreshed(record.url, record.response_headers, answer, bool(record.credential))
        if fields is None:
            logger.info("%s: a 304 for another version; serving the stored response", record.url)
            return record
        if await self.storage.refresh_response(record.id, record.generation, freshness.dated(fields)):
            return self.storage.record(record.id)
        return record
