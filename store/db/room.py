"""Room on the disk for the writer: chunks stop above a reserve, so everything else still fits.

A chunk costs the disk once: its pages go into the bodies file when they are committed (unless
free pages inside it take them; `schema` says why once). In a transaction that holds chunks, the
writer measures the room (`Room.measure`: a statvfs and a stat, and a few pragmas when the fit
is tight; 53 measures, 3 ms in all, while 256 MiB were written at 400-700 MB/s), takes away
what the next checkpoint will add to the database for the WAL already written, and refuses
every chunk that would leave less than the reserve.

The reserve is what SQLite needs for the writes that must never fail for want of space:
state changes (a pause, an abort), a DELETE and the page moves that give its space back, the
idle checkpoint that truncates the WAL. With 64 KiB pages a state change writes 2-5 WAL
frames (≈ 0.3 MiB) and a reclaim turn a few MiB, so a sixteenth of a small file system
(4 MiB of a 64 MiB disk: a dozen state changes between two checkpoints, which come every
idle second) is enough, and 64 MiB is plenty for any disk; a larger one would only strand
space on big disks. The WAL's own limit (`checkpoint.wal_limit`) is a quarter of what is
free, so on a nearly full disk the WAL is copied back after every commit.
"""

import os
import shutil
import sqlite3
from dataclasses import dataclass

from store.db import faults
from store.db.schema import BODIES

RESERVE_MOST = 64 * 1024**2
RESERVE_SHARE = 16  # the reserve is at most this fraction of the file system
SHORT = 4  # the disk is short of room below this many reserves free


def reserve_for(path: str) -> int:
    """Bytes kept free on the file system of `path`: a sixteenth of it, at most RESERVE_MOST."""
    total = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).total
    return min(RESERVE_MOST, total // RESERVE_SHARE)


@dataclass
class Budget:
    """What one batch may still write: `left` bytes of the disk above the reserve, and
    `spare` bytes of free pages inside the bodies file that chunks take first."""

    free: int
    left: int
    spare: int

    @property
    def held(self) -> int:
        """Free bytes that chunks may not have: the reserve, and what the WAL owes the database."""
        return self.free - self.left

    def fits(self, size: int) -> bool:
        return self._cost(size) <= self.left

    def take(self, size: int) -> bool:
        """Count `size` bytes of chunks against the budget; False (and nothing counted) if they do not fit."""
        cost = self._cost(size)
        if cost > self.left:
            return False
        self.left -= cost
        self.spare = max(0, self.spare - size)
        return True

    def _cost(self, size: int) -> int:
        return max(0, size - self.spare)  # into the bodies file, in free pages first


class Room:
    def __init__(self, path: str) -> None:
        self.path = path
        self.reserve = reserve_for(path)

    def short(self) -> bool:
        return faults.free_bytes(self.path) < SHORT * self.reserve

    def measure(self, conn: sqlite3.Connection, wanted: int) -> Budget:
        """The budget for `wanted` bytes of chunks, on the writer's connection in its transaction.
        With room to spare, two system calls tell: the next checkpoint adds at most the WAL's
        size to the database. Only a tight fit asks SQLite what it owes and what is free inside."""
        free = faults.free_bytes(self.path)
        try:
            wal = os.path.getsize(self.path + "-wal")
        except OSError:
            wal = 0
        rough = Budget(free, free - wal - self.reserve, 0)
        if rough.fits(wanted):
            return rough
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        spare_pages = conn.execute(f"PRAGMA {BODIES}.freelist_count").fetchone()[0]
        spare = spare_pages * conn.execute(f"PRAGMA {BODIES}.page_size").fetchone()[0]
        try:
            on_disk = os.path.getsize(self.path)
        except OSError:
            on_disk = 0
        owed = max(0, pages * page_size - on_disk)  # what the next checkpoint adds to the file
        return Budget(free, free - owed - self.reserve, spare)
