"""Starting the store process beside the proxy, and stopping it: the addon's only handle on it.

Both of its pipes are read in pieces of at most READ_BYTES, and no line holds more than
MAX_LINE bytes here: a longer one is cut (with a note of how much), so no line can end a
reader. A line of standard output that is not an announcement is an error, and the lookup
reads the database again (the line may have stood for a URL it would not know). A reader
that ends all the same is an error that stops the store, so that it is started again rather
than left alive and unheard (its writes would block once a pipe filled).
"""

import asyncio
import functools
import json
import logging
import os
import select
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from store.proxyside import protocol

logger = logging.getLogger("bgfetch.store")

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
READ_BYTES = 65536
MAX_LINE = 16384
PROJECT = Path(__file__).resolve().parents[2]
# glibc's malloc gives freed memory back to the kernel as soon as 128 KiB-2 MiB of it is free at
# the top of the heap, and serves anything over its mmap threshold from fresh pages: a process
# that moves bodies through 256 KiB-1 MiB buffers then takes a page fault for every 4 KiB of
# them. Keeping up to 32 MiB took mitmdump from 806,000 page faults to none while 100 clients
# read a stored 100 MiB body. `make run` starts mitmdump with it; the store always has it.
MALLOC_TUNABLES = "glibc.malloc.trim_threshold=33554432:glibc.malloc.mmap_threshold=33554432"


class StoreError(Exception):
    """The store process did not start, or does not answer."""


class Listener(Protocol):
    """What hears the store's announcements (store/__main__.py): the lookup of stored URLs."""

    def add_digest(self, digest: bytes) -> None: ...  # a record took the URL of this digest
    def forget(self, count: int) -> None: ...  # records of `count` URLs were removed
    def rebuild(self) -> None: ...  # announcements were lost: read the database again


class StoreProcess:
    """`python -m store` as a child: secrets on its stdin, which stays open as its lifeline;
    its log lines are relayed to `logging`, its announcements to `listener`; `ports` once
    it is ready."""

    def __init__(self, args: list[str], secrets: dict, listener: Listener, program: list[str] | None = None) -> None:
        self.args = args
        self.secrets = secrets
        self.listener = listener
        self.program = program or [sys.executable, "-m", "store"]
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict = {}
        self._pidfd: int | None = None
        self._readers: list[asyncio.Task] = []
        self._exit: asyncio.Future | None = None
        self._ready: asyncio.Future | None = None
        self._stopping: asyncio.Future | None = None

    async def start(self) -> dict:
        """Start it and wait for its ports; StoreError when it does not get ready."""
        env = {"GLIBC_TUNABLES": MALLOC_TUNABLES, **os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.program, *self.args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=False,
            )
        except OSError as exc:
            raise StoreError(f"the bgfetch store could not be started: {exc}") from exc
        self._pidfd = _pidfd(self.proc.pid)
        self._exit = asyncio.ensure_future(self.proc.wait())
        self._ready = asyncio.get_running_loop().create_future()
        self._readers = [
            self._reader(self._relay_log(self.proc.stderr), "standard error"),
            self._reader(self._read_announcements(self.proc.stdout), "standard output"),
        ]
        proc = self.proc
        try:
            proc.stdin.write(json.dumps(self.secrets).encode() + b"\n")
            await proc.stdin.drain()
            self.ports = await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT)
        except (TimeoutError, ValueError, ConnectionError) as exc:
            await self.stop()
            raise StoreError(f"the bgfetch store did not start (exit code {proc.returncode}): {exc}") from exc
        except BaseException:  # cancelled: a restart or the end of mitmproxy
            await self.stop()
            raise
        return self.ports

    def alive(self) -> bool:
        """Whether the process still runs, asked of the kernel (through a pidfd), not of the
        event loop, which may not have seen its end yet."""
        if self.proc is None or self.proc.returncode is not None:
            return False
        return self._pidfd is None or not select.select([self._pidfd], [], [], 0)[0]

    async def exited(self) -> int:
        """Wait until the process ends, however it ends; its exit code."""
        return await asyncio.shield(self._exit)

    async def stop(self) -> None:
        """Close the lifeline, then wait; kill only if it does not go. Cancelling the wait
        does not cancel the stop: call again to wait for its end."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self._ready and self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # told through start() already, if at all
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    # -- the pipes ------------------------------------------------------------

    def _reader(self, coro, pipe: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"bgfetch store {pipe}")
        task.add_done_callback(functools.partial(self._reader_done, pipe))
        return task

    def _reader_done(self, pipe: str, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        logger.error("bgfetch: reading the store's %s failed: %r; the store is stopped to start again",
                     pipe, task.exception())
        if not self._ready.done():
            self._ready.set_exception(ConnectionError(f"its {pipe} could not be read"))
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def _read_announcements(self, stream: asyncio.StreamReader) -> None:
        """The ready line (the store's ports), then one announcement a line (`protocol`)."""
        async for line, cut in bounded_lines(stream, MAX_LINE):
            if self._ready.done():
                self._announced(line, cut)
                continue
            try:
                ports = protocol.parse_ready(line, cut)
            except ValueError as exc:
                self._ready.set_exception(ValueError(f"its first line was not its ports ({exc}): {line[:200]!r}"))
            else:
                self._ready.set_result(ports)
        if not self._ready.done():
            self._ready.set_exception(ConnectionError("it closed its standard output before it was ready"))

    def _announced(self, line: bytes, cut: int) -> None:
        """Hand one announcement to the listener."""
        try:
            kind, value = protocol.parse_announcement(line, cut)
        except ValueError as exc:
            self._not_announced(line, str(exc))
            return
        if kind == "added":
            self.listener.add_digest(value)
        elif kind == "removed":
            self.listener.forget(value)
        else:
            logger.warning("bgfetch: the store dropped %d announcements; reading its database again", value)
            self.listener.rebuild()

    def _not_announced(self, line: bytes, why: str) -> None:
        """A line that is not an announcement may have been one that the listener now lacks (a
        URL the lookup would not know): an error, and the listener reads the database again."""
        logger.error("bgfetch: the store wrote a line that is not an announcement (%s): %r; reading its"
                     " database again", why, line[:200])
        self.listener.rebuild()

    @staticmethod
    async def _relay_log(stream: asyncio.StreamReader) -> None:
        async for line, cut in bounded_lines(stream, MAX_LINE):
            text = line.decode(errors="replace").rstrip()
            if cut:
                text += f" [{cut} more bytes cut]"
            level, _, message = text.partition(" ")
            levelno = logging.getLevelName(level)
            if isinstance(levelno, int):
                logger.log(levelno, message)
            else:
                logger.warning(text)


async def bounded_lines(stream: asyncio.StreamReader, limit: int) -> AsyncIterator[tuple[bytes, int]]:
    """Each line of `stream` without its end, cut to `limit` bytes, with the count of bytes
    cut from it (0 for most); reads at most READ_BYTES at a time, whatever the line."""
    held = bytearray()  # the start of the line being read
    cut = 0
    while chunk := await stream.read(READ_BYTES):
        *ends, rest = chunk.split(b"\n")
        for piece in ends:
            room = limit - len(held)
            held += piece[:room]
            yield bytes(held), cut + max(len(piece) - room, 0)
            held.clear()
            cut = 0
        room = limit - len(held)
        held += rest[:room]
        cut += max(len(rest) - room, 0)
    if held or cut:
        yield bytes(held), cut


def _pidfd(pid: int) -> int | None:
    """A pidfd of the process (readable once it has ended), or None where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
