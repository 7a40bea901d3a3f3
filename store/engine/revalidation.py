"""Checking a stored response with its origin before it is served (RFC 9111 §4.3).

`Revalidation.check` asks `freshness` whether the stored response of a record may be served as
it is. If not, it sends the conditional request — the client's own request fields (its
credentials and the fields the response varies on) with the stored validators — and sorts the
answer:

- `304`: the stored header fields are refreshed (`Storage.refresh_response`), and it is served;
- the origin unreachable, or a `5xx`: the stored response is served, as `stale-if-error` would
  have it: bgfetch keeps what it stored for when the origin is gone;
- a new entity (`2xx`) that may be kept: it is stored as the record's next generation in the
  background (`renewal`) and this client reads it as it arrives (`Renewing`); a request that
  needs the origin's word while a renewal is under way reads that one too, without asking;
- anything else (a `4xx`, a new entity with `no-store`): the origin's answer goes to this client
  as it is (`Relay`); what is stored stays.

A record with `integrity` is pinned to its verified body and never checked. A request whose
fields differ from those the stored response varies on (`variants`: only a header or a rule
that names the fetch reaches it so) is always checked, and when the origin cannot be asked it
is `Unavailable`: another request's variant is never served. Each time the origin is asked,
`counted` is told the outcome (`metrics.REVALIDATIONS`).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from store.db import Record, Storage, StorageFault, variants
from store.engine import freshness, headers
from store.engine.renewal import Renewals

logger = logging.getLogger(__name__)

Fields = list[tuple[str, str]]
TIMEOUT = httpx.Timeout(15.0, connect=5.0)  # an origin slower than this to answer is as good as gone


@dataclass(frozen=True)
class Stored:
    """Serve this record's stored response (confirmed, or the best there is); `asked`: the origin
    was asked first."""

    record: Record
    asked: bool = False


@dataclass(frozen=True)
class Renewing:
    """Serve the new entity being stored: `record` as its renewal will make it (its generation)."""

    record: Record


@dataclass(frozen=True)
class Unavailable:
    """Nothing to serve: the origin cannot be asked and the stored response is another request's."""

    reason: str


@dataclass(frozen=True)
class Relay:
    """Send the origin's answer to the client as it comes; the caller closes it."""

    response: httpx.Response


Outcome = Stored | Renewing | Relay | Unavailable


class Revalidation:
    """Checks stored responses with `client`; `mode` is bgfetch_revalidate (for records that
    do not say)."""

    def __init__(self, storage: Storage, client: httpx.AsyncClient, mode: str, renewals: Renewals,
                 counted: Callable[[str], None] = lambda outcome: None) -> None:
        self.storage = storage
        self.client = client
        self.mode = mode
        self.renewals = renewals
        self.counted = counted

    def verdict(self, record: Record, request_fields: Fields) -> freshness.Verdict:
        mode = freshness.NEVER if record.integrity else record.revalidate or self.mode
        if not record.integrity and not variants.matches(record.selecting, request_fields):
            mode = freshness.ALWAYS  # stored for another request: only its origin can say it fits
        return freshness.verdict(mode, record.url, record.response_headers, request_fields, bool(record.credential))

    async def check(self, record: Record, request_fields: Fields) -> Outcome:
        """What to answer a GET/HEAD of `record`'s stored response with, for a client whose
        request carries `request_fields`."""
        verdict = self.verdict(record, request_fields)
        if verdict.fresh:
            return Stored(record)
        if renewing := self.renewals.current(record.id):
            return Renewing(renewing)
        asked = [*headers.upstream(request_fields), *verdict.conditions, ("Accept-Encoding", "identity")]
        request = self.client.build_request("GET", record.url, headers=asked, timeout=TIMEOUT)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return self._unasked(record, request_fields, f"{type(exc).__name__}: {exc}", "unreachable")
        if response.status_code == 304:
            await response.aclose()
            self.counted("not-modified")
            return Stored(await self._refreshed(record, list(response.headers.multi_items())), asked=True)
        if response.status_code >= 500:
            await response.aclose()
            return self._unasked(record, request_fields, f"the origin answered {response.status_code}", "origin-error")
        if 200 <= response.status_code < 300 and response.status_code != 206:
            self.counted("modified")
            return await self._renewing(record, response, request_fields)
        self.counted("other")
        return Relay(response)

    def _unasked(self, record: Record, request_fields: Fields, why: str, outcome: str) -> Stored | Unavailable:
        """The origin could not confirm (`outcome`, counted): the stored response, unless it is another request's."""
        self.counted(outcome)
        if not variants.matches(record.selecting, request_fields):
            named = ", ".join(variants.names(record.selecting))
            return Unavailable(f"{record.url} could not be revalidated ({why}), and the stored response was"
                               f" selected for other request header values (Vary: {named})")
        logger.info("%s: not revalidated (%s); serving the stored response", record.url, why)
        return Stored(record, asked=True)

    async def _renewing(self, record: Record, response: httpx.Response, request_fields: Fields) -> Outcome:
        """A new entity: stored as the next generation when it may be kept, else relayed."""
        if renewing := self.renewals.current(record.id):  # another client's check came first
            await response.aclose()
            return Renewing(renewing)
        fields = list(response.headers.multi_items())
        if freshness.reusable(record.url, response.status_code, fields, bool(record.credential)):
            if renewing := await self.renewals.begin(record, response, variants.selecting(fields, request_fields)):
                return Renewing(renewing)
        return Relay(response)

    async def _refreshed(self, record: Record, answer: Fields) -> Record:
        """The record with its fields refreshed by a 304 (as stored, if the 304 was for another)."""
        fields = freshness.refreshed(record.url, record.response_headers, answer, bool(record.credential))
        if fields is None:
            logger.info("%s: a 304 for another version; serving the stored response", record.url)
            return record
        try:
            refreshed = await self.storage.refresh_response(record.id, record.generation, freshness.dated(fields))
        except StorageFault as exc:  # confirmed all the same; the next request asks again
            logger.warning("%s: confirmed by its origin, but the refreshed fields cannot be stored now: %s", record.url, exc)
            return record
        return self.storage.record(record.id) if refreshed else record
