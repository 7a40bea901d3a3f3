"""Fetching one body over several connections: whether it may be, and which byte ranges each gets.

Many CDNs and mirrors cap each connection's rate; a body asked for in N `Range` requests at once
arrives up to N times sooner (`bgfetch_segments`, also a rule and header key). Only a body that
can be asked for in parts without ever mixing two versions is: its size known, `Accept-Ranges:
bytes`, and a validator that `If-Range` carries (a strong ETag, else Last-Modified: an origin
that changed the file answers a part with the whole new entity, `200`, and the record starts
again). Parts are at least MIN_PART long, so a small body takes one connection.

The parts need no bookkeeping of their own: the chunks they commit are it. After a pause or a
crash, the gaps between the chunks a record holds are asked for again, split into parts anew.
Readers get the bytes in order, as the contiguous prefix (the record's `stored`) grows.
"""

MIN_PART = 16 * 1024 * 1024
ALIGN = 1024 * 1024  # parts are whole MiBs, as chunks are


def connections(wanted: int, size: int | None, accept_ranges: str | None, has_validator: bool) -> int:
    """How many connections a body of `size` bytes may take, `wanted` at most."""
    if size is None or not has_validator or (accept_ranges or "").strip().lower() != "bytes":
        return 1
    return max(1, min(wanted, size // MIN_PART))


def gaps(spans: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The byte ranges [start, end) of a body of `size` bytes that `spans` (in order) do not hold."""
    missing, at = [], 0
    for start, end in spans:
        if start > at:
            missing.append((at, min(start, size)))
        at = max(at, end)
    if at < size:
        missing.append((at, size))
    return [(start, end) for start, end in missing if start < end]


def plan(ranges: list[tuple[int, int]], parts: int) -> list[tuple[int, int]]:
    """`ranges` split into about `parts` parts, each range into a share by its length (one at
    least, none shorter than MIN_PART unless the range is), in order."""
    total = sum(end - start for start, end in ranges)
    planned = []
    for start, end in ranges:
        share = max(1, min(round(parts * (end - start) / total), (end - start) // MIN_PART))
        planned += [(start + a, start + b) for a, b in split_evenly(end - start, share)]
    return planned


def split_evenly(size: int, parts: int) -> list[tuple[int, int]]:
    """[0, size) in `parts` parts of about the same length (whole MiBs but the last)."""
    step = -(-size // parts // ALIGN) * ALIGN or size
    bounds = [min(size, n * step) for n in range(parts)] + [size]
    return [(bounds[n], bounds[n + 1]) for n in range(parts) if bounds[n] < bounds[n + 1]]
