"""Storage: the contract the engine uses (`storage.Storage`) and its SQLite implementation.

The engine and the web layer import what this module exports, never a database driver;
`store.db.sqlite.SqliteStorage` is chosen where the store process is put together.
"""

from store.db.faults import StorageBusy, StorageFault, StorageFull, StorageUnavailable
from store.db.reports import Figure, Readiness, Tally
from store.db.storage import Conflict, NewRecord, NotFound, NotPaused, Page, Record, RequestChange, Storage

__all__ = [
    "Conflict", "Figure", "NewRecord", "NotFound", "NotPaused", "Page", "Readiness", "Record", "RequestChange",
    "Storage", "Tally", "StorageBusy", "StorageFault", "StorageFull", "StorageUnavailable",
]
