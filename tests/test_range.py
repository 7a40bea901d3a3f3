"""store/web/ranges.py: reading a Range header (RFC 9110 14.2) for a stored body: one range, a suffix, positions of
any length, and what is ignored. If-Range and the answers (206, 416) end to end: test_bounds.py, test_header_e2e.py."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store.web.ranges import Unsatisfiable, parse_range

HUGE = "9" * 5000


@pytest.mark.parametrize("header, size, expected", [
    (None, 100, None), ("", 100, None), ("bytes=0-9", None, None),
    ("bytes=0-9", 100, (0, 10)), ("bytes=90-", 100, (90, 100)), ("bytes=-10", 100, (90, 100)),
    ("bytes=0-999", 100, (0, 100)), ("bytes=-1000", 100, (0, 100)),
    (f"bytes=0-{HUGE}", 100, (0, 100)), (f"bytes=-{HUGE}", 100, (0, 100)),
    (f"bytes={'0' * 5000}7-{'0' * 5000}8", 100, (7, 9)),
    (f"bytes={HUGE}-1", 100, None),  # last before first: invalid, ignored
    ("bytes=5-4", 100, None), ("bytes=-", 100, None), ("bytes=0-9,20-29", 100, None), ("items=0-9", 100, None),
    ("bytes=\u0663-5", 100, None), ("bytes=\u00b2-5", 100, None),  # DIGIT is 0-9 only
    (" bytes=0-9 ", 100, (0, 10)),
    # the first byte, the last byte, suffixes up to the whole body; an unknown size is the whole body
    ("bytes=0-0", 100, (0, 1)), ("bytes=99-99", 100, (99, 100)), ("bytes=99-", 100, (99, 100)),
    ("bytes=-1", 100, (99, 100)), ("bytes=-100", 100, (0, 100)), ("bytes=-0010", 100, (90, 100)),
    ("bytes=-5", None, None), ("bytes=90-", None, None),
    # several ranges, even each one valid alone: the whole body (RFC 9110 14.2 lets a server ignore them)
    ("bytes=0-9, 20-29", 100, None), ("bytes=90-,-5", 100, None), ("bytes=0-9,", 100, None), ("bytes=,0-9", 100, None),
    # not the grammar: spaces inside, signs, other number forms
    ("bytes = 0-9", 100, None), ("bytes=0 -9", 100, None), ("bytes=0- 9", 100, None), ("bytes=-5-9", 100, None),
    ("bytes=--5", 100, None), ("bytes=+5-9", 100, None), ("bytes=0x10-20", 100, None), ("bytes=5.0-9", 100, None),
])
def test_ranges(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header, size", [
    (f"bytes={HUGE}-", 100), (f"bytes={HUGE}-{HUGE}", 100), ("bytes=100-", 100), ("bytes=-0", 100), ("bytes=-5", 0),
    (f"bytes=-{'0' * 5000}", 100), ("bytes=0-", 0),
    ("bytes=100-200", 100), ("bytes=150-199", 100), ("bytes=0-9", 0), ("bytes=-0", 0),
])
def test_ranges_past_the_end_are_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


POSITION = st.one_of(st.just(""), st.from_regex(r"[0-9]{1,25}", fullmatch=True), st.integers(1, 9000).map(lambda n: "9" * n))


@settings(max_examples=300, derandomize=True, database=None)
@given(
    header=st.one_of(st.tuples(POSITION, POSITION).map(lambda p: f"bytes={p[0]}-{p[1]}"), st.text(max_size=40)),
    size=st.one_of(st.none(), st.integers(0, 2**62)),
)
def test_any_header_is_a_span_inside_the_body_the_whole_body_or_unsatisfiable(header, size):
    try:
        span = parse_range(header, size)
    except Unsatisfiable:
        assert size is not None
        return
    if span is not None:
        start, end = span
        assert 0 <= start < end <= size
