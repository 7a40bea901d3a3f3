"""The one thread that writes SQLite: the event loop hands it work and awaits the commit."""

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from . import schema
from .checkpoint import Checkpointer

logger = logging.getLogger(__name__)

BATCH_ITEMS = 64
BATCH_BYTES = 16 * 1024 * 1024

Work = Callable[..., Any]


class Writer:
    """Runs `fn(conn, *args)` calls on a single thread, many to a transaction.

    Each call gets its own savepoint, so one that raises rolls back alone; the caller's
    future resolves (or raises) only once the transaction holding it has committed.
    """

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conn = schema.connect(path)
        self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.checkpointer = Checkpointer(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="bgfetch-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Work, *args: Any, size: int = 0) -> asyncio.Future:
        """Queue `fn(conn, *args)`; `size` counts its bytes towards the batch limit."""
        future = self.loop.create_future()
        self._queue.put((fn, args, size, future))
        return future

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
        outcomes = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for fn, args, _, future in batch:
                outcomes.append((future, *self._apply(fn, args)))
            self.conn.execute("COMMIT")
            self.checkpointer.committed(self.conn)
        except sqlite3.Error as exc:
            logger.error("store write failed: %s", exc)
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for *_, future in batch]
        self.loop.call_soon_threadsafe(_settle, outcomes)

    def _apply(self, fn: Work, args: tuple) -> tuple[Any, BaseException | None]:
        self.conn.execute("SAVEPOINT work")
        try:
            result = fn(self.conn, *args)
        except Exception as exc:
            self.conn.execute("ROLLBACK TO work")
            self.conn.execute("RELEASE work")
            return None, exc
        self.conn.execute("RELEASE work")
        return result, None


def _settle(outcomes: list) -> None:
    for future, result, exc in outcomes:
        if future.cancelled():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
