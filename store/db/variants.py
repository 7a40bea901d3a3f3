"""Which request a stored response was selected for, by its `Vary` (RFC 9111 §4.1), and whether another matches.

A response that varies keeps the values its request had for the fields its `Vary` names (its
*selecting* fields, as JSON); a later request is given it only when its own values are the
same, whitespace and the splitting of lines aside. Two names never count: `Accept-Encoding`
(the store always asks the origin for the unencoded body, which every client accepts) and the
credentials (the lookup key holds them already). `Vary: *` matches no request.
"""

import json
from collections.abc import Iterable

from vocabulary import CREDENTIALS

NOT_SELECTING = ("accept-encoding", *CREDENTIALS)
ANY = "*"


def _value(fields: list[tuple[str, str]], name: str) -> str | None:
    """A field's value as one normalized line, None when absent."""
    values = [v for k, v in fields if k.lower() == name]
    if not values:
        return None
    return ", ".join(part.strip() for value in values for part in value.split(",") if part.strip())


def selecting(response_fields: Iterable[tuple[str, str]], request_fields: Iterable[tuple[str, str]]) -> str:
    """The selecting fields of a response, as stored ("" when it does not vary)."""
    names = [name.lower() for name in (_value(list(response_fields), "vary") or "").split(", ") if name]
    if ANY in names:
        return json.dumps(ANY)
    request_fields = list(request_fields)
    kept = [[name, _value(request_fields, name)] for name in dict.fromkeys(names) if name not in NOT_SELECTING]
    return json.dumps(kept) if kept else ""


def names(stored: str) -> list[str]:
    """The names of the selecting fields (["*"] for `Vary: *`)."""
    kept = json.loads(stored) if stored else []
    return [ANY] if kept == ANY else [name for name, _ in kept]


def matches(stored: str, request_fields: Iterable[tuple[str, str]]) -> bool:
    """Whether a request may be given the response whose selecting fields are `stored`."""
    if not stored:
        return True
    kept = json.loads(stored)
    if kept == ANY:
        return False
    request_fields = list(request_fields)
    return all(_value(request_fields, name) == value for name, value in kept)
