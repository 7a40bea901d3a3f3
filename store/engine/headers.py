"""Which HTTP header fields cross between client, store and origin."""

import json
from collections.abc import Iterable

from vocabulary import INTERNAL_PREFIX

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
}
# Not sent upstream: the store fetches the whole entity itself, unencoded, unconditionally.
NOT_UPSTREAM = HOP_BY_HOP | {
    "host", "content-length", "range", "if-range", "accept-encoding", "if-none-match",
    "if-modified-since", "if-match", "if-unmodified-since", "background-fetch",
}
# Not replayed from a stored response: framing is the store's, cookies are per client, and its
# age is the store's to tell (`Age`, from the origin's `Date`, which is replayed).
NOT_REPLAYED = HOP_BY_HOP | {"content-length", "content-range", "set-cookie", "age"}


def upstream(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (k, v) for k, v in fields
        if k.lower() not in NOT_UPSTREAM and not k.lower().startswith(INTERNAL_PREFIX)
    ]


def replayed(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in fields if k.lower() not in NOT_REPLAYED]


def relayed(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """An origin's live answer as it goes on to the client: all but the connection's own fields."""
    return [(k, v) for k, v in fields if k.lower() not in HOP_BY_HOP]


def first(fields: Iterable[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in fields if k.lower() == name), None)


def merged(fields: list[tuple[str, str]], changes: Iterable[tuple[str, str | None]]) -> list[tuple[str, str]]:
    """`fields` with each changed name replaced by its new value, or removed for None."""
    changes = list(changes)
    names = {name.lower() for name, _ in changes}
    kept = [(k, v) for k, v in fields if k.lower() not in names]
    return kept + [(name, value) for name, value in changes if value is not None]


def parse(text: str | None) -> list[tuple[str, str]]:
    """Header fields as stored: a JSON list of [name, value] pairs."""
    return [(k, v) for k, v in json.loads(text or "[]")]
