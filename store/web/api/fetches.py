"""The API's registrations: `fetch()`, `getIds()`, `get()`, `updateUI()`, `abort()` and DELETE.

Handlers let the engine's and the validator's exceptions through: `problems.TABLE` answers them.
"""

from store.engine import LifecycleError, NotFound
from store.web import paging, validate, views
from store.web.api.base import ApiHandler
from store.web.handler import Problem


class Fetches(ApiHandler):
    """`POST /api/fetches`: `fetch()`; `GET /api/fetches`: `getIds()` (`?all=1`: every one), a
    page at a time (`paging`); `?details=1` also gives each registration, as `get()` shows it."""

    SUPPORTED_METHODS = ("GET", "POST")

    def get(self) -> None:
        asked = paging.asked(lambda name: self.get_argument(name, None))
        page = self.store.page(not self.flag("all"), asked.limit, asked.after, asked.newest_first)
        answer: dict = {"ids": page.ids}
        if self.flag("details"):
            answer["registrations"] = [r for r in map(self.store.snapshot, page.ids) if r is not None]
        if page.after is not None:
            answer["next"] = paging.cursor(asked.newest_first, page.after)
        self.send_json(answer)

    async def post(self) -> None:
        registration, requests = validate.fetch_body(self.json_body(), self.refused)
        created = await self.store.fetch(registration, requests)
        self.set_header("Location", views.registration_path(created["id"]))
        self.send_json(created, 201)


class Fetch(ApiHandler):
    """`GET`: `get()`; `PATCH`: `updateUI()` and, when paused, new request headers or URLs;
    `DELETE`: the registration, its records and bodies (an active one is aborted first)."""

    SUPPORTED_METHODS = ("GET", "PATCH", "DELETE")

    def get(self, reg_id: str) -> None:
        self.send_json(self.registration(reg_id))

    async def patch(self, reg_id: str) -> None:
        count = self.registration(reg_id)["records"]
        title, icons, changes = validate.update_body(self.json_body(), count, self.refused)
        self.send_json(await self.store.update(reg_id, title, icons, changes))

    async def delete(self, reg_id: str) -> None:
        self.registration(reg_id)
        try:
            await self.store.delete(reg_id)
        except NotFound:
            pass  # deleted meanwhile: gone all the same
        self.set_status(204)
        self.finish()


class Abort(ApiHandler):
    """`POST /api/fetches/{id}/abort` (body `{}` or none): `abort()`; 409 when it has ended."""

    SUPPORTED_METHODS = ("POST",)

    async def post(self, reg_id: str) -> None:
        if self.json_body(optional=True) != {}:
            raise Problem(400, "invalid-request", "abort takes an empty JSON object.", field="")
        try:
            self.send_json(await self.store.abort(reg_id))
        except LifecycleError:
            done = self.registration(reg_id)
            raise Problem(
                409, "not-active", f"Background fetch {reg_id!r} has already ended ({done['result']}).",
                registration=done,
            ) from None
