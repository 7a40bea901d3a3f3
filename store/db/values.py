"""The plain values and errors of the storage contract (`storage.Storage`): records, pages, the
changes a write takes, and what a write or a read may raise."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Fields = list[tuple[str, str]]
# (state, event, reason) -> (next state, result, failure reason); raises when the table has no edge
Step = Callable[[str, str, str], tuple[str, str, str]]
# (owner of the new registration, state, result and owner of the one it would replace) -> may it?
MayReplace = Callable[[str, str, str, str], bool]


class NotFound(LookupError):
    """No registration or record with that id."""


class Conflict(Exception):
    """A registration with that id is still active, or is not the creator's to replace."""


class NotPaused(Exception):
    """Only a paused registration takes new request headers or URLs."""


class Elsewhere(Exception):
    """Another node of a fleet runs this registration's transfer (it holds the lease), or took it
    over: this node stops its transfer and writes nothing more of it."""


class BodyLost(Exception):
    """A committed body's bytes are missing from storage, or fewer than its record says: never served as wrong bytes."""


@dataclass(frozen=True)
class Record:
    """One request of a registration and what is stored of its response."""

    id: int
    registration_id: str
    index: int
    method: str
    url: str
    credential: str
    request_headers: Fields
    request_body: bytes | None
    body_hash: str
    integrity: str | None
    status: int | None
    response_headers: Fields
    size: int | None
    stored: int
    received: int
    generation: int
    complete: bool
    revalidate: str = ""  # when its stored response is checked with the origin; "": bgfetch_revalidate's
    segments: int = 0  # the most connections its body may take; 0: the option's, bgfetch_segments
    reusable: bool = True  # whether later requests of its URL may be served it (not `no-store`)
    selecting: str = ""  # the request fields its response varies on (`variants`); "": it does not


@dataclass(frozen=True)
class Page:
    """Some registration ids in order, and the position after the last of them (None: no more)."""

    ids: list[str]
    after: int | None


@dataclass(frozen=True)
class NewRecord:
    """A request to store as a record of a new registration."""

    url: str
    method: str = "GET"
    headers: Fields = ()
    body: bytes | None = None
    integrity: str | None = None
    credential: str = ""
    body_hash: str = ""
    revalidate: str = ""
    segments: int = 0


@dataclass(frozen=True)
class RequestChange:
    """New request headers (already merged) and URL for the record at `index` of a paused registration."""

    index: int
    headers: Fields
    credential: str
    url: str | None = None


class Watcher(Protocol):
    """What a storage shared by several nodes (a fleet) tells the engine of its node; a storage
    of one node (SQLite) tells nothing."""

    def changed_elsewhere(self, reg_id: str, event: str) -> None:
        """Another node changed `reg_id` (`event`: a lifecycle event, or "create", "update",
        "delete", "bytes", ...); this node's reads show it already."""

    def unclaimed(self, reg_id: str) -> None:
        """`reg_id` is active and no node runs its transfer (its node died, or has not begun)."""

    def lost(self, reg_id: str) -> None:
        """Another node took over `reg_id`'s transfer from this one: stop it here."""

    def reloaded(self) -> None:
        """Everything was read again (changes may have been missed meanwhile)."""
