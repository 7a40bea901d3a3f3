"""store/proxyside/process.py: the malloc settings the store always gets are the ones `make run` gives mitmdump
(and `make web`, `make console` mitmweb and the console);
no line ends a reader of the store's pipes, a reader that dies stops the store, and the kernel tells
when the store has died."""

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from harness.poll import eventually, eventually_async
from store.proxyside import process


def test_make_run_web_and_console_give_mitmproxy_the_stores_malloc_settings():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert f"\nMALLOC = GLIBC_TUNABLES=$${{GLIBC_TUNABLES:-{process.MALLOC_TUNABLES}}}\n" in makefile
    for target, tool in (("run", "mitmdump"), ("web", "mitmweb"), ("console", "mitmproxy")):
        assert f"\n{target}: $(VENV)/.installed\n\t$(MALLOC) $(VENV)/bin/{tool} -s addon.py $(ARGS)\n" in makefile


# -- the pipes and the lifeline, with real child processes -----------------------------

READY = 'import json, sys; sys.stdin.readline(); print(json.dumps({"port": 1, "listen_port": 0}), flush=True)\n'
TALKER = READY + """
sys.stdout.write("x" * 1_000_000 + "\\n")
sys.stderr.write("ERROR store: " + "y" * 1_000_000 + "\\n")
sys.stderr.write("INFO store.transfer: a line as usual\\n")
sys.stderr.flush()
print(json.dumps({"added": "ab" * 16}), json.dumps({"removed": 2}), "not json", json.dumps({"dropped": 5}),
      json.dumps({"added": "short"}), sep="\\n", flush=True)
sys.stdin.read()
"""


class Heard:
    """A listener that keeps what the store announced."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_digest(self, digest: bytes) -> None:
        self.calls.append(("add", digest))

    def forget(self, count: int) -> None:
        self.calls.append(("forget", count))

    def rebuild(self) -> None:
        self.calls.append(("rebuild",))


def child(script: str, listener=None) -> process.StoreProcess:
    return process.StoreProcess([], {"secret": "s"}, listener or Heard(), program=[sys.executable, "-c", script])


async def until(check, timeout: float = 10) -> None:
    await eventually_async(check, timeout, interval=0.01)


def test_no_line_ends_a_reader_and_long_ones_are_cut_with_a_note(caplog):
    caplog.set_level(logging.INFO, logger="bgfetch.store")

    async def scenario():
        heard = Heard()
        store = child(TALKER, heard)
        assert await store.start() == {"port": 1, "listen_port": 0}
        try:
            await until(lambda: len(heard.calls) == 6)
            rebuild = ("rebuild",)  # "dropped", and each line that is not an announcement: read the database again
            assert heard.calls == [rebuild, ("add", bytes.fromhex("ab" * 16)), ("forget", 2), rebuild, rebuild, rebuild]
            await until(lambda: any("as usual" in r.message for r in caplog.records))
            assert store.alive()
        finally:
            await store.stop()

    asyncio.run(scenario())
    cut = [r for r in caplog.records if r.levelno == logging.ERROR and r.message.startswith("store: yyy")]
    assert len(cut) == 1 and cut[0].message.endswith(f"y [{1_000_000 + 13 - process.MAX_LINE} more bytes cut]")
    not_announcements = [r for r in caplog.records if "not an announcement" in r.message]
    assert len(not_announcements) == 3  # the long line, "not json" and the short digest
    assert all(r.levelno == logging.ERROR and "reading its database again" in r.message for r in not_announcements)


def test_a_reader_that_dies_stops_the_store_so_that_it_starts_again(caplog):
    class Broken(Heard):
        def add_digest(self, digest: bytes) -> None:
            raise RuntimeError("a bug")

    async def scenario():
        store = child(TALKER, Broken())
        await store.start()
        code = await asyncio.wait_for(store.exited(), 10)
        await store.stop()
        return code

    assert asyncio.run(scenario()) == -signal.SIGKILL
    assert any("reading the store's standard output failed" in r.message for r in caplog.records)


def test_a_store_that_is_not_ready_is_an_error_naming_why():
    async def scenario(script: str) -> str:
        store = child(script)
        with pytest.raises(process.StoreError) as raised:
            await store.start()
        assert store.proc is None
        return str(raised.value)

    assert "closed its standard output" in asyncio.run(scenario("import sys; sys.exit(3)"))
    assert "first line was not its ports" in asyncio.run(scenario("print('hello', flush=True); input()"))


def test_alive_knows_of_a_kill_before_the_event_loop_does():
    async def scenario():
        store = child(READY + "sys.stdin.read()")
        await store.start()
        assert store.alive()
        os.kill(store.proc.pid, signal.SIGKILL)
        # no await: the event loop hears nothing meanwhile
        eventually(lambda: not store.alive(), 5, interval=0.001, what="alive() to know of the kill")
        assert store.proc.returncode is None
        await store.stop()

    asyncio.run(scenario())


def test_bounded_lines_reads_a_real_pipe_in_pieces():
    script = "import sys; sys.stdout.write('a' * 300_000 + '\\nshort\\n' + 'b' * 20 + '\\n' + 'c' * 5)"

    async def scenario():
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
        lines = [line async for line in process.bounded_lines(proc.stdout, 100)]
        await proc.wait()
        return lines

    assert asyncio.run(scenario()) == [(b"a" * 100, 299_900), (b"short", 0), (b"b" * 20, 0), (b"c" * 5, 0)]


def _children() -> set[int]:
    """This process's living children."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and fields[0] not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def test_a_start_cancelled_in_the_middle_of_the_spawn_ends_and_leaves_no_child():
    async def scenario(steps: int):
        before = _children()
        store = child(READY + "sys.stdin.read()")
        starting = asyncio.ensure_future(store.start())
        for _ in range(steps):  # somewhere in the spawn: asyncio connects the child's pipes one by one
            await asyncio.sleep(0)
        starting.cancel()
        await asyncio.wait_for(asyncio.gather(starting, return_exceptions=True), 10)
        assert store.proc is None
        assert _children() == before

    for steps in range(8):
        asyncio.run(scenario(steps))
