"""The store's SQLite schema, in one place, and how both processes open the database."""

import hashlib
import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

from store.db import faults, identity

PAGE_SIZE = 65536
BUSY_TIMEOUT_MS = 5000  # a write waits this long for another process's lock, then pauses (faults.StorageBusy)
migrations = Migrations("bgfetch")


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database: WAL, autocommit (transactions are explicit), foreign keys on.

    For writing, only a bgfetch store or a new file is opened: anything else raises
    identity.NotAStore, naming it, before a byte of it is written. A new store's first page
    carries bgfetch's application id, incremental auto-vacuum (deleted bodies give their
    space back: `tables.reclaim_space`) and 64 KiB pages; a store made before the id gets it."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = _open_store(path)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def _open_store(path: str) -> sqlite3.Connection:
    kind = identity.check(path)
    conn = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if kind == "new":
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if kind != "store":
            conn.execute(f"PRAGMA application_id={identity.APPLICATION_ID}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Debian's SQLite zeroes every freed page (SECURE_DELETE): deleting a body wrote as many
        # bytes of zeros into the WAL as it held, so a DELETE needed free space to free space.
        # FAST still zeroes what is written anyway; reclaiming moves pages over the rest.
        conn.execute("PRAGMA secure_delete=FAST")
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        fault = faults.translate(exc, path)
        if fault is not exc:
            raise fault from exc
        raise identity.refused(path, f"SQLite cannot open it ({exc})") from exc
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to date; safe to run at every start."""
    migrations.apply(sqlite_utils.Database(conn))


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE registrations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            icons TEXT NOT NULL DEFAULT '[]',
            download_total INTEGER,
            upload_total INTEGER NOT NULL DEFAULT 0,
            uploaded INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'pending',
            result TEXT NOT NULL DEFAULT '',
            failure_reason TEXT NOT NULL DEFAULT '',
            last_error TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE records (
            id INTEGER PRIMARY KEY,
            registration_id TEXT NOT NULL REFERENCES registrations(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            method TEXT NOT NULL DEFAULT 'GET',
            url TEXT NOT NULL,
            credential TEXT NOT NULL DEFAULT '',
            request_headers TEXT,
            request_body BLOB,
            integrity TEXT,
            status INTEGER,
            response_headers TEXT,
            size INTEGER,
            stored INTEGER NOT NULL DEFAULT 0,
            received INTEGER NOT NULL DEFAULT 0,
            generation INTEGER NOT NULL DEFAULT 0,
            complete INTEGER NOT NULL DEFAULT 0,
            UNIQUE (registration_id, idx)
        )"""
    )
    db.execute("CREATE INDEX records_by_url ON records (url, credential)")
    db.execute(
        """
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            record_id INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
            offset INTEGER NOT NULL,
            size INTEGER NOT NULL,
            data BLOB NOT NULL
        )"""
    )
    db.execute("CREATE UNIQUE INDEX chunks_by_offset ON chunks (record_id, offset)")


@migrations()
def m002_owners_and_body_hashes(db: sqlite_utils.Database) -> None:
    """Who made each registration, and what each record's request body was.

    `registrations.owner` is "api" for one made through the control API (or a command), else
    the key of the proxy request that made it (`ownership.request_key`); "" for one made
    before owners were kept, which no proxy request may replace. `records.body_hash` is the
    SHA-256 (hex) of the request body, "" for none; it outlives the body, which is dropped
    when the registration is done. A dropped non-empty body of an older record is "unknown",
    which no request's hash equals."""
    db.execute("ALTER TABLE registrations ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE records ADD COLUMN body_hash TEXT NOT NULL DEFAULT ''")
    kept = db.execute("SELECT id, request_body FROM records WHERE length(request_body) > 0").fetchall()
    for record_id, body in kept:
        db.execute("UPDATE records SET body_hash = ? WHERE id = ?", [hashlib.sha256(body).hexdigest(), record_id])
    db.execute(
        "UPDATE records SET body_hash = 'unknown' WHERE request_body IS NULL AND method != 'GET'"
        " AND registration_id IN (SELECT id FROM registrations WHERE upload_total > 0)"
    )


@migrations()
def m003_revalidate(db: sqlite_utils.Database) -> None:
    """When each record's stored response is checked with its origin (`bgfetch_revalidate`'s
    values, from a rule); "" for the option's."""
    db.execute("ALTER TABLE records ADD COLUMN revalidate TEXT NOT NULL DEFAULT ''")


@migrations()
def m004_active_registrations(db: sqlite_utils.Database) -> None:
    """An index of the registrations not done, so that listing them (`GET /api/fetches`, the
    requeue at start-up) reads those alone, however many finished ones the store holds."""
    db.execute("CREATE INDEX registrations_active ON registrations (state) WHERE state != 'done'")


@migrations()
def m005_generations(db: sqlite_utils.Database) -> None:
    """Two generations of a record's body side by side: the one served and its renewal (a new
    entity its origin sent on revalidation), which replaces it once complete.

    Each chunk names its generation. Every chunk stored so far belongs to its record's current
    generation (older ones were deleted as they went), so the generations start again at 0
    rather than the chunks being rewritten (their bytes would all go through the WAL)."""
    db.execute("ALTER TABLE chunks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE records SET generation = 0")
    db.execute("DROP INDEX chunks_by_offset")
    db.execute("CREATE UNIQUE INDEX chunks_by_offset ON chunks (record_id, generation, offset)")
    db.execute(
        """
        CREATE TABLE renewals (
            record_id INTEGER PRIMARY KEY REFERENCES records(id) ON DELETE CASCADE,
            generation INTEGER NOT NULL,
            status INTEGER NOT NULL,
            response_headers TEXT NOT NULL,
            size INTEGER,
            stored INTEGER NOT NULL DEFAULT 0
        )"""
    )


@migrations()
def m006_reusable(db: sqlite_utils.Database) -> None:
    """Whether a record's response may be served to later requests of its URL: 0 for one its
    origin marked `no-store` (or `private`, fetched without credentials); the requests that
    name its fetch (a header, a rule) are still served it."""
    db.execute("ALTER TABLE records ADD COLUMN reusable INTEGER NOT NULL DEFAULT 1")


@migrations()
def m007_selecting(db: sqlite_utils.Database) -> None:
    """The request fields a varying response was selected for (`variants`, JSON; "" when it
    does not vary), of a record and of a renewal."""
    db.execute("ALTER TABLE records ADD COLUMN selecting TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE renewals ADD COLUMN selecting TEXT NOT NULL DEFAULT ''")


@migrations()
def m008_deleting(db: sqlite_utils.Database) -> None:
    """A deleted registration's records and bodies wait for removal under a stand-in registration
    marked `deleting` (`registrations.delete`), removed a bounded piece at a time (`purge_some`):
    a DELETE of a 4 GiB body never holds the writer for long, and a crash leaves it to finish."""
    db.execute("ALTER TABLE registrations ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0")
