"""The storage contract: what the engine reads and writes, whatever database holds it.

Like httpx's transports, one small contract with implementations the engine never tells apart:
SQLite (`store.db.sqlite`, the embedded default) today; PostgreSQL with object storage for a
fleet next. The engine and the web layer import this module, never a database driver.

- Reads of registrations and records are plain calls: an implementation answers them from a
  connection or cache of its own without waiting on a remote peer (SQLite: an indexed read
  of a local file, mostly from the page cache). Body bytes and digests are awaited.
- Writes are awaited and resolve once committed. `append` queues a chunk and returns an
  awaitable at once, so a transfer keeps a few chunks in flight; chunks are committed in the
  order they are appended.
- Domain rules stay with the engine: a write that needs one inside its transaction gets it as
  a plain function (the lifecycle's next state, who may replace a registration).
- Storage faults (`StorageFault`: a full disk, another process's lock) are pauses, not
  failures; every committed byte stays.
- For those who run the store (`/metrics`, `/readyz`): `tally`, `figures` and `readiness` are
  awaited, so an implementation may ask its database from a thread or over the network.
"""

import abc
from collections.abc import AsyncIterator, Awaitable, Iterator

from store.db.reports import Figure, Readiness, Tally
from store.db.values import (  # noqa: F401 - the contract's own words, imported from here
    BodyLost, Conflict, Elsewhere, Fields, MayReplace, NewRecord, NotFound, NotPaused, Page, Record, RequestChange,
    Step, Watcher,
)

class Storage(abc.ABC):
    """Registrations, their records and the records' body chunks."""

    # Whether `append` takes bytes beyond the contiguous ones (a body fetched over several
    # connections, `spans`); a storage without it gets each body over one connection.
    parts = True
    # How many bytes of one body a transfer may have waiting for their commit: 4 chunks (8 held
    # 10 MB more at the peak of a 4 GiB fetch into SQLite, for no speed measured beyond the
    # noise); a storage that gathers chunks into bigger writes wants more.
    in_flight_bytes = 4 * 1024 * 1024

    # -- for those who run it: /metrics and /readyz ---------------------------------
    # Defaults that say nothing rather than something untrue; each implementation overrides them.

    async def tally(self) -> Tally | None:
        """How many registrations are in each (state, result, failure reason); None: not counted."""
        return None

    async def figures(self) -> list[Figure]:
        """What the storage reports of itself: sizes, a fleet's lease claims and takeovers."""
        return []

    async def readiness(self) -> list[Readiness]:
        """Whether each part the storage depends on answers now (a read of registrations, by default)."""
        try:
            self.page(True, 1)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the storage does not answer
            return [Readiness("storage", False, f"{type(exc).__name__}: {exc}")]
        return [Readiness("storage", True)]
    def watch(self, watcher: Watcher) -> None:
        """Tell `watcher` what other nodes do (only a storage shared by several nodes does)."""

    # -- registrations ---------------------------------------------------------

    @abc.abstractmethod
    def registration(self, reg_id: str) -> dict:
        """The registration with the spec's names (`id`, `downloaded`, `result`, ...); NotFound."""

    @abc.abstractmethod
    def ids(self, active_only: bool = True) -> list[str]:
        """Registration ids in the order they were made; only those not done, unless told."""

    @abc.abstractmethod
    def page(self, active_only: bool, limit: int, after: int | None = None, newest_first: bool = False) -> Page:
        """Up to `limit` ids in the order of `ids` (or newest first), from just after the position
        `after` of an earlier page (None: from the start)."""

    @abc.abstractmethod
    async def create(self, registration: dict, records: list[NewRecord], may_replace: MayReplace) -> None:
        """Store a new registration (`id`, `title`, `icons`, `download_total`, `owner`) and its
        records; an inactive one of that id is replaced when `may_replace` allows, else Conflict."""

    @abc.abstractmethod
    async def transition(self, reg_id: str, event: str, step: Step, reason: str = "", error: str = "",
                         held_pause: str | None = None) -> str:
        """Apply a lifecycle event (`step` gives the next state); returns the new state. Ending drops
        the request headers and bodies (credentials); a failure drops the partial bodies (the
        complete ones stay, with their records, until `delete`).
        `held_pause`: the lastError of a pause the engine held in memory, written first."""

    @abc.abstractmethod
    async def requeue_active(self, step: Step) -> list[str]:
        """At start-up: every active registration takes the `requeue` event; their ids."""

    @abc.abstractmethod
    async def update(self, reg_id: str, title: str | None, icons: list | None,
                     changes: list[RequestChange]) -> None:
        """`updateUI`: a new title or icons; `changes` need a paused registration (NotPaused)."""

    @abc.abstractmethod
    async def delete(self, reg_id: str) -> int:
        """Remove a registration with its records and bodies; how many records it had. NotFound.
        It is gone for every reader (and its id free) once this returns; the bodies' bytes may go
        later, in `give_back_space`, so that no write waits long behind a big one."""

    # -- records ---------------------------------------------------------------

    @abc.abstractmethod
    def records(self, reg_id: str) -> list[Record]:
        """The registration's records, in the order of its requests."""

    @abc.abstractmethod
    def record(self, record_id: int) -> Record:
        """One record; NotFound."""

    @abc.abstractmethod
    def record_at(self, reg_id: str, index: int) -> Record | None:
        """The record at `index` of a registration, None if there is none."""

    @abc.abstractmethod
    def received(self, reg_id: str) -> int:
        """Bytes ever received for the registration (restarts included): progress between tries."""

    @abc.abstractmethod
    def download_room(self, reg_id: str, record_id: int) -> int | None:
        """Bytes `record_id` may hold before its registration exceeds downloadTotal (None: no limit)."""

    @abc.abstractmethod
    def held(self, record_id: int | None = None) -> int:
        """Bytes every record but `record_id` (None: every record) holds or will hold (what the
        quota counts)."""

    @abc.abstractmethod
    async def set_response(self, record_id: int, status: int, fields: Fields, size: int | None,
                           reusable: bool = True, selecting: str = "", count_held: bool = True) -> int:
        """Record the response's status, header fields, announced size, whether later requests
        may be served it and the request fields it varies on (`variants`), and count the
        request's body into the registration's `uploaded` (once: at its first response); returns
        `held(record_id)` as of the same commit, so two transfers never both count on the same room
        (0 when not `count_held`: there is no quota to count for)."""

    @abc.abstractmethod
    async def refresh_response(self, record_id: int, generation: int, fields: Fields) -> bool:
        """New header fields for a complete record's stored response (its origin confirmed it,
        RFC 9111 §3.2); False when that generation is no longer the record's."""

    @abc.abstractmethod
    async def restart_record(self, record_id: int) -> int:
        """Forget a record's bytes (the entity changed); its new generation."""

    @abc.abstractmethod
    async def complete_record(self, record_id: int) -> None:
        """The record's body is whole: its size is what is stored."""

    @abc.abstractmethod
    def servable(self, url: str, credential: str, fields: list[tuple[str, str]] = ()) -> int | None:
        """The record to serve for a GET of `url` by a request with these credentials (the
        vocabulary's `credential_key`) and header `fields` (`variants`): a reusable 2xx response
        stored or on its way, verified if it has integrity; None if there is none."""

    @abc.abstractmethod
    def urls(self) -> Iterator[str]:
        """Every distinct URL of the records."""

    # -- renewals: a record's next generation, stored while the current one is served

    @abc.abstractmethod
    def renewal(self, record_id: int) -> Record | None:
        """The record as its renewal under way will make it (`generation`, response, `stored`;
        not complete), None without one."""

    @abc.abstractmethod
    async def begin_renewal(self, record_id: int, status: int, fields: Fields, size: int | None,
                            selecting: str = "") -> int:
        """Start storing a new entity for a complete record, beside the one it serves; the
        generation its chunks take (`append`). One renewal a record: one under way is dropped."""

    @abc.abstractmethod
    async def complete_renewal(self, record_id: int, generation: int) -> int | None:
        """The renewal is whole: it becomes what the record serves. Returns the generation it
        replaced, whose chunks stay for its readers until `drop_generation`; None when that
        renewal is gone."""

    @abc.abstractmethod
    async def drop_renewal(self, record_id: int, generation: int) -> None:
        """Give a renewal up, with its chunks."""

    @abc.abstractmethod
    async def drop_generation(self, record_id: int, generation: int) -> None:
        """Delete the chunks of a generation the record replaced (no-op for the current one)."""

    @abc.abstractmethod
    async def forget_renewals(self) -> None:
        """At start-up: no renewal survives a restart, nor a replaced generation's chunks."""

    # -- bodies ----------------------------------------------------------------

    @abc.abstractmethod
    def append(self, record_id: int, generation: int, offset: int, pieces: list[bytes], size: int) -> Awaitable[bool]:
        """Queue `size` bytes of `pieces` at `offset` of the record's body (at the end of its stored
        bytes, or further on for a part fetched over another connection) or of its renewal (by
        `generation`); resolves once committed: False when neither is of that generation, or the
        bytes are there already. StorageFull when the disk has no room."""

    @abc.abstractmethod
    async def spans(self, record_id: int, generation: int) -> list[tuple[int, int]]:
        """The byte ranges [start, end) of the body that are stored (this generation's), in order;
        beyond the contiguous bytes there may be parts fetched over other connections."""

    @abc.abstractmethod
    def read(self, record_id: int, start: int, end: int, generation: int | None = None) -> AsyncIterator[bytes]:
        """Committed bytes of a generation of the body (None: the one the record serves) from
        `start` up to `end` (exclusive), in pieces; stops early where the committed bytes end
        (the caller waits for more and asks again)."""

    @abc.abstractmethod
    async def digest(self, record_id: int, size: int) -> bytes:
        """The SHA-256 of the first `size` bytes of a record's body."""

    @abc.abstractmethod
    async def ensure_room(self, size: int) -> None:
        """StorageFull unless `size` bytes of chunks would fit now."""

    @abc.abstractmethod
    async def give_back_space(self) -> None:
        """Remove what deleted registrations left, and return the space of deleted bodies to the
        file system (or object store), bit by bit; also what a crash left undone."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish queued writes and let go of every connection."""
