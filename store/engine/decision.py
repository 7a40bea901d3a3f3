"""What an origin's answer means for a record's stored bytes: one pure function over HTTP facts.

`decide` reads the status and the framing headers of the response to a request that asked for
the bytes after `stored` (with `Range`/`If-Range` when it could), and picks one action; the
transfer applies it in one place. It never touches storage or the network.

- `206` whose `Content-Range` starts at `stored` (and agrees on the length), or a `416` that
  says the body ends there: `Append` at `stored`.
- another `206`/`416` while resuming: `StartOver` (forget the bytes; the next try starts at 0).
- `401`/`403` while resuming: `KeepAndPause` (the credentials expired: new ones resume it).
- any other non-2xx (and a `206` to a request without `Range`): `BadStatus`.
- a `200`-like answer: `Replace` (a new entity from byte 0; the stored bytes, if any, go).

A request for one part of a body (`decide_part`, when it comes over several connections) wants
exactly that part of that entity: anything else starts the record again.
"""

import re
from dataclasses import dataclass

CONTENT_RANGE = re.compile(r"^bytes (?:([0-9]{1,19})-[0-9]{1,19}|\*)/([0-9]{1,19}|\*)$")


@dataclass(frozen=True)
class Append:
    """The answer continues the stored bytes at `offset`; the body is `size` bytes in all."""

    offset: int
    size: int | None


@dataclass(frozen=True)
class Replace:
    """A whole new entity from byte 0, `size` bytes (None: not said)."""

    size: int | None


@dataclass(frozen=True)
class StartOver:
    """The resume was answered with other bytes: forget what is stored, pause, start again."""

    reason: str


@dataclass(frozen=True)
class KeepAndPause:
    """The origin refused the stored credentials: keep the bytes, pause until new ones come."""

    reason: str


@dataclass(frozen=True)
class BadStatus:
    """Not a success: the registration fails with bad-status."""

    status: int


Action = Append | Replace | StartOver | KeepAndPause | BadStatus


def content_range(value: str | None) -> tuple[int | None, int | None] | None:
    """(first byte, complete length) of a `Content-Range` response header, None for an unknown
    part; `bytes */N` (a 416's) gives (None, N). None when it is not one."""
    match = CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None
    first, total = match.groups()
    return None if first is None else int(first), None if total == "*" else int(total)


def content_length(value: str | None) -> int | None:
    """The length a `Content-Length` announces; None when absent or not a plain number."""
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 19 else None


def decide(url: str, stored: int, known_size: int | None, status: int,
           range_header: str | None, length_header: str | None) -> Action:
    """The action for an answer `status` (with its Content-Range and Content-Length) to a request
    for the bytes after `stored` of a body known to be `known_size` bytes (None: not known)."""
    if stored and status in (206, 416):
        first, total = content_range(range_header) or (None, None)
        if status == 416:
            first = stored
        same_length = None in (known_size, total) or known_size == total
        if first == stored and same_length:
            return Append(stored, total if total is not None else known_size)
        return StartOver(
            f"{url}: the resume was answered {status} with Content-Range {range_header!r}; starting again from byte 0"
        )
    if status in (401, 403) and stored:
        return KeepAndPause(
            f"{url}: the origin refused the stored credentials ({status}) when resuming after {stored} bytes;"
            " the bytes are kept: give the record new headers or a new URL (PATCH /api/fetches/{id})"
        )
    if not 200 <= status < 300 or status == 206:
        return BadStatus(status)
    return Replace(content_length(length_header))


def decide_part(url: str, start: int, size: int, status: int, range_header: str | None) -> Action:
    """The action for an answer to a request for the part of a body of `size` bytes from
    `start` (`Range: bytes=start-end`, with `If-Range`): `Append` when it is that part of that
    entity; `StartOver` when the origin sent the whole body (`200`: the entity changed, or
    Range was not honoured after all) or another part; `KeepAndPause` for refused credentials;
    any other status is `BadStatus`, as for the whole body."""
    if status == 206:
        first, total = content_range(range_header) or (None, None)
        if (first, total) == (start, size):
            return Append(start, size)
    if status in (200, 206, 416):
        return StartOver(
            f"{url}: a request for the bytes from {start} was answered {status} with Content-Range"
            f" {range_header!r}; starting again from byte 0 over one connection"
        )
    if status in (401, 403):
        return KeepAndPause(f"{url}: the origin refused the stored credentials ({status}) for the bytes from {start};"
                            " the bytes are kept: give the record new headers or a new URL (PATCH /api/fetches/{id})")
    return BadStatus(status)
