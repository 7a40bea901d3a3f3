"""Registration events (progress, success, fail, abort): live subscribers and a short replay log."""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25
KEEP = 1000
FINAL = ("success", "fail", "abort")

Event = tuple[int, str, dict]


class EventBus:
    """Numbers every event, keeps the last KEEP for `Last-Event-ID` replay, fans them out.

    Progress is throttled per registration to one event a PROGRESS_INTERVAL; the last
    state always goes out (a trailing event), so a subscriber never stays behind. An event's
    id is the time it was published in microseconds (one more than the last, if the clock has
    not moved on), so ids keep growing across restarts, and a `Last-Event-ID` given by one node
    of a fleet asks another for every event it had since that moment (clocks kept in step, as
    NTP keeps them). A client that moves may get an event twice, never miss one: each event
    carries its registration whole.
    """

    def __init__(self, snapshot: Callable[[str], dict | None]) -> None:
        self.snapshot = snapshot
        self.log: deque[Event] = deque(maxlen=KEEP)
        self.listeners: list[Callable[[int, str, dict], None]] = []  # told of this node's own events
        self._last_id = 0
        self._queues: set[asyncio.Queue] = set()
        self._last_progress: dict[str, float] = {}
        self._trailing: dict[str, asyncio.TimerHandle] = {}

    def publish(self, type_: str, reg_id: str, own: bool = True) -> None:
        """Number the event and give it to every subscriber; `listeners` (the webhook) hear only
        the node's `own` events, so a fleet whose nodes share a webhook calls it once an event."""
        registration = self.snapshot(reg_id)
        if registration is None:
            return
        if type_ != "progress":
            self._cancel_trailing(reg_id)
            self._last_progress.pop(reg_id, None)
        self._last_id = max(self._last_id + 1, time.time_ns() // 1000)
        event = (self._last_id, type_, registration)
        self.log.append(event)
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                logger.warning("an event subscriber fell %d events behind; it is dropped", KEEP)
                self.end(queue)
        if own:
            for listener in self.listeners:
                listener(*event)

    def progress(self, reg_id: str) -> None:
        wait = self._last_progress.get(reg_id, 0) + PROGRESS_INTERVAL - time.monotonic()
        if wait <= 0:
            self._last_progress[reg_id] = time.monotonic()
            self.publish("progress", reg_id)
        elif reg_id not in self._trailing:
            loop = asyncio.get_running_loop()
            self._trailing[reg_id] = loop.call_later(wait, self._trail, reg_id)

    def _trail(self, reg_id: str) -> None:
        del self._trailing[reg_id]
        self.progress(reg_id)

    def _cancel_trailing(self, reg_id: str) -> None:
        handle = self._trailing.pop(reg_id, None)
        if handle:
            handle.cancel()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def subscribe(self, last_id: int | None = None) -> asyncio.Queue:
        """A queue of the events after `last_id` still in the log, then of live ones.

        `None` in the queue ends the subscription (the store stops, or the subscriber fell
        KEEP events behind: it may reconnect with its last id). `unsubscribe` when done.
        """
        queue: asyncio.Queue = asyncio.Queue(maxsize=KEEP + 1)
        if last_id is not None:
            for event in self.log:
                if event[0] > last_id:
                    queue.put_nowait(event)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)

    def end(self, queue: asyncio.Queue) -> None:
        """End a subscription: its queue holds only None now."""
        self._queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def close(self) -> None:
        """Cancel pending progress and end every subscription."""
        for handle in self._trailing.values():
            handle.cancel()
        self._trailing.clear()
        for queue in list(self._queues):
            self.end(queue)
