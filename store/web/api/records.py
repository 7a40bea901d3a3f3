"""The API's records: `matchAll()` / `match()`, and a record's body (`responseReady`).

A body goes out as a sandboxed attachment (`attachment`), and only to a reader with the
credentials it was fetched with. Records stay whatever the result, until DELETE: after a
failure or an abort, a record that had completed keeps its body, one that had not is a 410
problem (the spec's `responseReady` rejecting with an AbortError), and one that a non-ok status
failed shows that status with an empty body (a non-ok response's body is not kept).
"""

import hmac

from store.engine import Record
from store.web import attachment, validate, views
from store.web.api.base import ApiHandler
from store.web.handler import DEFAULT_FIELDS, Problem
from store.web.serving import BodyServing
from vocabulary import credential_key

LARGEST_INDEX = 2**31


class Records(ApiHandler):
    """`GET /api/fetches/{id}/records`: `matchAll()`; with `url`, the records `match()` picks from."""

    def get(self, reg_id: str) -> None:
        self.registration(reg_id)
        url = self.get_argument("url", None)
        url = validate.url(url, "url") if url is not None else None
        found = views.matching(
            self.store.records(reg_id), url, self.get_argument("method", "GET").upper(),
            ignore_search=self.flag("ignoreSearch"), ignore_method=self.flag("ignoreMethod"),
        )
        self.send_json({"records": [views.view(reg_id, record) for record in found]})


class RecordBody(BodyServing, ApiHandler):
    """`GET /api/fetches/{id}/records/{n}/body`: a record's response body, Range supported;
    while it downloads, the bytes as they arrive."""

    SUPPORTED_METHODS = ("GET", "HEAD")
    ROUTE = "api"
    SERVES_FAILED = True

    async def get(self, reg_id: str, index: str) -> None:
        registration = self.registration(reg_id)
        record = None
        digits = index.lstrip("0") or "0"
        if len(digits) < 11 and int(digits) < LARGEST_INDEX:  # no int() of a number of any length
            record = self.store.record_at(reg_id, int(digits))
        if record is None:
            shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
            raise Problem(404, "not-found", f"Background fetch {reg_id!r} has no record {shown}.", field="index")
        if record.credential and not hmac.compare_digest(record.credential, self.credential()):
            raise Problem(
                403, "credentials-mismatch",
                f"Record {digits} of {reg_id!r} was fetched with credentials (Authorization or Cookie);"
                " send the same ones to read it.",
            )
        if registration["result"] == "failure":
            if record.status is not None and not 200 <= record.status < 300:
                self._empty_body(record)
                return
            if not record.complete:
                raise Problem(
                    410, "record-incomplete",
                    f"Record {digits} of {reg_id!r} had not completed when the fetch ended"
                    f" ({registration['failureReason']}): its bytes are gone.",
                    registration=registration,
                )
        await self.serve_record(record.id)

    head = get

    def credential(self) -> str:
        """The reader's credentials as a record keeps them; the API token is not one of them."""
        own = f"Bearer {self.token}" if self.token else None
        fields = [
            (name, value) for name, value in self.request.headers.get_all()
            if not (name.lower() == "authorization" and value == own)
        ]
        return credential_key(fields)

    def body_fields(self, record: Record) -> list[tuple[str, str]]:
        return attachment.fields(record.url, record.response_headers)

    def _empty_body(self, record: Record) -> None:
        """The answer for a record whose non-ok response failed the fetch: its header fields
        (as an attachment), no body; `records` shows its status."""
        for name in ("Content-Type", *DEFAULT_FIELDS):
            self.clear_header(name)
        for name, value in self.body_fields(record):
            self.add_header(name, value)
        self.set_header("Content-Length", "0")
        self.finish()
