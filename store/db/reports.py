"""What a storage reports of itself to those who run the store: its registrations' tally and its
figures for /metrics, and whether each of its parts answers, for /readyz (`Storage.tally`,
`Storage.figures`, `Storage.readiness`)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One value a storage reports of itself for the store's `/metrics` (`Storage.figures`)."""

    name: str  # after `bgfetch_`, as Prometheus names it: `wal_bytes`, `lease_claims_total`
    help: str
    value: float
    counter: bool = False  # a count since the process started (its name ends in `_total`); else a gauge
    labels: tuple[tuple[str, str], ...] = ()  # a few words of a fixed list, never a URL or an id


@dataclass(frozen=True)
class Readiness:
    """Whether one part of a storage answers (`Storage.readiness`): the SQLite database; for a
    fleet, PostgreSQL and the object store."""

    part: str
    ready: bool
    detail: str = ""


# (state, result, failure reason) -> how many registrations are so
Tally = dict[tuple[str, str, str], int]
