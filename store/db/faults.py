"""Storage faults: the few ways the database refuses a write for now, translated once from SQLite.

The writer raises these instead of `sqlite3` errors that describe the disk or a lock rather
than the work itself; the transfer loop turns each into a pause with the message as its
`lastError`, and the API into a `503`. Every other SQLite error is the work's own and
reaches its caller unchanged.

| SQLite primary code | raised as |
|---|---|
| `SQLITE_FULL` (13), or an I/O error while the disk is nearly full | `StorageFull` |
| `SQLITE_BUSY` (5), `SQLITE_LOCKED` (6) | `StorageBusy` |
| `SQLITE_IOERR` (10), `SQLITE_CANTOPEN` (14), `SQLITE_READONLY` (8) | `StorageUnavailable` |

A fleet's PostgreSQL or object store that does not answer is `StorageUnreachable`, a pause too.
"""

import os
import shutil
import sqlite3

SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN = 5, 6, 8, 10, 13, 14
NEARLY_FULL = 1024 * 1024  # an I/O error with less free than this is taken for a full disk


class StorageFault(Exception):
    """The database cannot take writes now; what was committed stays, and a later try may work."""


class StorageFull(StorageFault):
    """The disk that holds the database is full, or below the reserve the store keeps free."""

    def __init__(self, path: str, free: int | None = None, held: int = 0) -> None:
        self.free = free_bytes(path) if free is None else free
        held_back = f" ({held} of them held back for the write-ahead log and the reserve)" if held else ""
        super().__init__(f"disk full: {self.free} bytes free at {path}{held_back}")


class StorageBusy(StorageFault):
    """Another process holds the database's write lock."""

    def __init__(self, path: str) -> None:
        super().__init__(f"database locked by another process: {path}")


class StorageUnavailable(StorageFault):
    """The operating system refused to read or write the database file."""

    def __init__(self, path: str, exc: sqlite3.Error) -> None:
        super().__init__(f"storage error at {path}: {exc}")


class StorageUnreachable(StorageFault):
    """A database or object store on the network does not answer (a fleet's PostgreSQL or S3)."""


def translate(exc: sqlite3.Error, path: str) -> Exception:
    """The StorageFault that `exc` stands for (caused by it), or `exc` itself when it is the
    work's own error."""
    fault = _fault(exc, path)
    if fault is not exc:
        fault.__cause__ = exc
    return fault


def _fault(exc: sqlite3.Error, path: str) -> Exception:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == SQLITE_FULL:
        return StorageFull(path)
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return StorageBusy(path)
    if primary == SQLITE_IOERR and (free := free_bytes(path)) < NEARLY_FULL:
        return StorageFull(path, free)
    if primary in (SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY):
        return StorageUnavailable(path, exc)
    return exc


def free_bytes(path: str) -> int:
    """Bytes free for this process on the file system that holds `path`."""
    try:
        return shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return 0
