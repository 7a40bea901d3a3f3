"""The control API: the Background Fetch API's calls as JSON over HTTP.

| route | spec counterpart |
|---|---|
| `POST /api/fetches`, `GET /api/fetches[?all=1]` | `fetch()`, `getIds()` |
| `GET`, `PATCH`, `DELETE /api/fetches/{id}` | `get()`, `updateUI()`, — |
| `POST /api/fetches/{id}/abort` | `abort()` |
| `GET /api/fetches/{id}/records[?url=&ignoreSearch=1&ignoreMethod=1&method=]` | `matchAll()` |
| `GET /api/fetches/{id}/records/{n}/body` | `responseReady` |
| `GET /api/events` (text/event-stream), `GET /api/openapi.json` | events, — |

State changes take `Content-Type: application/json` (a form post cannot send it) and answer
`415` otherwise; a bad value is a `400` problem whose `field` names it; a body over
`validate.MAX_BODY_BYTES` is a `413` problem, and is never held whole.
"""

import asyncio
import hmac
import json
import re

import tornado.web
from tornado.iostream import StreamClosedError

from store.db import tables
from store.engine import headers, lifecycle
from store.web import attachment, openapi, views as records, validate
from store.web.handler import Problem, StoreHandler

KEEPALIVE_SECONDS = 15.0
LARGEST_INDEX = 2**31
EVENT_ID = re.compile(r"^\s*([0-9]{1,19})\s*$")  # ids are milliseconds since 1970 and up


def too_large() -> Problem:
    return Problem(413, "content-too-large", f"The API takes JSON bodies of at most {validate.MAX_BODY_BYTES} bytes.", field="")


@tornado.web.stream_request_body
class ApiHandler(StoreHandler):
    """Helpers of the API routes: the registration or 404, the JSON body (read as it
    arrives, up to validate.MAX_BODY_BYTES), query flags."""

    def prepare(self) -> None:
        self.chunks: list[bytes] | None = []
        self.received = 0
        if _declares_too_much(self.request.headers):
            raise too_large()  # answered before the body is read; the connection then closes
        try:
            super().prepare()
        except Problem as problem:
            refusal = problem  # the except clause unbinds its own name
            # Answered now, before the body is read, the refusal would close the connection
            # (tornado cannot keep it alive with a body unread), and mitmproxy, reusing it for
            # the client's next request, would answer that one 502: refuse once it is read.
            def refuse(*_args: str) -> None:
                raise refusal

            setattr(self, self.request.method.lower(), refuse)

    def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > validate.MAX_BODY_BYTES:
            self.chunks = None  # the rest is read and dropped, and the method answers 413
        elif self.chunks is not None:
            self.chunks.append(chunk)

    def registration(self, reg_id: str) -> dict:
        try:
            return self.store.get(reg_id)
        except tables.NotFound:
            raise missing(reg_id) from None

    def json_body(self, optional: bool = False) -> object:
        """The request's JSON body (an empty one is {} when `optional`)."""
        if self.chunks is None:
            raise too_large()
        media_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise Problem(415, "unsupported-media-type", "Send the body as Content-Type: application/json.")
        raw = b"".join(self.chunks)
        if optional and not raw.strip():
            return {}
        try:
            return validate.json_document(raw)
        except validate.Unreadable as exc:
            raise Problem(400, "invalid-json", str(exc), field="") from None

    def refused(self, url: str) -> str | None:
        """Why a transfer may not fetch `url` (bgfetch itself, or an address the options refuse)."""
        return self.settings["destinations"].refusal(url)

    def flag(self, name: str) -> bool:
        value = self.get_argument(name, "0")
        if value not in ("0", "1"):
            raise Problem(400, "invalid-request", f"{name} must be 0 or 1.", field=name)
        return value == "1"


def missing(reg_id: str) -> Problem:
    return Problem(404, "not-found", f"No background fetch with id {reg_id!r}.")


def invalid(exc: validate.Invalid) -> Problem:
    return Problem(400, "invalid-request", str(exc), field=exc.field)


class Fetches(ApiHandler):
    """`POST /api/fetches`: `fetch()`; `GET /api/fetches`: `getIds()` (`?all=1`: every one)."""

    SUPPORTED_METHODS = ("GET", "POST")

    def get(self) -> None:
        self.send_json({"ids": self.store.ids(everything=self.flag("all"))})

    async def post(self) -> None:
        try:
            registration, requests = validate.fetch_body(self.json_body(), self.refused)
        except validate.Invalid as exc:
            raise invalid(exc) from None
        try:
            created = await self.store.fetch(registration, requests)
        except tables.Conflict:
            raise Problem(
                409, "id-in-use", f"Background fetch {registration['id']!r} is still active; abort it or choose another id.",
                field="id",
            ) from None
        self.set_header("Location", records.registration_path(created["id"]))
        self.send_json(created, 201)


class Fetch(ApiHandler):
    """`GET`: `get()`; `PATCH`: `updateUI()` and, when paused, new request headers or URLs;
    `DELETE`: the registration, its records and bodies (an active one is aborted first)."""

    SUPPORTED_METHODS = ("GET", "PATCH", "DELETE")

    def get(self, reg_id: str) -> None:
        self.send_json(self.registration(reg_id))

    async def patch(self, reg_id: str) -> None:
        count = self.registration(reg_id)["records"]
        try:
            title, icons, changes = validate.update_body(self.json_body(), count, self.refused)
        except validate.Invalid as exc:
            raise invalid(exc) from None
        try:
            self.send_json(await self.store.update(reg_id, title, icons, changes))
        except tables.NotPaused as exc:
            raise Problem(409, "not-paused", f"New headers or URLs need a paused fetch: {exc}.", field="records") from None
        except tables.NotFound:
            raise missing(reg_id) from None  # deleted meanwhile

    async def delete(self, reg_id: str) -> None:
        self.registration(reg_id)
        try:
            await self.store.delete(reg_id)
        except tables.NotFound:
            pass  # deleted meanwhile: gone all the same
        self.set_status(204)
        self.finish()


class Abort(ApiHandler):
    """`POST /api/fetches/{id}/abort` (body `{}` or none): `abort()`."""

    SUPPORTED_METHODS = ("POST",)

    async def post(self, reg_id: str) -> None:
        body = self.json_body(optional=True)
        if body != {}:
            raise Problem(400, "invalid-request", "abort takes an empty JSON object.", field="")
        try:
            self.send_json(await self.store.abort(reg_id))
        except lifecycle.LifecycleError:
            done = self.registration(reg_id)
            raise Problem(
                409, "not-active", f"Background fetch {reg_id!r} has already ended ({done['result']}).",
                registration=done,
            ) from None
        except tables.NotFound:
            raise missing(reg_id) from None


class Records(ApiHandler):
    """`GET /api/fetches/{id}/records`: `matchAll()`; with `url`, the records `match()` picks from."""

    def get(self, reg_id: str) -> None:
        registration = self.registration(reg_id)
        if not registration["recordsAvailable"]:
            raise Problem(409, "records-unavailable", f"Background fetch {reg_id!r} failed; its records are gone.")
        url = self.get_argument("url", None)
        try:
            url = validate.url(url, "url") if url is not None else None
        except validate.Invalid as exc:
            raise invalid(exc) from None
        found = records.matching(
            tables.records(self.store.db, reg_id), url, self.get_argument("method", "GET").upper(),
            ignore_search=self.flag("ignoreSearch"), ignore_method=self.flag("ignoreMethod"),
        )
        self.send_json({"records": [records.view(reg_id, row) for row in found]})


class RecordBody(ApiHandler):
    """`GET /api/fetches/{id}/records/{n}/body`: a record's response body, Range supported;
    while it downloads, the bytes as they arrive. It goes out as a sandboxed attachment
    (`attachment`), and only to a reader with the credentials it was fetched with."""

    SUPPORTED_METHODS = ("GET", "HEAD")

    async def get(self, reg_id: str, index: str) -> None:
        registration = self.registration(reg_id)
        row = None
        digits = index.lstrip("0") or "0"
        if len(digits) < 11 and int(digits) < LARGEST_INDEX:  # no int() of a number of any length
            row = self.store.db.execute(
                "SELECT id, credential FROM records WHERE registration_id = ? AND idx = ?", [reg_id, int(digits)]
            ).fetchone()
        if row is None:
            shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
            raise Problem(404, "not-found", f"Background fetch {reg_id!r} has no record {shown}.", field="index")
        if row["credential"] and not hmac.compare_digest(row["credential"], self.credential()):
            raise Problem(
                403, "credentials-mismatch",
                f"Record {digits} of {reg_id!r} was fetched with credentials (Authorization or Cookie);"
                " send the same ones to read it.",
            )
        if not registration["recordsAvailable"]:
            raise Problem(409, "records-unavailable", f"Background fetch {reg_id!r} failed; its bodies are gone.")
        try:
            await self.serve_record(row["id"])
        except tables.NotFound:
            raise missing(reg_id) from None  # deleted meanwhile

    head = get

    def credential(self) -> str:
        """The reader's credentials as a record keeps them; the API token is not one of them."""
        own = f"Bearer {self.token}" if self.token else None
        fields = [
            (name, value) for name, value in self.request.headers.get_all()
            if not (name.lower() == "authorization" and value == own)
        ]
        return headers.credential_key(fields)

    def body_fields(self, record) -> list[tuple[str, str]]:
        return attachment.fields(record["url"], headers.parse(record["response_headers"]))


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


class OpenApi(ApiHandler):
    """`GET /api/openapi.json`: the OpenAPI 3.1 description of these routes."""

    def get(self) -> None:
        self.send_json(openapi.document(self.settings["public_host"]))


class NoRoute(ApiHandler):
    """Any other path: a 404 problem."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def get(self) -> None:
        raise Problem(404, "not-found", f"No such path: {self.request.path}.")

    head = post = put = patch = delete = options = get


ROUTES = [
    (r"/api/fetches", Fetches),
    (r"/api/fetches/([^/]+)", Fetch),
    (r"/api/fetches/([^/]+)/abort", Abort),
    (r"/api/fetches/([^/]+)/records", Records),
    (r"/api/fetches/([^/]+)/records/([0-9]+)/body", RecordBody),
    (r"/api/events", Events),
    (r"/api/openapi.json", OpenApi),
]


def _declares_too_much(headers) -> bool:
    """Whether the request's Content-Length is over validate.MAX_BODY_BYTES (tornado refuses a malformed one)."""
    value = headers.get("Content-Length", "").split(",")[0].strip()
    return value.isascii() and value.isdigit() and (len(value) > 9 or int(value) > validate.MAX_BODY_BYTES)
