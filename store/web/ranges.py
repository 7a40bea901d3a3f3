"""The `Range` request header (RFC 9110), read without trusting a digit of it."""

import re


class Unsatisfiable(Exception):
    """The Range header asks for nothing inside the body."""


_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
BEYOND = 2**63  # stands for a position of more than 18 digits: past the end of any body


def parse_range(header: str | None, size: int | None) -> tuple[int, int] | None:
    """A single `Range: bytes=...` as (start, end exclusive); None means the whole body.

    Multiple ranges, other units, an unparsable value and an unknown size are answered with
    the whole body, as RFC 9110 allows; a range wholly past the end raises Unsatisfiable.
    Positions of any length are read (leading zeros too), none with int() of a long string.
    """
    if not header or size is None:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = (_position(text) for text in match.groups())
    if first is None:
        if last == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - last), size
    if last is not None and last < first:
        return None  # not a valid range: ignored
    if first >= size:
        raise Unsatisfiable(header)
    return first, size if last is None else min(last + 1, size)


def _position(digits: str) -> int | None:
    """A byte position of a Range (None when absent); BEYOND for one too long to matter."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else BEYOND
