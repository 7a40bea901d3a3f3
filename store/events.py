"""Registration events (progress, success, fail, abort): live subscribers and a short replay log."""

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

PROGRESS_INTERVAL = 0.25
KEEP = 1000


class EventBus:
    """Numbers every event, keeps the last KEEP for `Last-Event-ID` replay, fans them out.

    Progress is throttled per registration to one event a PROGRESS_INTERVAL; the last
    state always goes out (a trailing event), so a subscriber never stays behind.
    """

    def __init__(self, snapshot: Callable[[str], dict | None]) -> None:
        self.snapshot = snapshot
        self.log: deque[tuple[int, str, dict]] = deque(maxlen=KEEP)
        self.listeners: list[Callable[[int, str, dict], None]] = []
        self._ids = itertools.count(1)
        self._queues: set[asyncio.Queue] = set()
        self._last_progress: dict[str, float] = {}
        self._trailing: dict[str, asyncio.TimerHandle] = {}

    def publish(self, type_: str, reg_id: str) -> None:
        registration = self.snapshot(reg_id)
        if registration is None:
            return
        if type_ != "progress":
            self._cancel_trailing(reg_id)
            self._last_progress.pop(reg_id, None)
        event = (next(self._ids), type_, registration)
        self.log.append(event)
        for queue in self._queues:
            queue.put_nowait(event)
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

    async def subscribe(self, last_id: int | None = None) -> AsyncIterator[tuple[int, str, dict]]:
        """Events after `last_id` still in the log, then live ones, until the caller stops."""
        queue: asyncio.Queue = asyncio.Queue()
        self._queues.add(queue)
        seen = last_id if last_id is not None else self.log[-1][0] if self.log else 0
        try:
            for event in list(self.log):
                if event[0] > seen:
                    seen = event[0]
                    yield event
            while True:
                event = await queue.get()
                if event[0] > seen:
                    seen = event[0]
                    yield event
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        for handle in self._trailing.values():
            handle.cancel()
        self._trailing.clear()
