"""Wait until a condition holds: the one bounded poll loop of the tests and the harness.

    registration = eventually(lambda: proxy.registration("ep"), 30, until=lambda r: r["result"], what="a result")

`read()` is called until its value (or `until(value)`, when given) is true, `interval` seconds
apart; that value is returned. After `timeout` seconds an AssertionError says what was wanted,
what `read()` gave last (or what `explain(last)` makes of it), and how long it waited. An
exception that `read()` raises is not caught: it ends the wait at once.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Deadline:
    """The bookkeeping both loops share: is this value the one wanted, and is time up?"""

    def __init__(self, timeout: float, until: Callable[[Any], object] | None, what: str,
                 explain: Callable[[Any], object] | None) -> None:
        self.timeout, self.until, self.what, self.explain = timeout, until, what, explain
        self.started = time.monotonic()

    def done(self, value: object) -> bool:
        """Whether `value` is the one wanted; raises AssertionError once the time is up."""
        if self.until(value) if self.until else value:
            return True
        waited = time.monotonic() - self.started
        if waited > self.timeout:
            last = self.explain(value) if self.explain else repr(value)
            raise AssertionError(f"waited {waited:.1f} s for {self.what}; last seen: {last}")
        return False


def eventually(
    read: Callable[[], T], timeout: float = 20, *, until: Callable[[T], object] | None = None,
    interval: float = 0.05, what: str = "the condition", explain: Callable[[T], object] | None = None,
    pause: Callable[[float], object] = time.sleep,
) -> T:
    """The first value of `read()` that is true (or that `until` accepts), read every `interval`
    seconds for at most `timeout`; `pause(interval)` is called between reads (a browser page's
    own wait, for one, so that its events arrive meanwhile)."""
    deadline = _Deadline(timeout, until, what, explain)
    while not deadline.done(value := read()):
        pause(interval)
    return value


async def eventually_async(
    read: Callable[[], T], timeout: float = 20, *, until: Callable[[T], object] | None = None,
    interval: float = 0.05, what: str = "the condition", explain: Callable[[T], object] | None = None,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """`eventually` for a coroutine: the event loop runs while it waits (`await pause(interval)`,
    asyncio.sleep unless a wake-up such as a commit notification is given)."""
    deadline = _Deadline(timeout, until, what, explain)
    while not deadline.done(value := read()):
        await pause(interval)
    return value
