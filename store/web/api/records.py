"""The API's records: `matchAll()` / `match()`, and a record's body (`responseReady`).

A body goes out as a sandboxed attachment (`attachment`), and only to a reader with the
credentials it was fetched with.
"""

import hmac

from store.engine import Record
from store.web import attachment, validate, views
from store.web.api.base import ApiHandler
from store.web.handler import Problem
from store.web.serving import BodyServing
from vocabulary import credential_key

LARGEST_INDEX = 2**31


class Records(ApiHandler):
    """`GET /api/fetches/{id}/records`: `matchAll()`; with `url`, the records `match()` picks from."""

    def get(self, reg_id: str) -> None:
        registration = self.registration(reg_id)
        if not registration["recordsAvailable"]:
            raise Problem(409, "records-unavailable", f"Background fetch {reg_id!r} failed; its records are gone.")
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
        if not registration["recordsAvailable"]:
            raise Problem(409, "records-unavailable", f"Background fetch {reg_id!r} failed; its bodies are gone.")
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
