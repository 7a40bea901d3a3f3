"""store/engine/admission.py: a downloadTotal beyond what the quota leaves is refused before
anything is made, saying how much the quota leaves."""

import pytest

from store.engine.admission import QuotaExceeded, check_quota


@pytest.mark.parametrize("download_total, quota, held", [
    (None, 100, 0), (100, None, 10**12), (100, 100, 0), (60, 100, 40), (1, 10, 9),
])
def test_what_fits_or_is_not_limited_passes(download_total, quota, held):
    asked = []
    check_quota(download_total, quota, lambda: asked.append(held) or held)
    assert asked == ([] if None in (download_total, quota) else [held])  # the sum is read only when needed


@pytest.mark.parametrize("download_total, quota, held, left", [
    (101, 100, 0, 100), (61, 100, 40, 60), (2**53, 10**9, 0, 10**9), (1, 100, 150, 0),
])
def test_what_does_not_fit_names_download_total_and_the_room_left(download_total, quota, held, left):
    with pytest.raises(QuotaExceeded) as refused:
        check_quota(download_total, quota, lambda: held)
    message = str(refused.value)
    assert message.startswith(f"downloadTotal {download_total} is more than the {left} bytes")
    assert "bgfetch_quota" in message and f"{held} held" in message
