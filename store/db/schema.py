"""The store's SQLite schema, in one place, and how both processes open the database.

A store is two files. The database (`bgfetch_db`: registrations, records) is in WAL mode: readers
in both processes never wait for the writer. The chunks of bodies are in `<db>-bodies` (attached
as `bodies`) in rollback-journal mode, where the pages a transaction appends are written once, in
place; only the few it changes go into the journal first. Through a WAL every byte was written
twice (measured: 1 GiB of 1 MiB chunks went into a WAL at 1,516 MiB/s plus 1.7 s of checkpoint,
2.04x written per /proc/self/io; into the bodies file at 2,199 MiB/s, 1.03x). The bodies file runs
without fsync (576 MiB/s with it): a killed process loses nothing the kernel has, and the order of
the two files' commits is made good at start-up (`chunks.reconcile`); a power cut may cost what
the kernel had not written. A body read that meets the writer's commit (an exclusive lock of a
few ms per 16 MiB) retries on the event loop, never waiting inside SQLite (`sqlite.py`).
"""

import hashlib
import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

from store.db import faults, identity

# Bodies in big pages (a chunk of 1 MiB is 16 of them, read back 2-5 GB/s); the database in
# small ones: a commit writes each page it changes into the WAL, and 64 KiB pages made every
# 1 MiB chunk's commit write about 128 KiB of WAL for the one row that counts it.
PAGE_SIZE = 65536
DATABASE_PAGE_SIZE = 4096
BUSY_TIMEOUT_MS = 5000  # a write waits this long for another process's lock, then pauses (faults.StorageBusy)
BODIES = "bodies"  # the schema name of the attached bodies file
migrations = Migrations("bgfetch")


def bodies_path(path: str) -> str:
    """The file beside the database that holds the bodies' chunks."""
    return f"{path}-{BODIES}"


def connect(path: str, *, readonly: bool = False, bodies: bool = True) -> sqlite3.Connection:
    """Open the database (WAL, autocommit: transactions are explicit, foreign keys on) with the
    bodies file attached as `bodies` unless told (the proxy's lookup reads no body).

    For writing, only a bgfetch store or a new file is opened, each of the two: anything else
    raises identity.NotAStore, naming it, before a byte of it is written. A new file's first
    page carries bgfetch's application id, incremental auto-vacuum (deleted bodies give their
    space back: `chunks.reclaim_space`) and its page size; a store made before the id gets it."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        if bodies:
            conn.execute(f"ATTACH DATABASE ? AS {BODIES}", [f"file:{bodies_path(path)}?mode=ro"])
    else:
        conn = _open_store(path, bodies)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


def probe(path: str, seconds: float) -> str | None:
    """Whether the database answers now: a read, and its write lock taken (and given back at
    once) within `seconds`; None when it does, else what stops it (`faults`' words). On a
    connection of its own, from any thread."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=seconds)
    except sqlite3.Error as exc:
        return str(faults.translate(exc, path))
    try:
        conn.execute("SELECT count(*) FROM registrations WHERE rowid = 1").fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return str(faults.translate(exc, path))
    finally:
        conn.close()
    return None


def _prepare(conn: sqlite3.Connection, kind: str, schema: str) -> None:
    """A new file's page size, vacuum mode and id, before its first table; an old store's id."""
    if kind == "new":
        conn.execute(f"PRAGMA {schema}.page_size={PAGE_SIZE if schema == BODIES else DATABASE_PAGE_SIZE}")
        conn.execute(f"PRAGMA {schema}.auto_vacuum=INCREMENTAL")
    if kind != "store":
        conn.execute(f"PRAGMA {schema}.application_id={identity.APPLICATION_ID}")


def _open_store(path: str, bodies: bool) -> sqlite3.Connection:
    kind = identity.check(path)
    bodies_kind = identity.check(bodies_path(path)) if bodies else None  # both refused before either is written
    conn = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _prepare(conn, kind, "main")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Debian's SQLite zeroes every freed page (SECURE_DELETE): deleting a body wrote as many
        # bytes of zeros into the WAL as it held, so a DELETE needed free space to free space.
        # FAST still zeroes what is written anyway; reclaiming moves pages over the rest.
        conn.execute("PRAGMA secure_delete=FAST")
        if bodies:
            conn.execute(f"ATTACH DATABASE ? AS {BODIES}", [bodies_path(path)])
            _prepare(conn, bodies_kind, BODIES)
            conn.execute(f"PRAGMA {BODIES}.journal_mode=TRUNCATE")
            conn.execute(f"PRAGMA {BODIES}.synchronous=OFF")
            conn.execute(f"PRAGMA {BODIES}.secure_delete=FAST")
            # Dirty pages wait in memory for the COMMIT (at most a batch: writer.BATCH_BYTES)
            # instead of spilling early, which would lock readers out for the whole transaction.
            conn.execute(f"PRAGMA {BODIES}.cache_spill=OFF")
            conn.execute(f"SELECT count(*) FROM {BODIES}.sqlite_master").fetchone()  # rolls back a hot journal
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        fault = faults.translate(exc, path)
        if fault is not exc:
            raise fault from exc
        raise identity.refused(path, f"SQLite cannot open it ({exc})") from exc
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to date; safe to run at every start (on a connection with the bodies
    file attached)."""
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


@migrations(transactional=False)
def m009_bodies_apart(db: sqlite_utils.Database) -> None:
    """The chunks move into the bodies file (see the top of this module); the database keeps the
    rest. A store that held bodies copies them over once, here. A chunk's record is in the other
    file, which no foreign key can name: removals name the chunks they remove. The generation
    sits before the bytes here (m005 could only add it after them).

    A transaction over both files is atomic in each, not across them, so the copy commits in
    the bodies file alone before the old table goes, and each step may run again after a crash."""
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {BODIES}.chunks (
            id INTEGER PRIMARY KEY,
            record_id INTEGER NOT NULL,
            generation INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            size INTEGER NOT NULL,
            data BLOB NOT NULL
        )"""
    )
    db.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {BODIES}.chunks_by_offset ON chunks (record_id, generation, offset)")
    if db.execute("SELECT 1 FROM main.sqlite_master WHERE name = 'chunks'").fetchone():
        db.execute(f"INSERT OR IGNORE INTO {BODIES}.chunks SELECT id, record_id, generation, offset, size, data"
                   " FROM main.chunks")
    db.execute("COMMIT")
    db.execute("DROP TABLE IF EXISTS main.chunks")


@migrations()
def m010_segments(db: sqlite_utils.Database) -> None:
    """The most connections each record's body may take (a rule's or header's `segments`); 0 for
    the option's, `bgfetch_segments`."""
    db.execute("ALTER TABLE records ADD COLUMN segments INTEGER NOT NULL DEFAULT 0")
