"""A client's conditional GET or HEAD against a stored response: `304 Not Modified` or not (RFC 9110 §13).

`If-None-Match` wins over `If-Modified-Since` (§13.2.2); entity tags compare weakly (§8.8.3.2);
a date that cannot be read is no condition at all.
"""

import email.utils
from collections.abc import Iterable

from store.engine import headers

# What a 304 carries of the response it stands for (RFC 9110 §15.4.5), besides the store's Age.
NOT_MODIFIED_FIELDS = ("cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified")


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag[:2] in ("W/", "w/") else tag


def not_modified(if_none_match: str | None, if_modified_since: str | None, stored: Iterable[tuple[str, str]]) -> bool:
    """Whether the client already holds the stored response, by its conditions."""
    stored = list(stored)
    if if_none_match is not None:
        etag = headers.first(stored, "etag")
        tags = {_opaque(tag) for tag in if_none_match.split(",")}
        return "*" in tags or (etag is not None and _opaque(etag) in tags)
    modified, since = headers.first(stored, "last-modified"), if_modified_since
    if modified is None or since is None:
        return False
    try:
        return email.utils.parsedate_to_datetime(modified) <= email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


def not_modified_fields(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields of a 304 for a response with these fields."""
    return [(k, v) for k, v in fields if k.lower() in NOT_MODIFIED_FIELDS or k.lower() == "age"]
