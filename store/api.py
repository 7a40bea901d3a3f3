"""The control API: the Background Fetch API's calls as JSON over HTTP."""

from . import tables
from .web import StoreHandler


class Fetches(StoreHandler):
    """`GET /api/fetches`: the ids of active registrations (`?all=1`: all)."""

    def get(self) -> None:
        self.send_json({"ids": self.store.ids(everything=self.get_argument("all", "0") == "1")})


class Fetch(StoreHandler):
    """`GET /api/fetches/{id}`: one registration."""

    def get(self, reg_id: str) -> None:
        try:
            self.send_json(self.store.get(reg_id))
        except tables.NotFound:
            self.problem(404, "not-found", f"No background fetch with id {reg_id!r}.")


class RecordBody(StoreHandler):
    """`GET /api/fetches/{id}/records/{n}/body`: a record's response body, Range supported."""

    SUPPORTED_METHODS = ("GET", "HEAD")

    async def get(self, reg_id: str, index: str) -> None:
        row = self.store.db.execute(
            "SELECT id FROM records WHERE registration_id = ? AND idx = ?", [reg_id, int(index)]
        ).fetchone()
        if row is None:
            self.problem(404, "not-found", f"Background fetch {reg_id!r} has no record {index}.")
            return
        await self.serve_record(row["id"])

    head = get


ROUTES = [
    (r"/api/fetches", Fetches),
    (r"/api/fetches/([^/]+)", Fetch),
    (r"/api/fetches/([^/]+)/records/(\d+)/body", RecordBody),
]
