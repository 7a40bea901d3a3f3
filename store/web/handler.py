"""The store's local web app: the base handler, problem answers, and streaming a record's body."""

import asyncio
import hmac
import json
import logging

import tornado.web
from tornado.iostream import StreamClosedError

from store.db import bodies, tables
from store.engine import headers
from store.web import forgery
from store.db.faults import StorageFault
from store.engine.service import Store

logger = logging.getLogger(__name__)

PROBLEM_BASE = "https://bgfetch.dev/problems/"


LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
PAUSED_READER_SECONDS = 10.0  # a reader at the end of a paused fetch's bytes gets a short body after this
# Every answer's, unless a route sets its own: JSON and problems are never sniffed into a page,
# run anything or sit in a frame. A stored body goes out with its own (`body_fields`).
DEFAULT_FIELDS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
}


class Problem(tornado.web.HTTPError):
    """Raise it in a handler to answer with an RFC 9457 problem (see `StoreHandler.problem`)."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict | None = None, **extra) -> None:
        super().__init__(status)
        self.kind = kind
        self.detail = detail
        self.headers = headers
        self.extra = extra


class StoreHandler(tornado.web.RequestHandler):
    """Base of every route: the shared secret on the internal port, the API token or, without
    one, the dashboard's secret on a browser's state change (`forgery`), problem+json."""

    CHECKS_FORGERY = True  # False for the proxy's flows: any client's requests, for their origin

    def initialize(self, store: Store, secret: str | None, token: str | None) -> None:
        self.store = store
        self.secret = secret
        self.token = token

    def prepare(self) -> None:
        request = self.request
        if self.secret is not None and not _same(request.headers.get(headers.SECRET), self.secret):
            raise Problem(403, "forbidden", "This port answers only the bgfetch proxy.")
        public_host = self.settings["public_host"]
        if self.secret is None and request.host_name not in (*LOCAL_HOSTS, public_host):
            raise Problem(  # a page on another site that a DNS trick points at 127.0.0.1
                421, "misdirected-request",
                f"This port answers requests for {', '.join(LOCAL_HOSTS)} or {public_host} only.",
            )
        if self.token and not _same(request.headers.get("Authorization"), f"Bearer {self.token}"):
            raise Problem(
                401, "unauthorized", "Send Authorization: Bearer <bgfetch_token>.",
                headers={"WWW-Authenticate": 'Bearer realm="bgfetch"'},
            )
        if not self.token and self.CHECKS_FORGERY and forgery.forged(
            request.method, request.headers, self.settings["page_secret"]
        ):
            raise Problem(
                403, "cross-site-request",
                f"A web browser sent this {request.method}: a state change from a browser needs the"
                f" {forgery.HEADER} header that the dashboard page holds (or set bgfetch_token and"
                " send it). Scripts and command-line clients that send no Origin need neither.",
            )

    @classmethod
    def methods(cls) -> list[str]:
        """The methods this route answers (its `Allow`)."""
        base = tornado.web.RequestHandler
        return [m for m in cls.SUPPORTED_METHODS if getattr(cls, m.lower()) is not getattr(base, m.lower())]

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        for name, value in DEFAULT_FIELDS.items():
            self.set_header(name, value)

    def body_fields(self, record) -> list[tuple[str, str]]:
        """The header fields a stored body goes out with: here, as the origin sent them."""
        return headers.replayed(headers.parse(record["response_headers"]))

    def problem(self, status: int, kind: str, detail: str, headers: dict | None = None, **extra) -> None:
        """Finish with an RFC 9457 problem+json answer (and these response `headers`)."""
        self.clear()
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_status(status)
        self.set_header("Content-Type", "application/problem+json")
        self.finish(json.dumps({
            "type": PROBLEM_BASE + kind,
            "title": kind.replace("-", " ").capitalize(),
            "status": status,
            "detail": detail,
            **extra,
        }))

    def send_json(self, value, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, StorageFault):  # a 503 with Retry-After, not a bug: one line
            logger.warning("%s %s: %s", self.request.method, self.request.path, value)
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Problem):
            self.problem(status_code, exc.kind, exc.detail, exc.headers, **exc.extra)
            return
        if isinstance(exc, StorageFault):  # the disk is full or another process holds the lock
            self.problem(
                503, "storage-unavailable", f"The store cannot write now ({exc}); try again.",
                headers={"Retry-After": "5"},
            )
            return
        allowed = None
        if status_code == 405:
            allowed = {"Allow": ", ".join(self.methods())}
        self.problem(status_code, "error", self._reason, headers=allowed)

    async def serve_record(self, record_id: int) -> None:
        """Answer with a stored body — Range, HEAD, and read-while-writer included."""
        record = await self._wait_for_response(record_id)
        if record is None:
            return
        size = record["size"]
        try:
            span = bodies.parse_range(self._range_header(record), size)
        except bodies.Unsatisfiable:
            self.problem(
                416, "range-not-satisfiable", f"The body has {size} bytes.",
                headers={"Content-Range": f"bytes */{size}"},
            )
            return
        start, end = span or (0, size)
        for name in ("Content-Type", *DEFAULT_FIELDS):
            self.clear_header(name)
        for name, value in self.body_fields(record):
            self.add_header(name, value)
        self.set_header("Accept-Ranges", "bytes")
        if span:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if end is not None:
            self.set_header("Content-Length", str(end - start))
        if self.request.method == "HEAD":
            self.finish()
            return
        await self._stream(record, start, end)

    def _range_header(self, record) -> str | None:
        """The client's Range, unless its If-Range names another version."""
        wanted = self.request.headers.get("If-Range")
        fields = headers.parse(record["response_headers"])
        if wanted and wanted not in (headers.first(fields, "etag"), headers.first(fields, "last-modified")):
            return None
        return self.request.headers.get("Range")

    async def _wait_for_response(self, record_id: int):
        """The record once its response headers are known (with `integrity`: once its whole
        body is verified, so unchecked bytes are never served); None after a problem answer."""
        while True:
            record = tables.record(self.store.db, record_id)
            registration = self.store.get(record["registration_id"])
            if record["status"] is not None and 200 <= record["status"] < 300:
                if registration["result"] != "failure" and (record["complete"] or not record["integrity"]):
                    return record
            if registration["result"] == "failure":
                self.problem(
                    record["status"] if (record["status"] or 0) >= 400 else 502,
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

    async def _stream(self, record, start: int, end: int | None) -> None:
        """Write bytes as they are committed; a client that leaves costs nothing more.

        One chunk is read from SQLite while the one before it is still being sent, so
        neither the disk nor the socket waits for the other; at most two are buffered. At the
        end of the stored bytes of a fetch that stays paused (the origin is gone, the disk is
        full) the response ends short after PAUSED_READER_SECONDS: the client resumes with Range;
        with no byte sent yet, it is the paused problem instead (503, Retry-After)."""
        record_id, generation, pos = record["id"], record["generation"], start
        sending, moved = None, asyncio.get_running_loop().time()
        try:
            while end is None or pos < end:
                for data in bodies.read(self.store.db, record_id, pos, end if end is not None else 2**62):
                    self.write(data)
                    pos, moved = pos + len(data), asyncio.get_running_loop().time()
                    if sending is not None:
                        await sending
                    sending = self.flush()
                    await asyncio.sleep(0)  # a fast client must not keep the loop from the others
                record = tables.record(self.store.db, record_id)
                if record["generation"] != generation or record["status"] is None:
                    raise StreamClosedError()  # the entity changed: never mix two versions
                if record["complete"] and pos >= record["stored"]:
                    break
                registration = self.store.get(record["registration_id"])
                if registration["result"] == "failure":
                    raise StreamClosedError()
                if pos >= record["stored"]:
                    stuck = asyncio.get_running_loop().time() - moved >= PAUSED_READER_SECONDS
                    if stuck and registration["state"] == "paused" and sending is None:
                        self._paused(registration)
                        return
                    if stuck and registration["state"] == "paused":
                        raise StreamClosedError()  # a short body: what is stored, and no hang
                    await self.store.changed()
            await self.finish()
        except (StreamClosedError, tables.NotFound):
            self.request.connection.close()
            if sending is not None:  # it fails with the connection: nobody is left to care
                sending.add_done_callback(lambda future: future.cancelled() or future.exception())


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
