"""harness/poll.py: a wait returns the first value wanted, or fails in time saying what it wanted and saw."""

import asyncio
import time

import pytest

from harness.poll import eventually, eventually_async


def counter(start: int = 0):
    """A read that gives start, start + 1, ... one value a call."""
    values = iter(range(start, 1_000_000))
    return lambda: next(values)


def test_the_first_true_value_is_returned_and_nothing_is_read_after_it():
    read = counter()
    assert eventually(lambda: (n := read()) >= 3 and f"value {n}", 5, interval=0) == "value 3"
    assert read() == 4  # 0 to 3 were read, and nothing after the one wanted


def test_until_decides_and_the_value_read_is_returned():
    assert eventually(counter(), 5, until=lambda n: n >= 4, interval=0) == 4
    assert eventually(counter(), 5, until=lambda n: n == 0, interval=0) == 0  # a false value may be the one wanted


def test_time_up_is_an_assertion_naming_what_was_wanted_and_the_last_value_seen():
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"waited 0\.\d s for seven to appear; last seen: 'six'$"):
        eventually(lambda: "six", 0.2, until=lambda text: text == "seven", interval=0.01, what="seven to appear")
    assert 0.2 <= time.monotonic() - started < 2


def test_explain_says_more_than_the_value_and_a_read_that_raises_ends_the_wait_at_once():
    with pytest.raises(AssertionError, match="last seen: status 404, body 'nope'"):
        eventually(lambda: (404, "nope"), 0.05, until=lambda r: r[0] == 200, interval=0.01,
                   explain=lambda r: f"status {r[0]}, body {r[1]!r}")
    started = time.monotonic()
    with pytest.raises(KeyError):
        eventually(lambda: {}["missing"], 30)
    assert time.monotonic() - started < 1


def test_pause_is_called_with_the_interval_between_reads():
    pauses = []
    assert eventually(counter(1), 5, until=lambda n: n == 3, interval=0.25, pause=pauses.append) == 3
    assert pauses == [0.25, 0.25]


def test_the_async_wait_lets_the_event_loop_run_and_can_wake_on_a_notification():
    async def scenario():
        flag = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, flag.set)
        assert await eventually_async(flag.is_set, 5, interval=0.01, what="the flag") is True
        woken = []

        async def notified(timeout: float) -> None:
            woken.append(timeout)

        assert await eventually_async(counter(), 5, until=lambda n: n == 2, interval=0.5, pause=notified) == 2
        assert woken == [0.5, 0.5]
        with pytest.raises(AssertionError, match="waited .* s for never; last seen: False"):
            await eventually_async(lambda: False, 0.05, interval=0.01, what="never")

    asyncio.run(scenario())
