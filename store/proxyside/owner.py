"""Who owns a bgfetch database: the lock file beside it, which one store process holds for its
life and in which it writes its own pid and its proxy's.

The store takes the lock (`take`); a proxy asks before it starts one (`holder`), so that a second
mitmproxy on a database already owned says so at once, with the fix, instead of starting a
store that can only wait. A store whose proxy has gone (killed) is on its way out: a new one
waits for it. Standard library only: the addon reads it, and so does the store.
"""

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".lock"
POLL_SECONDS = 0.1


class Owned(Exception):
    """The database is another live proxy's; the message says so in one line, with the fix."""


@dataclass(frozen=True)
class Holder:
    """The store process that holds a database's lock, and the proxy that started it."""

    store: int
    proxy: int

    @property
    def proxy_alive(self) -> bool:
        return _alive(self.proxy)


def lock_path(db: str) -> str:
    return db + SUFFIX


def holder(db: str) -> Holder | None:
    """The holder of `db`'s lock, or None when nobody holds it (or a store holds it that has not
    said who it is yet). Makes nothing: without a lock file, nobody holds it."""
    try:
        fd = os.open(lock_path(db), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refusal(db: str, held: Holder | None) -> str:
    """The one line that says `db` is another proxy's, and how to give this one its own."""
    whose = f"another mitmproxy (pid {held.proxy})" if held else "another bgfetch store"
    return (f"the database {db} is in use by {whose}; give this proxy a database of its own:"
            f" --set bgfetch_db={free_neighbour(db)}")


def check_free(db: str, proxy: int) -> None:
    """Owned when `db` is held by the store of a live proxy other than `proxy`."""
    held = holder(db)
    if held and held.proxy != proxy and held.proxy_alive:
        raise Owned(refusal(db, held))


def free_neighbour(db: str) -> str:
    """A name beside `db` that no store holds: bgfetch-2.sqlite3, bgfetch-3.sqlite3, ..."""
    path = Path(db)
    for n in range(2, 1000):
        candidate = str(path.with_name(f"{path.stem}-{n}{path.suffix}"))
        if holder(candidate) is None:
            return candidate
    return str(path.with_name(f"{path.stem}-{os.getpid()}{path.suffix}"))


def take(db: str, wait: float) -> int:
    """Hold `db`'s lock for the life of this process (the store), and write in it who holds it;
    the lock's file descriptor. A store whose proxy has gone gets `wait` seconds to go; the
    store of a live proxy other than this process's parent is Owned at once."""
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            held = _read(fd)
            if held and held.proxy != os.getppid() and held.proxy_alive or time.monotonic() >= deadline:
                os.close(fd)
                raise Owned(refusal(db, held)) from None
            time.sleep(POLL_SECONDS)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"store": os.getpid(), "proxy": os.getppid()}).encode(), 0)
    return fd


def _read(fd: int) -> Holder | None:
    try:
        found = json.loads(os.pread(fd, 200, 0))
        return Holder(int(found["store"]), int(found["proxy"]))
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True
