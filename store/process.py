"""Starting the store process beside the proxy, and stopping it: the addon's only handle on it."""

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("bgfetch.store")

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
PROJECT = Path(__file__).resolve().parent.parent
# glibc's malloc gives freed memory back to the kernel as soon as 128 KiB-2 MiB of it is free at
# the top of the heap, and serves anything over its mmap threshold from fresh pages: a process
# that moves bodies through 256 KiB-1 MiB buffers then takes a page fault for every 4 KiB of
# them. Keeping up to 32 MiB took mitmdump from 806,000 page faults to none while 100 clients
# read a stored 100 MiB body. `make run` starts mitmdump with it; the store always has it.
MALLOC_TUNABLES = "glibc.malloc.trim_threshold=33554432:glibc.malloc.mmap_threshold=33554432"


class StoreError(Exception):
    """The store process did not start."""


class StoreProcess:
    """`python -m store` as a child: secrets on its stdin, which stays open as its lifeline;
    its log lines are relayed to `logging`; `ports` once it is ready."""

    def __init__(self, args: list[str], secrets: dict) -> None:
        self.args = args
        self.secrets = secrets
        self.proc: asyncio.subprocess.Process | None = None
        self.ports: dict = {}
        self._relay: asyncio.Task | None = None
        self._exit: asyncio.Future | None = None
        self._urls: asyncio.Task | None = None

    async def start(self) -> dict:
        env = {"GLIBC_TUNABLES": MALLOC_TUNABLES, **os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")]))}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "store", *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=False,
        )
        self.proc.stdin.write(json.dumps(self.secrets).encode() + b"\n")
        await self.proc.stdin.drain()
        self._relay = asyncio.create_task(self._relay_log(self.proc.stderr))
        self._exit = asyncio.ensure_future(self.proc.wait())
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), READY_TIMEOUT)
            self.ports = json.loads(line)
        except (TimeoutError, json.JSONDecodeError) as exc:
            proc = self.proc
            await self.stop()
            raise StoreError(f"the bgfetch store did not start (exit code {proc.returncode}); see the log above") from exc
        return self.ports

    def follow_urls(self, on_url: Callable[[str], None]) -> None:
        """Call `on_url` with each URL the store announces a record for, from now on."""
        self._urls = asyncio.create_task(self._read_urls(self.proc.stdout, on_url))

    @staticmethod
    async def _read_urls(stream: asyncio.StreamReader, on_url: Callable[[str], None]) -> None:
        while line := await stream.readline():
            on_url(json.loads(line)["url"])

    async def exited(self) -> int:
        """Wait until the process ends, however it ends; its exit code."""
        return await asyncio.shield(self._exit)

    async def stop(self) -> None:
        """Close the lifeline, then wait; terminate and kill only if it does not go."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.returncode is None:
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(*filter(None, [self._relay, self._urls]), return_exceptions=True)

    @staticmethod
    async def _relay_log(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            level, _, message = text.partition(" ")
            levelno = logging.getLevelName(level)
            if isinstance(levelno, int):
                logger.log(levelno, message)
            else:
                logger.warning(text)
