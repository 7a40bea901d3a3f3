"""Where the store lives: an SQLite file, or for a fleet a PostgreSQL URL and an S3 location for bodies.

Plain parsing (standard library only), shared by the proxy's option checks and launch, and the
store process that opens what they name:

    bgfetch_db=postgresql://bgfetch@db.example:5432/bgfetch
    bgfetch_bodies=s3://bucket/some/prefix?endpoint=http://objects.example:8333&region=eu-west-1

A password in the database URL never reaches a command line: `without_password` takes it out,
and the store gets it on its standard input with the other secrets.
"""

import urllib.parse
from dataclasses import dataclass

POSTGRES_SCHEMES = ("postgresql", "postgres")
BUCKET_CHARACTERS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


class Unopenable(Exception):
    """The database or the bucket cannot be used: missing, refused, or not answering; the message
    is one line naming it and why."""


def is_postgres(db: str) -> bool:
    """Whether `bgfetch_db` names a PostgreSQL database (a fleet) rather than an SQLite file."""
    return urllib.parse.urlsplit(db).scheme in POSTGRES_SCHEMES


def check_postgres(db: str) -> None:
    """ValueError unless `db` is a PostgreSQL URL with a host and a database name."""
    parts = urllib.parse.urlsplit(db)
    if not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"must name a host and a database, as postgresql://user@host:5432/dbname, got {redacted(db)!r}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"has a bad port: {redacted(db)!r}") from None


def without_password(db: str) -> tuple[str, str | None]:
    """The URL with its password taken out, and the password (None if it had none)."""
    parts = urllib.parse.urlsplit(db)
    if parts.password is None:
        return db, None
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}")), urllib.parse.unquote(parts.password)


def redacted(db: str) -> str:
    """The URL as it may be shown: without its password."""
    return without_password(db)[0]


@dataclass(frozen=True)
class Bodies:
    """An S3-compatible bucket and a key prefix for bodies; `endpoint` None: AWS itself."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None

    def __str__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name


def parse_bodies(url: str) -> Bodies:
    """`s3://bucket/prefix?endpoint=http://host:port&region=...`; ValueError saying what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"must be s3://bucket/prefix?endpoint=http://host:port, got {url!r}")
    bucket = parts.netloc
    if not 3 <= len(bucket) <= 63 or not set(bucket) <= BUCKET_CHARACTERS:
        raise ValueError(f"names a bucket S3 does not allow: {bucket!r} (3-63 of a-z, 0-9, '.', '-')")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"endpoint", "region"})
    if unknown:
        raise ValueError(f"has unknown parameters {', '.join(unknown)} (only endpoint and region): {url!r}")
    endpoint = query.get("endpoint", [None])[-1]
    if endpoint is not None:
        where = urllib.parse.urlsplit(endpoint)
        if where.scheme not in ("http", "https") or not where.hostname:
            raise ValueError(f"endpoint must be an http or https URL, got {endpoint!r}")
    return Bodies(bucket, parts.path.strip("/"), endpoint, query.get("region", [None])[-1])


def check_pair(db: str, bodies: str) -> None:
    """A fleet needs both: a PostgreSQL `bgfetch_db` and `bgfetch_bodies`; ValueError otherwise."""
    if bodies and not is_postgres(db):
        raise ValueError("bgfetch_bodies needs bgfetch_db=postgresql://...: bodies go to object storage only in a fleet")
    if is_postgres(db) and not bodies:
        raise ValueError("bgfetch_db=postgresql://... needs bgfetch_bodies=s3://bucket/prefix?endpoint=...:"
                         " a fleet keeps its bodies in object storage")
