"""`GET /api/events`: the registrations' events as server-sent events, with replay."""

import asyncio
import json
import re

from tornado.iostream import StreamClosedError

from store.web.api.base import ApiHandler
from store.web.handler import Problem

KEEPALIVE_SECONDS = 15.0
EVENT_ID = re.compile(r"^\s*([0-9]{1,19})\s*$")  # ids are microseconds since 1970 and up


class Events(ApiHandler):
    """`GET /api/events`: a text/event-stream of progress, success, fail and abort, each with
    the registration as JSON. `Last-Event-ID` (or `?lastEventId=`) replays what was missed."""

    queue: asyncio.Queue | None = None

    async def get(self) -> None:
        self.queue = self.store.events.subscribe(self._last_event_id())
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        try:
            self.write("retry: 2000\n\n")
            await self.flush()
            while (event := await self._next()) is not None:
                self.write(event)
                await self.flush()
            self.finish()
        except StreamClosedError:
            self.request.connection.close()
        finally:
            self.store.events.unsubscribe(self.queue)

    def _last_event_id(self) -> int | None:
        """The id of the last event the client saw, from the header or the query; None: none."""
        field, last = "Last-Event-ID", self.request.headers.get("Last-Event-ID")
        if last is None:
            field, last = "lastEventId", self.get_argument("lastEventId", None)
        if last is None:
            return None
        if not (match := EVENT_ID.match(last)):
            raise Problem(400, "invalid-request", f"{field} must be an event id: 1 to 19 digits.", field=field)
        return int(match.group(1))

    async def _next(self) -> str | None:
        """The next event as SSE text, a keep-alive comment after a quiet while, None at the end."""
        try:
            event = await asyncio.wait_for(self.queue.get(), KEEPALIVE_SECONDS)
        except TimeoutError:
            return ": keep-alive\n\n"
        if event is None:
            return None
        event_id, type_, registration = event
        return f"id: {event_id}\nevent: {type_}\ndata: {json.dumps(registration)}\n\n"

    def on_connection_close(self) -> None:
        if self.queue is not None:
            self.store.events.end(self.queue)
