"""What a new registration must meet before it is made: a downloadTotal that the quota can hold.

The spec's `fetch()` rejects at once with a QuotaExceededError when the download it announces
cannot fit; bgfetch compares `downloadTotal` with what `bgfetch_quota` leaves beside every
stored body and the announced size of those downloading (storage's `held`).
"""

from collections.abc import Callable


class QuotaExceeded(Exception):
    """downloadTotal is more than what the store's quota leaves."""


def check_quota(download_total: int | None, quota: int | None, held: Callable[[], int]) -> None:
    """QuotaExceeded, saying by how much, when `download_total` bytes would not fit in `quota`
    with `held()` bytes already held (asked only when there is something to check: it sums
    every record)."""
    if download_total is None or quota is None:
        return
    taken = held()
    left = max(quota - taken, 0)
    if download_total > left:
        raise QuotaExceeded(
            f"downloadTotal {download_total} is more than the {left} bytes that bgfetch_quota leaves"
            f" ({quota} bytes, {taken} held); delete finished fetches or ask for less"
        )
