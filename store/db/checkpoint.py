"""WAL checkpoints on their own thread, and only when they cost a transfer nothing.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold: it copies
the WAL into the database and fsyncs both while the writer — and the transfers behind it —
wait. Measured on a 2-core machine with a 420 MB/s disk, that held 1 MiB-blob inserts to
≈ 240 MiB/s. Commits alone (WAL, `synchronous=NORMAL`, no fsync) ran at ≈ 1.6 GB/s, and a
checkpoint of 1 GiB took 1.6 s, most of it waiting for the disk. A committed chunk is as safe
in the WAL as in the database, so the writer turns the automatic checkpoint off and this
thread copies the WAL over when the writer rests. A burst of up to half the WAL's limit (a
4 GiB body, with the default) is then written once while it arrives, and copied after:
a 1 GiB fetch that a checkpoint beside it held to 410-590 MB/s ran at 890-1,080 MB/s
without one. The limit is at most a quarter of the disk's free space, measured at every
commit, so the WAL cannot fill the disk, and on a nearly full disk it is copied back after
each commit; no floor keeps it larger than the disk has room for:

- once no commit has come for IDLE_SECONDS, a PASSIVE checkpoint (it never blocks the writer
  or readers), then a TRUNCATE, which gives the WAL's space back and finds nothing left to copy;
- past half the limit (a long transfer), a PASSIVE checkpoint beside the writer;
- past the limit (the disk is slower than the transfers), the writer itself runs a RESTART
  between two transactions, so the WAL stays bounded; the PASSIVE ones before it have left
  it little to copy. One checkpoint runs at a time (`_one_at_a_time`): SQLite would answer a
  second one "busy" at once, without waiting, and the WAL would grow past the limit;
- when chunks no longer fit above the disk's reserve (`room.Room`), the writer runs a
  TRUNCATE before it refuses them, and after a DELETE has given pages back this thread
  runs one (`give_back`): the WAL's space goes back to the file system.

A checkpoint that fails (the disk is full, another process holds a lock) loses nothing: the
WAL keeps every commit, and a later one copies it.
"""

import logging
import os
import shutil
import sqlite3
import threading
import time

from store.db import faults, schema

logger = logging.getLogger(__name__)

WAL_LIMIT = 8 * 1024**3
IDLE_SECONDS = 1.0


def wal_limit(path: str) -> int:
    """WAL_LIMIT, or a quarter of the free space beside the database if that is less."""
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        free = 0
    return min(WAL_LIMIT, free // 4)


class Checkpointer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.wal = path + "-wal"
        self.conn = schema.connect(path, bodies=False)  # the bodies file has no WAL
        self._last_commit = time.monotonic()
        self._wal_seen = (0, 0)
        self._give_back = False
        self._poke = threading.Event()
        self._one_at_a_time = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="bgfetch-checkpoint", daemon=True)
        self._thread.start()

    def committed(self, writer: sqlite3.Connection) -> None:
        """Called by the writer after each commit, on its thread. A commit that wrote nothing
        (the WAL's size and time are as they were: a paused transfer asking for room) does
        not hold back the idle checkpoint."""
        wal = self._wal_stat()
        if wal != self._wal_seen:
            self._wal_seen, self._last_commit = wal, time.monotonic()
        size = wal[0]
        if not size:
            return
        limit = wal_limit(self.path)
        if size > limit:
            self._checkpoint(writer, "RESTART")
        elif size > limit // 2:
            self._poke.set()

    def truncate(self, writer: sqlite3.Connection) -> bool:
        """Copy the WAL into the database and give its space back, on the writer's thread
        between two transactions; whether it went."""
        return self._checkpoint(writer, "TRUNCATE") and not self.wal_size()

    def give_back(self) -> None:
        """Copy the WAL over and truncate it soon, on this thread, without waiting for the
        writer to rest (after a DELETE: paused transfers retrying keep it from resting)."""
        self._give_back = True
        self._poke.set()

    def close(self) -> None:
        self._stopping = True
        self._poke.set()
        self._thread.join()
        self.conn.close()

    def _run(self) -> None:
        while not self._stopping:
            poked = self._poke.wait(IDLE_SECONDS)
            self._poke.clear()
            if self._stopping:
                break
            idle = not poked and time.monotonic() - self._last_commit >= IDLE_SECONDS
            if (idle or self._give_back) and self.wal_size():
                self._give_back = False
                self._checkpoint(self.conn, "PASSIVE")
                self._checkpoint(self.conn, "TRUNCATE")
            elif poked:
                self._checkpoint(self.conn, "PASSIVE")

    def _checkpoint(self, conn: sqlite3.Connection, mode: str) -> bool:
        """Whether the checkpoint finished; a reader, a full disk or another process's lock
        can keep it from finishing, and a later commit or idle second tries again."""
        with self._one_at_a_time:
            try:
                busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            except sqlite3.Error as exc:
                fault = faults.translate(exc, self.path)
                if isinstance(fault, (faults.StorageFull, faults.StorageBusy)):  # passes: tried again later
                    logger.info("checkpoint %s did not finish: %s", mode, fault)
                else:  # the WAL keeps every committed byte, but it cannot be copied into the database
                    logger.error(
                        "checkpoint %s of %s failed: %s; committed data stays in the write-ahead log"
                        " (%s-wal): check the disk, and keep that file with the database", mode, self.path, fault, self.path,
                    )
                return False
        if busy:  # a reader is still on an older snapshot
            logger.debug("checkpoint %s did not finish: a reader holds the write-ahead log", mode)
        return not busy

    def wal_size(self) -> int:
        return self._wal_stat()[0]

    def _wal_stat(self) -> tuple[int, int]:
        try:
            stat = os.stat(self.wal)
        except FileNotFoundError:
            return 0, 0
        return stat.st_size, stat.st_mtime_ns
