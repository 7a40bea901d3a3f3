"""A node's copy in memory of the fleet's registrations and records: the contract's plain reads, without the network.

The storage contract's reads are plain calls that never wait on a remote peer; a fleet node
answers them from this copy. It is loaded whole at start (and again after the notifications
could have been missed), takes the rows this node's own writes return, and the rows other
nodes' notifications make it read. Every row carries its `version` (a trigger makes it grow
with every update): an older row never replaces a newer one, whatever order they arrive in.
Body bytes are not here: only what the records say of them.
"""

from dataclasses import replace

from store.db import records as record_rows
from store.db import registrations as registration_rows
from store.db import variants
from store.db.storage import NotFound, Page, Record


class Mirror:
    """Registrations (their rows, by id) and records (as `Record`s, by id and by registration)."""

    def __init__(self) -> None:
        self.registrations: dict[str, dict] = {}
        self.records: dict[int, Record] = {}
        self.by_registration: dict[str, dict[int, int]] = {}  # registration id -> index -> record id
        self.versions: dict[int, int] = {}  # record id -> version
        self.by_url: dict[str, set[int]] = {}  # URL -> ids of the records that have it
        self.renewals: dict[int, dict] = {}  # record id -> its renewal's row
        self.gone: dict[str, int] = {}  # registration id -> the seq it had when deleted: older rows stay out
        self._loading: set[str] | None = None  # registrations put while a load reads the database

    def loading(self) -> None:
        """A load starts reading the database: what is put from now on is newer than it may know."""
        self._loading = set()

    def load(self, registrations: list[dict], records: list[dict]) -> None:
        """Take every row read (in one transaction, begun after `loading`), and drop the
        registrations it no longer has, unless put since the load began."""
        put, self._loading = self._loading or set(), None
        for row in registrations:
            self.put_registration(row)
        for row in records:
            self.put_record(row)
        there = {row["id"] for row in registrations} | put
        for reg_id in [reg_id for reg_id in self.registrations if reg_id not in there]:
            self.drop_registration(reg_id)

    # -- taking rows -----------------------------------------------------------

    def put_registration(self, row: dict) -> bool:
        """Take a registration's row unless the copy holds a newer one; whether it was taken.
        A row of a new registration (another `seq`) replaces an old one of the same id."""
        known = self.registrations.get(row["id"])
        if row["seq"] <= self.gone.get(row["id"], 0):
            return False
        if known is not None and known["seq"] == row["seq"] and known["version"] > row["version"]:
            return False
        if known is not None and known["seq"] != row["seq"]:
            if known["seq"] > row["seq"]:
                return False
            self.drop_registration(row["id"])
        self.registrations[row["id"]] = row
        self.by_registration.setdefault(row["id"], {})
        if self._loading is not None:
            self._loading.add(row["id"])
        return True

    def put_record(self, row: dict) -> bool:
        """Take a record's row unless the copy holds a newer one (or its registration is gone)."""
        owner = self.registrations.get(row["registration_id"])
        if owner is None or owner["seq"] != row["registration_seq"]:
            return False
        if self.versions.get(row["id"], -1) > row["version"]:
            return False
        record = record_rows.as_record(row)
        if (known := self.records.get(record.id)) is not None and known.url != record.url:
            self.by_url[known.url].discard(record.id)
        self.records[record.id] = record
        self.versions[record.id] = row["version"]
        self.by_registration[record.registration_id][record.index] = record.id
        self.by_url.setdefault(record.url, set()).add(record.id)
        if "renewal" in row:  # rows read with their renewal (writes.RECORDS_SQL)
            if row["renewal"]:
                self.renewals[record.id] = row["renewal"]
            else:
                self.renewals.pop(record.id, None)
        return True

    def put_bytes(self, record_id: int, version: int, stored: int, received: int) -> bool:
        """A record's bytes grew (a chunk was committed): only its counts changed."""
        record = self.records.get(record_id)
        if record is None or self.versions[record_id] >= version:
            return False
        self.records[record_id] = replace(record, stored=stored, received=received)
        self.versions[record_id] = version
        return True

    def drop_registration(self, reg_id: str) -> None:
        """Forget a registration (deleted, or replaced by a new one of its id) with its records."""
        row = self.registrations.pop(reg_id, None)
        if row is not None:
            self.gone[reg_id] = max(self.gone.get(reg_id, 0), row["seq"])
        for record_id in self.by_registration.pop(reg_id, {}).values():
            record = self.records.pop(record_id)
            self.versions.pop(record_id, None)
            self.renewals.pop(record_id, None)
            self.by_url[record.url].discard(record_id)
            if not self.by_url[record.url]:
                del self.by_url[record.url]

    # -- the contract's reads ----------------------------------------------------

    def registration(self, reg_id: str) -> dict:
        row = self.registrations.get(reg_id)
        if row is None:
            raise NotFound(reg_id)
        held = self.records_of(reg_id)
        return registration_rows.view(row, len(held), sum(record.stored for record in held))

    def ids(self, active_only: bool = True) -> list[str]:
        return [row["id"] for row in self._in_order(active_only)]

    def page(self, active_only: bool, limit: int, after: int | None, newest_first: bool) -> Page:
        """Up to `limit` ids by `seq` (newest first when told), after the seq `after`."""
        rows = self._in_order(active_only)
        if newest_first:
            rows.reverse()
        if after is not None:
            rows = [row for row in rows if (row["seq"] < after if newest_first else row["seq"] > after)]
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([row["id"] for row in rows], rows[-1]["seq"] if more else None)

    def _in_order(self, active_only: bool) -> list[dict]:
        rows = sorted(self.registrations.values(), key=lambda row: row["seq"])
        return [row for row in rows if not active_only or row["state"] != "done"]

    def records_of(self, reg_id: str) -> list[Record]:
        indexes = self.by_registration.get(reg_id, {})
        return [self.records[indexes[index]] for index in sorted(indexes)]

    def record(self, record_id: int) -> Record:
        try:
            return self.records[record_id]
        except KeyError:
            raise NotFound(record_id) from None

    def renewal(self, record_id: int) -> Record | None:
        """The record as its renewal under way will make it, None without one."""
        row = self.renewals.get(record_id)
        if row is None or record_id not in self.records:
            return None
        return replace(self.records[record_id], generation=row["generation"], status=row["status"],
                       response_headers=record_rows.header_fields(row["response_headers"]), size=row["size"],
                       stored=row["stored"], complete=False, selecting=row["selecting"])

    def record_at(self, reg_id: str, index: int) -> Record | None:
        record_id = self.by_registration.get(reg_id, {}).get(index)
        return self.records[record_id] if record_id is not None else None

    def received(self, reg_id: str) -> int:
        return sum(record.received for record in self.records_of(reg_id))

    def download_room(self, reg_id: str, record_id: int) -> int | None:
        row = self.registrations.get(reg_id)
        if row is None or row["download_total"] is None:
            return None
        return row["download_total"] - sum(r.stored for r in self.records_of(reg_id) if r.id != record_id)

    def held(self, record_id: int | None = None) -> int:
        """Bytes every record but `record_id` (None: every record) holds or will hold, fleet-wide,
        as this copy knows them."""
        return sum(
            max(record.stored, record.size or 0) for record in self.records.values()
            if record.id != record_id and self.registrations[record.registration_id]["result"] != "failure"
        )

    def servable(self, url: str, credential: str, fields: list[tuple[str, str]] = ()) -> int | None:
        """The record to serve for a GET of `url` with these credentials and header fields, as
        `lookups.servable_record` picks it."""
        best, best_key = None, None
        for record in map(self.records.__getitem__, self.by_url.get(url, ())):
            if record.credential != credential or record.method != "GET":
                continue
            row = self.registrations[record.registration_id]
            if row["result"] == "failure" or (record.integrity and not record.complete):
                continue
            ok = record.status is not None and 200 <= record.status <= 299 and record.reusable
            if not ok and not (record.status is None and row["state"] == "fetching"):
                continue
            if not variants.matches(record.selecting, fields):
                continue
            key = (record.complete, record.status is not None, record.id)
            if best_key is None or key > best_key:
                best, best_key = record.id, key
        return best
