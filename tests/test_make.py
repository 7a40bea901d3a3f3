"""`make web` and `make console` (Makefile): mitmweb and the mitmproxy console with the addon, as `make
run` has mitmdump; the console on a real terminal (a pty), where bgfetch's commands are at its prompt."""

import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
from pathlib import Path

import httpx

from harness.poll import eventually
from harness.proxy import ROOT, WebProxy, free_port


def make(target: str, args: list[str], **popen) -> subprocess.Popen:
    """`make TARGET ARGS="..."` in the checkout, in a session of its own (stopped with its group)."""
    return subprocess.Popen(["make", "-s", "-C", str(ROOT), target, "ARGS=" + " ".join(args)],
                            start_new_session=True, **popen)


def stop(proc: subprocess.Popen) -> None:
    """Stop the make and the tool it runs (SIGTERM: mitmproxy shuts down, the store goes with it)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/fetches", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def bgfetch_args(tmp_path: Path, port: int, listen_port: int) -> list[str]:
    return ["-p", str(port), "--listen-host", "127.0.0.1", "--set", f"confdir={tmp_path / 'conf'}",
            "--set", f"bgfetch_db={tmp_path / 'bgfetch.sqlite3'}", "--set", f"bgfetch_listen_port={listen_port}"]


def test_make_web_runs_mitmweb_with_the_addon(origin, tmp_path):
    origin.add("/w.bin", size=10_000)
    web = WebProxy(tmp_path)  # only for its ports and its API
    args = [*bgfetch_args(tmp_path, web.port, web.listen_port), "--no-web-open-browser", "--web-host", "127.0.0.1",
            "--web-port", str(web.web_port), "--set", f"web_password={web.PASSWORD}"]
    with open(tmp_path / "make.log", "wb") as log:
        proc = make("web", args, stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: answers(web.listen_port), 60, what="the store of make web",
                   explain=lambda _: (tmp_path / "make.log").read_text())
        with web.client() as client:
            assert client.get(origin.url("/w.bin"), headers={"Background-Fetch": 'id="w"'}).content == origin.data("/w.bin")
        assert web.command("bgfetch.list") == ["w  success  9.8k  w.bin"]
        assert [flow["request"]["path"] for flow in web.flows()] == ["/w.bin"]
    finally:
        stop(proc)
    eventually(lambda: not web.store_running, 15, what="the store to go with mitmweb")


def test_make_console_runs_the_console_with_the_addon_and_its_commands_at_the_prompt(origin, tmp_path):
    origin.add("/c.bin", size=10_000)
    port, listen_port = free_port(), free_port()
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns
    screen = bytearray()
    proc = make("console", bgfetch_args(tmp_path, port, listen_port), stdin=terminal, stdout=terminal,
                stderr=terminal, env={**os.environ, "TERM": "xterm"})
    os.close(terminal)
    reader = threading.Thread(target=_drain, args=(main, screen), daemon=True)
    reader.start()
    try:
        eventually(lambda: answers(listen_port), 60, what="the store of make console",
                   explain=lambda _: screen[-2000:].decode(errors="replace"))
        # the console's command prompt (":"), a bgfetch command typed into it, and Enter
        os.write(main, f":bgfetch.fetch {origin.url('/c.bin')} from-console\r".encode())
        registration = eventually(
            lambda: httpx.get(f"http://127.0.0.1:{listen_port}/api/fetches/from-console", timeout=2).json(), 30,
            until=lambda found: found.get("result") == "success", what="the console's fetch to succeed",
            explain=lambda found: (found, screen[-2000:].decode(errors="replace")))
        assert registration["downloaded"] == 10_000
    finally:
        stop(proc)
        os.close(main)
        reader.join(5)


def _drain(fd: int, into: bytearray) -> None:
    """Read what the console draws (a terminal that nobody reads would block it)."""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        into += data
