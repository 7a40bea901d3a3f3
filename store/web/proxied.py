"""Routes the proxy redirects flows to: a new (or joined) background fetch, or a stored body.

The proxy adds the flow's details in headers (`protocol.SPEC`, `URL`, `RECORD`); one that is
missing or malformed is a 400 problem, never a crash. A flow joins a registration only when
one of its records is the same request (`ownership`), and starts one under a taken id only
in place of a failed one that it made itself: otherwise a 409 problem names the id.
"""

import json

from store.engine import Conflict, NotFound, headers, lifecycle, ownership
from store.proxyside import protocol
from store.web import views
from store.web.handler import Problem, StoreHandler
from store.web.stored import StoredServing
from vocabulary import check_spec, credential_key

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
LARGEST_RECORD = 2**63 - 1


def handed_over(value: str | None, name: str) -> str:
    """A header the proxy must have added; a 400 problem without it."""
    if value is None:
        raise Problem(400, "bad-handover", f"{name} is missing: this route takes flows from the bgfetch proxy only.")
    return value


def parse_spec(text: str) -> dict:
    """The fetch spec the proxy sent (rules.FetchSpec as JSON), checked by the shared vocabulary;
    a 400 problem if it is not one."""
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise Problem(400, "bad-handover", f"{protocol.SPEC} is not JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise Problem(400, "bad-handover", f"{protocol.SPEC} must be a JSON object.")
    try:
        check_spec(spec)
    except ValueError as exc:
        raise Problem(400, "bad-handover", f"{protocol.SPEC}: {exc}") from None
    return spec


class ProxiedFetch(StoredServing, StoreHandler):
    """A request the proxy marked as a background fetch: start or join it, then answer as
    `respond` asks — the body as it arrives, or `202 Accepted` with the registration.
    A fetch that has already succeeded is served from the store, checked for freshness first."""

    SUPPORTED_METHODS = METHODS
    CHECKS_FORGERY = False

    async def get(self) -> None:
        spec = parse_spec(handed_over(self.request.headers.get(protocol.SPEC), protocol.SPEC))
        url = handed_over(self.request.headers.get(protocol.URL), protocol.URL)
        if reason := self.settings["destinations"].refusal(url):  # bgfetch itself, or refused by the options
            self.problem(400, "refused-destination", f"{url} may not be fetched: {reason}", field="url")
            return
        fields = headers.upstream(self.request.headers.get_all())
        record = {
            "url": url,
            "method": "GET" if self.request.method == "HEAD" else self.request.method,
            "headers": fields,
            "body": self.request.body or None,
            "integrity": spec["integrity"],
            "credential": credential_key(fields),
            "revalidate": spec["revalidate"],
            "segments": spec["segments"],
        }
        record_id, answer = await self._join_or_start(spec, record)
        self.set_header(protocol.ANSWER, protocol.answer_value(answer, spec["id"]))
        if spec["respond"] == "accepted" and not self.store.record(record_id).complete:
            registration = self.store.get(spec["id"])
            host = self.settings["public_host"]
            self.set_header("Location", f"http://{host}{views.registration_path(spec['id'])}")
            self.send_json(registration, 202)
        else:
            await self.serve_stored(record_id)

    post = put = patch = delete = options = head = get

    async def _join_or_start(self, spec: dict, record: dict) -> tuple[int, str]:
        """The record to answer from: this same request's in a live or successful registration
        of this id, else a new registration's (owned by this request); and how that answers the
        request (`protocol.ANSWERS`). 409 otherwise."""
        key = ownership.request_key(record["method"], record["url"], record["credential"], ownership.body_hash(record["body"]))
        for _ in range(2):  # a client that starts the same id a moment earlier wins; join it
            existing = self.store.snapshot(spec["id"])
            if existing and existing["result"] != "failure":
                for row in self.store.records(spec["id"]):
                    if ownership.record_key(row) == key:
                        return row.id, "stored" if existing["result"] == "success" else "joined"
            registration = {
                "id": spec["id"], "title": spec["title"], "download_total": spec["download_total"], "owner": key,
            }
            try:
                await self.store.fetch(registration, [record])
            except Conflict:
                continue
            return self.store.records(spec["id"])[0].id, "background"
        active = (self.store.snapshot(spec["id"]) or {}).get("state") in lifecycle.ACTIVE
        raise Problem(
            409, "id-in-use",
            f"Background fetch {spec['id']!r} "
            + ("is active for another request" if active else "was made by another request or through the API")
            + " (another URL, method, request body or credentials); choose another id.",
            key="id", id=spec["id"],
        )


class ProxiedStored(StoredServing, StoreHandler):
    """A GET or HEAD the proxy found in the store: answered from SQLite; the origin is asked at
    most to confirm a stale response (`StoredServing`)."""

    SUPPORTED_METHODS = ("GET", "HEAD")
    CHECKS_FORGERY = False

    async def get(self) -> None:
        value = handed_over(self.request.headers.get(protocol.RECORD), protocol.RECORD)
        if not (value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= LARGEST_RECORD):
            raise Problem(400, "bad-handover", f"{protocol.RECORD} must be a record number.")
        try:
            record = self.store.record(int(value))
            answer = "stored" if record.complete else "joined"  # complete, or read while it is written
            self.set_header(protocol.ANSWER, protocol.answer_value(answer, record.registration_id))
            await self.serve_stored(record.id)
        except NotFound:
            raise Problem(404, "not-found", "That record is gone (deleted meanwhile).") from None

    head = get
