"""Which files are bgfetch stores: checked before anything is written to a file.

A store carries APPLICATION_ID in its SQLite header (`PRAGMA application_id`), written with
its very first page. A store made before that is known by its bgfetch migrations and tables,
and gets the id when it is next opened. Any other file that exists and is not empty is
refused, naming it, and left as it was: the check reads the header with plain file I/O, and
looks at the tables through an immutable read-only connection (one that creates no -wal or
-shm file), or, when a -wal and a -shm are beside it already, a read-only one.
"""

import os
import sqlite3
from urllib.parse import quote

APPLICATION_ID = int.from_bytes(b"bgFS", "big")  # 0x62674653
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
BGFETCH_TABLES = {"registrations", "records", "chunks", "_sqlite_migrations"}


class NotAStore(Exception):
    """The file is not a bgfetch store (or cannot be read as one); bgfetch leaves it alone."""


def check(path: str) -> str:
    """What `path` is: "new" (missing or empty), "store", or "old store" (one made before
    the application id). NotAStore, naming the path and why, for anything else."""
    try:
        with open(path, "rb") as file:
            header = file.read(HEADER_BYTES)
    except FileNotFoundError:
        return "new"
    except OSError as exc:
        raise refused(path, f"it cannot be read: {exc.strerror or exc}") from exc
    if not header:
        return "new"
    if not header.startswith(SQLITE_MAGIC) or len(header) < HEADER_BYTES:
        raise refused(path, "it is not an SQLite database")
    found = int.from_bytes(header[68:72], "big")
    if found == APPLICATION_ID:
        return "store"
    if found:
        raise refused(path, f"it is another application's SQLite database (application_id {found:#x})")
    tables = _tables(path)
    if BGFETCH_TABLES <= tables and _migrated(path):
        return "old store"
    listed = ", ".join(sorted(tables)[:8]) if tables else "none"
    raise refused(path, f"it is an SQLite database without bgfetch's migrations (its tables: {listed})")


def refused(path: str, why: str) -> NotAStore:
    """The one line that says which file, and why it is not opened."""
    return NotAStore(
        f"{path} is not a bgfetch store: {why}; bgfetch left it unchanged"
        " (bgfetch_db must name a bgfetch store or a new file)"
    )


def _tables(path: str) -> set[str]:
    rows = _read(path, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows}


def _migrated(path: str) -> bool:
    sql = "SELECT 1 FROM _sqlite_migrations WHERE migration_set = 'bgfetch' AND name = 'm001_initial'"
    return bool(_read(path, sql))


def _read(path: str, sql: str) -> list:
    """Rows of `sql`, read without writing to `path` or creating anything beside it: through
    the WAL only when its -wal and -shm are both there already (a program that stopped
    without a checkpoint), else immutable (no locks, no -wal or -shm made)."""
    shared = os.path.exists(path + "-wal") and os.path.exists(path + "-shm")
    mode = "mode=ro" if shared else "immutable=1"
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?{mode}", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise refused(path, f"SQLite cannot read it ({exc})") from exc
