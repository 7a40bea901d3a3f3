"""The one table from exceptions to RFC 9457 problems: what a handler raises is what the client reads.

A handler raises `Problem` for an answer of its own, or lets the engine's and the validator's
exceptions through: `problem_for` maps each to its status, type, detail and `field`.
"""

from dataclasses import dataclass

import tornado.web

from store.engine import BodyLost, Conflict, NotFound, NotPaused, QuotaExceeded, StorageFault
from store.web.validate import Invalid, Unreadable

PROBLEM_BASE = "https://bgfetch.dev/problems/"


class Problem(tornado.web.HTTPError):
    """Raise it in a handler to answer with an RFC 9457 problem (see `StoreHandler.problem`)."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict | None = None, **extra) -> None:
        super().__init__(status)
        self.kind = kind
        self.detail = detail
        self.headers = headers
        self.extra = extra


@dataclass(frozen=True)
class Mapping:
    status: int
    kind: str
    detail: str  # formatted with the exception as `exc` and its first argument as `arg`
    field: str | None = None  # None: the problem names no field; "*": the exception's own `field`
    headers: tuple[tuple[str, str], ...] = ()


# The most specific class first: a subclass must come before its base.
TABLE: tuple[tuple[type[Exception], Mapping], ...] = (
    (Unreadable, Mapping(400, "invalid-json", "{exc}", field="*")),
    (Invalid, Mapping(400, "invalid-request", "{exc}", field="*")),
    (NotFound, Mapping(404, "not-found", "No background fetch with id {arg!r}.")),
    (Conflict, Mapping(409, "id-in-use", "Background fetch {arg!r} is still active; abort it or choose another id.", "id")),
    (NotPaused, Mapping(409, "not-paused", "New headers or URLs need a paused fetch: {exc}.", "records")),
    (QuotaExceeded, Mapping(409, "quota-exceeded", "{exc}.", "downloadTotal")),
    (BodyLost, Mapping(502, "body-lost", "The stored body cannot be read whole ({exc}); it is not served.")),
    (StorageFault, Mapping(503, "storage-unavailable", "The store cannot write now ({exc}); try again.",
                           headers=(("Retry-After", "5"),))),
)


def problem_for(exc: BaseException) -> Problem | None:
    """The problem answer for `exc`, None for an exception no table row maps (a bug: 500)."""
    if isinstance(exc, Problem):
        return exc
    for kind, mapping in TABLE:
        if isinstance(exc, kind):
            arg = exc.args[0] if exc.args else ""
            extra = {}
            if mapping.field is not None:
                extra["field"] = getattr(exc, "field", "") if mapping.field == "*" else mapping.field
            detail = mapping.detail.format(exc=exc, arg=arg)
            return Problem(mapping.status, mapping.kind, detail, dict(mapping.headers) or None, **extra)
    return None
