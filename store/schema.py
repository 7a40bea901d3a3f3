"""The store's SQLite schema, in one place, and how both processes open the database."""

import hashlib
import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

PAGE_SIZE = 65536
migrations = Migrations("bgfetch")


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the database: WAL, autocommit (transactions are explicit), foreign keys on.

    A new database gets incremental auto-vacuum, so deleted bodies give their space back
    (`tables.reclaim_space`); one made before keeps its free pages for new chunks."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new database only
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
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
