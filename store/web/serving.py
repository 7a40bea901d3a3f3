"""Serving a stored body: conditional requests (304), Range and If-Range, HEAD, and the bytes as they are committed.

`BodyServing` is mixed into the routes that answer with a record's body: the proxy's flows
(as the origin sent it) and the API's body route (as a sandboxed attachment).
"""

import asyncio
import logging

from tornado.iostream import StreamClosedError

from store.engine import BodyLost, NotFound, Record, StorageFault, freshness, headers
from store.web import conditions
from store.web.handler import DEFAULT_FIELDS
from store.web.ranges import Unsatisfiable, parse_range

logger = logging.getLogger(__name__)

WHOLE = 2**62  # "to the end" for a body whose size is not known yet


class BodyServing:
    """For a `StoreHandler`: `serve_record`. Each response is counted in the store's metrics
    under the route's ROUTE and where its body came from (`metrics.SOURCES`)."""

    ROUTE = "proxy"

    # Whether a complete body of a failed (or aborted) registration is served: the API's records
    # keep them; a proxy client is never answered with one in place of its URL's origin.
    SERVES_FAILED = False

    def compute_etag(self) -> None:
        """No ETag of tornado's making: a stored body has its origin's, or none."""
        return None

    def body_fields(self, record: Record) -> list[tuple[str, str]]:
        """The header fields a stored body goes out with: here, as the origin sent them (its
        `Date` too), and the `Age` the store gives it."""
        return [*headers.replayed(record.response_headers), ("Age", str(freshness.age(record.response_headers)))]

    async def serve_record(self, record_id: int, generation: int | None = None, source: str | None = None) -> None:
        """Answer with a stored body — Range, HEAD, and read-while-writer included; with
        `generation`, that one (a renewal under way), else the one the record serves. `source`:
        where the body comes from, for the metrics (by default: `store` when it is complete,
        `transfer` while it downloads)."""
        record = self.store.version(record_id, generation) if generation is not None else None
        if record is None:
            record = await self._wait_for_response(record_id)
        if record is None:
            return
        source = source or ("store" if record.complete else "transfer")
        if conditions.not_modified(
            self.request.headers.get("If-None-Match"), self.request.headers.get("If-Modified-Since"),
            record.response_headers,
        ):
            self.store.metrics.served_to(self.ROUTE, source)
            self._not_modified(record)
            return
        size = record.size
        try:
            span = parse_range(self._range_header(record), size)
        except Unsatisfiable:
            self.problem(
                416, "range-not-satisfiable", f"The body has {size} bytes.",
                headers={"Content-Range": f"bytes */{size}"},
            )
            return
        start, end = span or (0, size)
        self.served = self.store.metrics.served_to(self.ROUTE, source)
        self._send_fields(self.body_fields(record))
        self.set_header("Accept-Ranges", "bytes")
        if span:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if end is not None:
            self.set_header("Content-Length", str(end - start))
        if self.request.method == "HEAD":
            self.finish()
            return
        with self.store.reading(record.id, record.generation):  # its bytes stay until this reader is done
            await self._stream(record, start, end)

    def _send_fields(self, fields: list[tuple[str, str]]) -> None:
        """The stored response's header fields in place of the route's own (tornado's `Date`
        too, when they carry one)."""
        for name in ("Content-Type", *DEFAULT_FIELDS):
            self.clear_header(name)
        if headers.first(fields, "date"):
            self.clear_header("Date")
        for name, value in fields:
            self.add_header(name, value)

    def _not_modified(self, record: Record) -> None:
        """304: the client holds this version; the fields of it that a 304 carries."""
        self.set_status(304)
        self._send_fields(conditions.not_modified_fields(self.body_fields(record)))
        self.finish()

    def _range_header(self, record: Record) -> str | None:
        """The client's Range, unless its If-Range names another version."""
        wanted = self.request.headers.get("If-Range")
        fields = record.response_headers
        if wanted and wanted not in (headers.first(fields, "etag"), headers.first(fields, "last-modified")):
            return None
        return self.request.headers.get("Range")

    async def _wait_for_response(self, record_id: int) -> Record | None:
        """The record once its response headers are known (with `integrity`: once its whole
        body is verified, so unchecked bytes are never served); None after a problem answer."""
        while True:
            record = self.store.record(record_id)
            registration = self.store.get(record.registration_id)
            usable = registration["result"] != "failure" or (self.SERVES_FAILED and record.complete)
            if record.status is not None and 200 <= record.status < 300:
                if usable and (record.complete or not record.integrity):
                    return record
            if registration["result"] == "failure":
                self.problem(
                    record.status if (record.status or 0) >= 400 else 502,
                    registration["failureReason"],
                    registration["lastError"] or "The background fetch failed.",
                    registration=registration,
                )
                return None
            if registration["state"] == "paused":
                self._paused(registration)
                return None
            await self.store.changed()

    def _paused(self, registration: dict) -> None:
        self.problem(
            503, "paused", headers={"Retry-After": "5"}, detail=
            f"The background fetch is paused ({registration['lastError']}); bgfetch keeps trying in the background.",
            registration=registration,
        )

    async def _stream(self, record: Record, start: int, end: int | None) -> None:
        """Write bytes as they are committed; a client that leaves costs nothing more.

        One piece is read while the one before it is still being sent, so neither the disk
        nor the socket waits for the other; at most two are buffered. At the end of the
        stored bytes of a fetch that stays paused (the origin is gone, the disk is full), the
        response ends short once no byte came for the app's `paused_read_timeout` seconds: the client resumes with Range; with no byte sent yet,
        it is the paused problem instead (503, Retry-After)."""
        generation, pos = record.generation, start
        sending, moved = None, asyncio.get_running_loop().time()
        bound = self.settings["paused_read_timeout"]
        try:
            while end is None or pos < end:
                async for data in self.store.read(record.id, pos, end if end is not None else WHOLE, generation):
                    self.write(data)
                    self.served.inc(len(data))
                    pos, moved = pos + len(data), asyncio.get_running_loop().time()
                    if sending is not None:
                        await sending
                    sending = self.flush()
                    await asyncio.sleep(0)  # a fast client must not keep the loop from the others
                if end is not None and pos >= end:
                    break  # all of it: whatever became of its generation since
                current = self.store.version(record.id, generation)
                if current is None:  # the entity changed: never mix two versions
                    if sending is None:  # nothing sent yet: say so, not a closed connection
                        return self.problem(502, "version-gone", f"{record.url}: this version of the response was"
                                            " given up before its first bytes were sent (a new one cut short, or"
                                            " replaced); ask again")
                    return self._cut(sending)
                record = current
                if record.complete and pos >= record.stored:
                    break
                registration = self.store.get(record.registration_id)
                if record.status is None or registration["result"] == "failure":
                    return self._cut(sending)  # it failed
                if pos >= record.stored:
                    stuck = asyncio.get_running_loop().time() - moved >= bound
                    if stuck and registration["state"] == "paused":
                        # what is stored, then the end; with nothing sent yet, the paused problem
                        return self._cut(sending) if sending is not None else self._paused(registration)
                    await self.store.changed()
            await self.finish()
        except (StreamClosedError, NotFound):  # the client left, or the registration was deleted
            self._cut(sending)
        except (BodyLost, StorageFault) as exc:  # never wrong bytes: a problem, or a body cut short
            logger.warning("record %d at byte %d: %s", record.id, pos, exc)
            if sending is None:
                raise  # nothing sent yet: the problem answer (problems.TABLE)
            self._cut(sending)

    def _cut(self, sending) -> None:
        """End the response short: the client sees a body that ended early, and may resume with Range."""
        self.request.connection.close()
        if sending is not None:  # it fails with the connection: nobody is left to care
            sending.add_done_callback(lambda future: future.cancelled() or future.exception())
