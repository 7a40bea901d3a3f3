"""The one thread that writes SQLite: the event loop hands it work and awaits the commit.

It survives every SQLite error. A full disk or another process's lock is translated once,
here, into a `faults.StorageFault` (SQLite may already have rolled the whole transaction
back by then, savepoints and all); chunks that would leave less than the disk's reserve are
refused before they are written (`room.Room`), so state changes, aborts, DELETE and
checkpoints still find space.
"""

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from store.db import faults, schema
from store.db.checkpoint import Checkpointer
from store.db.room import Budget, Room

logger = logging.getLogger(__name__)

BATCH_ITEMS = 64
BATCH_BYTES = 16 * 1024 * 1024

Work = Callable[..., Any]


class Writer:
    """Runs `fn(conn, *args)` calls on a single thread, many to a transaction.

    Each call gets its own savepoint, so one that raises rolls back alone; the caller's
    future resolves (or raises) only once the transaction holding it has committed. When
    the transaction itself is lost (a full disk at COMMIT), each call of it is tried again
    alone, so a chunk that did not fit never takes a state change down with it.
    """

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop, first: Work | None = None) -> None:
        """`first(conn)` runs at the start of each transaction until one commits (the store's
        repair after a crash, which must come before any other write, also when the first
        transactions cannot be written)."""
        self.path = path
        self.loop = loop
        self.first = first
        self.conn = schema.connect(path)
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.checkpointer = Checkpointer(path)
        self.room = Room(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="bgfetch-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Work, *args: Any, size: int = 0) -> asyncio.Future:
        """Queue `fn(conn, *args)`; `size` counts its bytes towards the batch limit, and a
        call with a size is a chunk: refused with StorageFull when the disk has no room."""
        future = self.loop.create_future()
        self._queue.put((fn, args, size, future))
        return future

    @property
    def alive(self) -> bool:
        """Whether the writer thread still runs (until `close`)."""
        return self._thread.is_alive()

    def give_back(self) -> None:
        """When the disk is short of room, give the WAL's space back to the file system soon
        (Checkpointer.give_back); with room to spare, the idle checkpoint does it, without
        a TRUNCATE that holds up the transfers still writing."""
        if self.room.short():
            self.checkpointer.give_back()

    def close(self) -> None:
        """Finish the queued work, then stop the thread and close the connection."""
        self._queue.put(None)
        self._thread.join()
        self.checkpointer.close()
        self.conn.close()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._commit(batch)
        logger.debug("writer stopped")

    def _next_batch(self) -> list | None:
        item = self._queue.get()
        if item is None:
            return None
        batch, size = [item], item[2]
        while len(batch) < BATCH_ITEMS and size < BATCH_BYTES:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
            size += item[2]
        return batch

    def _commit(self, batch: list) -> None:
        try:
            outcomes = self._transaction(batch)
        except Exception as exc:  # the transaction is lost, and every call in it
            logger.warning("store write failed: %s", exc)
            if len(batch) == 1 or isinstance(exc, faults.StorageBusy):  # alone, each would wait for the lock
                outcomes = [(future, None, exc) for *_, future in batch]
            else:
                outcomes = [self._alone(item) for item in batch]
        self.loop.call_soon_threadsafe(_settle, outcomes)

    def _alone(self, item: tuple) -> tuple:
        try:
            return self._transaction([item])[0]
        except Exception as exc:
            return item[-1], None, exc

    def _transaction(self, batch: list) -> list:
        """Run the batch in one transaction; returns (future, result, error) for each call.
        Raises (translated) when the transaction as a whole fails."""
        self._rollback()  # a transaction left open by a failed rollback would refuse every BEGIN
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            budget = self._budget(batch)  # may roll back and begin again
            if self.first is not None:
                self.first(self.conn)
            outcomes = [self._apply(*item, budget) for item in batch]
            self.conn.execute("COMMIT")
            self.first = None
        except Exception as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error) and (fault := faults.translate(exc, self.path)) is not exc:
                raise fault from exc
            raise
        self.checkpointer.committed(self.conn)
        return outcomes

    def _budget(self, batch: list) -> Budget | None:
        """The disk's room for the batch's chunks (None when it has none), measured inside its
        transaction, where it costs least; when they do not fit, the WAL is first copied into
        the database and truncated (outside any transaction), giving its space back."""
        wanted = sum(item[2] for item in batch)
        if not wanted:
            return None
        budget = self.room.measure(self.conn, wanted)
        if not budget.fits(wanted) and self.checkpointer.wal_size():
            self.conn.execute("ROLLBACK")
            self.checkpointer.truncate(self.conn)
            self.conn.execute("BEGIN IMMEDIATE")
            budget = self.room.measure(self.conn, wanted)
        return budget

    def _apply(self, fn: Work, args: tuple, size: int, future, budget: Budget | None) -> tuple:
        if size and budget is not None and not budget.take(size):
            return future, None, faults.StorageFull(self.path, budget.free, budget.held)
        self.conn.execute("SAVEPOINT work")
        try:
            result = fn(self.conn, *args)
        except Exception as exc:
            if not self._undo_savepoint():
                raise  # SQLite rolled back the whole transaction: the batch is lost
            if isinstance(exc, sqlite3.Error):
                return future, None, faults.translate(exc, self.path)
            return future, None, exc
        self.conn.execute("RELEASE work")
        return future, result, None

    def _undo_savepoint(self) -> bool:
        """Roll back to the call's savepoint; False when there is none left to roll back to."""
        if not self.conn.in_transaction:
            return False
        try:
            self.conn.execute("ROLLBACK TO work")
            self.conn.execute("RELEASE work")
        except sqlite3.Error:
            return False
        return True

    def _rollback(self) -> None:
        if not self.conn.in_transaction:
            return
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the next BEGIN tells whether the connection is still usable
            logger.error("store rollback failed: %s", exc)


def _settle(outcomes: list) -> None:
    for future, result, exc in outcomes:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
