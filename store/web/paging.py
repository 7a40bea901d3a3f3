"""Pages of `GET /api/fetches`: the `limit`, the `order` and the opaque `cursor` of the next page.

A cursor names the position after the last id of a page and the order it was read in, so a
client goes on with `cursor=<next>` (and the same `all`) until an answer has no `next`. It is
the text of that position in base64url: a client makes nothing of it, and a cursor that is not
one of ours is a 400 naming `cursor`.
"""

import base64
import binascii
import re
from dataclasses import dataclass

from store.web.handler import Problem

LIMIT_DEFAULT = 1000  # `getIds()` without a limit: the first this many
LIMIT_MOST = 1000
ORDERS = ("oldest", "newest")  # by when they were made: getIds()'s order, or a downloads page's
_POSITION = re.compile(r"^(oldest|newest):([0-9]{1,19})$")


@dataclass(frozen=True)
class Asked:
    """What a client asked for: how many, in which order, after which position (None: the start)."""

    limit: int
    newest_first: bool
    after: int | None


def asked(argument) -> Asked:
    """Read `limit`, `order` and `cursor` with `argument(name)` (None when absent); a 400 problem
    naming the parameter when one is wrong."""
    limit = _limit(argument("limit"))
    order = argument("order")
    if order is not None and order not in ORDERS:
        raise _invalid("order", f"order must be {' or '.join(ORDERS)}.")
    after = None
    if (cursor := argument("cursor")) is not None:
        cursor_order, after = _position(cursor)
        if order is not None and order != cursor_order:
            raise _invalid("cursor", f"This cursor continues order={cursor_order}, not order={order}.")
        order = cursor_order
    return Asked(limit, order == "newest", after)


def cursor(order_newest: bool, after: int) -> str:
    """The cursor of the page after the position `after`."""
    text = f"{ORDERS[order_newest]}:{after}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _limit(value: str | None) -> int:
    if value is None:
        return LIMIT_DEFAULT
    if not (value.isascii() and value.isdigit() and len(value) <= 9 and 1 <= int(value) <= LIMIT_MOST):
        raise _invalid("limit", f"limit must be a whole number from 1 to {LIMIT_MOST}.")
    return int(value)


def _position(value: str) -> tuple[str, int]:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    if len(value) > 64 or not (match := _POSITION.match(text)):
        raise _invalid("cursor", "cursor must be the `next` of an earlier answer.")
    return match.group(1), int(match.group(2))


def _invalid(field: str, detail: str) -> Problem:
    return Problem(400, "invalid-request", detail, field=field)
