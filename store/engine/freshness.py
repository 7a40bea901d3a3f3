"""When a stored response may be served as it is and when its origin must be asked (RFC 9111, by hishel).

hishel's sans-I/O cache states decide; this module only turns bgfetch's stored header fields
and a client's request into hishel's `Request`/`Entry` and reads the state it moves to:

- `IdleClient` → `FromCache` (fresh: served as stored) or `NeedRevalidation` (stale by
  `Cache-Control`/`Expires`/heuristic freshness, `no-cache` on either side), with the
  `If-None-Match`/`If-Modified-Since` of the conditional request;
- `NeedRevalidation` on a `304` → `NeedToBeUpdated`: the stored fields refreshed (RFC 9111 §3.2);
- `CacheMiss` on a response → `StoreAndUse` or `CouldNotBeStored` (`no-store`, `private`...):
  whether a response may be served to later requests.

bgfetch's own rules around them: `bgfetch_revalidate` (`never`: never asked; `always`: every
time), a client's `max-age=0` (or `Pragma: no-cache`) asks like `no-cache` does, and a
response fetched with credentials is kept as that user's private cache would keep it (the
lookup key holds the credentials), one fetched without as a shared cache would. Age is
hishel's: the seconds since the response's `Date`. Serving a stored response when the origin
cannot be asked (unreachable, `5xx`) is bgfetch's promise, not hishel's (see README).
"""

import email.utils
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import hishel
from hishel._core._headers import parse_cache_control
from hishel._core._spec import get_age

Fields = list[tuple[str, str]]
NEVER, CACHE_CONTROL, ALWAYS = "never", "cache-control", "always"
FORCED = "no-cache"  # what a request that insists on the origin's word carries, for hishel


@dataclass(frozen=True)
class Verdict:
    """What to do with a stored response for one request: serve it (`fresh`), or ask the
    origin first with `conditions` (If-None-Match / If-Modified-Since; none: no validator)."""

    fresh: bool
    conditions: Fields = ()


def _headers(fields: Iterable[tuple[str, str]]) -> hishel.Headers:
    grouped: dict[str, list[str]] = {}
    for name, value in fields:
        grouped.setdefault(name.lower(), []).append(value)
    return hishel.Headers(grouped)


def _fields(headers: hishel.Headers) -> Fields:
    return [(name, value) for name in headers for value in headers.get_list(name) or []]


def _options(credentialed: bool) -> hishel.CacheOptions:
    """A response fetched with credentials is that user's (a private cache), else everyone's."""
    return hishel.CacheOptions(shared=not credentialed, supported_methods=["GET", "HEAD"])


def _entry(url: str, stored: Fields, selecting: Fields) -> hishel.Entry:
    request = hishel.Request(method="GET", url=url, headers=_headers(selecting))
    return hishel.Entry(id=uuid.uuid4(), request=request, response=hishel.Response(200, _headers(stored)))


def insists(request_fields: Fields) -> bool:
    """Whether a client asks for the origin's word (`no-cache`, `max-age=0`, `Pragma: no-cache`)."""
    control = ", ".join(v for k, v in request_fields if k.lower() == "cache-control")
    if control:
        directives = parse_cache_control(control)
        return directives.no_cache is True or directives.max_age == 0
    return any(k.lower() == "pragma" and "no-cache" in v.lower() for k, v in request_fields)


def verdict(mode: str, url: str, stored: Fields, request_fields: Fields, credentialed: bool) -> Verdict:
    """Serve the stored response for this GET/HEAD, or revalidate it first. The request's
    selecting fields are the stored ones: the lookup has matched `Vary` already."""
    if mode == NEVER:
        return Verdict(True)
    asked = [(k, v) for k, v in request_fields if k.lower() in ("cache-control", "pragma")]
    if mode == ALWAYS or insists(request_fields):
        asked = [("cache-control", FORCED)]
    request = hishel.Request(method="GET", url=url, headers=_headers(asked))
    state = hishel.IdleClient(options=_options(credentialed)).next(request, [_entry(url, stored, [])])
    if isinstance(state, hishel.FromCache):
        return Verdict(True)
    conditions = [(k, v) for k, v in _fields(state.request.headers) if k.lower().startswith("if-")]
    return Verdict(False, conditions)


def refreshed(url: str, stored: Fields, answer: Fields, credentialed: bool) -> Fields | None:
    """The stored fields updated by a `304`'s (RFC 9111 §3.2); None when the 304 names
    another response (its validator differs): the stored one cannot be used."""
    original = hishel.Request(method="GET", url=url)
    entry = _entry(url, stored, [])
    revalidation = hishel.NeedRevalidation(
        options=_options(credentialed), request=original, original_request=original, revalidating_entries=[entry]
    )
    state = revalidation.next(hishel.Response(304, _headers(answer)))
    if isinstance(state, hishel.InvalidateEntries):
        state = state.next()
    if not isinstance(state, hishel.NeedToBeUpdated):
        return None
    return _fields(state.updating_entries[-1].response.headers)


def reusable(url: str, status: int, fields: Fields, credentialed: bool) -> bool:
    """Whether a response may be served to later requests (no `no-store`; without
    credentials no `private`)."""
    request = hishel.Request(method="GET", url=url)
    state = hishel.CacheMiss(request=request, options=_options(credentialed)).next(hishel.Response(status, _headers(fields)))
    if isinstance(state, hishel.InvalidateEntries):
        state = state.next()
    return isinstance(state, hishel.StoreAndUse)


def age(fields: Fields) -> int:
    """Seconds since the response was made or last confirmed by its origin (its `Date`)."""
    return get_age(hishel.Response(200, _headers(fields)))


def dated(fields: Fields, now: float | None = None) -> Fields:
    """The fields with a `Date` of `now` when the origin sent none (RFC 9110 §6.6.1: a cache
    adds one), so that the response's age is known."""
    if any(k.lower() == "date" for k, _ in fields):
        return fields
    return [*fields, ("Date", email.utils.formatdate(time.time() if now is None else now, usegmt=True))]
