"""Routes the proxy redirects flows to: a new (or joined) background fetch, or a stored body."""

import json

from . import headers, records, tables
from .web import StoreHandler

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ProxiedFetch(StoreHandler):
    """A request the proxy marked as a background fetch: start or join it, then answer as
    `respond` asks — the body as it arrives, or `202 Accepted` with the registration.
    A fetch that has already succeeded is simply served from the store."""

    SUPPORTED_METHODS = METHODS

    async def get(self) -> None:
        spec = json.loads(self.request.headers[headers.SPEC])
        url = self.request.headers[headers.URL]
        if reason := self.settings["destinations"].refusal(url):  # bgfetch itself, or refused by the options
            self.problem(400, "refused-destination", f"{url} may not be fetched: {reason}", field="url")
            return
        fields = headers.upstream(self.request.headers.get_all())
        record = {
            "url": url,
            "method": "GET" if self.request.method == "HEAD" else self.request.method,
            "headers": fields,
            "body": self.request.body or None,
            "integrity": spec.get("integrity"),
            "credential": headers.credential_key(fields),
        }
        record_id = await self._join_or_start(spec, record)
        if record_id is None:
            return
        if spec.get("respond") == "accepted" and not tables.record(self.store.db, record_id)["complete"]:
            registration = self.store.get(spec["id"])
            host = self.settings["public_host"]
            self.set_header("Location", f"http://{host}{records.registration_path(spec['id'])}")
            self.send_json(registration, 202)
        else:
            await self.serve_record(record_id)

    post = put = patch = delete = options = head = get

    async def _join_or_start(self, spec: dict, record: dict) -> int | None:
        """The record to answer from: one of a live or successful registration of this id
        with the same URL and credentials, else a new registration's."""
        for _ in range(2):  # a client that starts the same id a moment earlier wins; join it
            existing = self.store.snapshot(spec["id"])
            if existing and existing["result"] != "failure":
                for row in tables.records(self.store.db, spec["id"]):
                    if (row["url"], row["credential"]) == (record["url"], record["credential"]):
                        return row["id"]
                if existing["state"] != "done":
                    break
            registration = {"id": spec["id"], "title": spec["title"], "download_total": spec.get("download_total")}
            try:
                await self.store.fetch(registration, [record])
            except tables.Conflict:
                continue
            return tables.records(self.store.db, spec["id"])[0]["id"]
        self.problem(
            409, "id-in-use",
            f"Background fetch {spec['id']!r} is active for another URL; choose another id.",
            key="id",
        )
        return None


class ProxiedStored(StoreHandler):
    """A GET or HEAD the proxy found in the store: answered from SQLite, never from the origin."""

    SUPPORTED_METHODS = ("GET", "HEAD")

    async def get(self) -> None:
        await self.serve_record(int(self.request.headers[headers.RECORD]))

    head = get
