"""store/proxyside/pipes.py: the store's log and announcements never block it, whatever mitmproxy does; and end to
end, a 70 KB URL and a flood of log lines while mitmdump is stopped leave the store answering."""

import http.client
import json
import logging
import os
import signal
import threading
import time

import pytest

from harness.poll import eventually
from store.proxyside import pipes
from store.proxyside.protocol import url_digest

NOTE = "{} lines dropped\n"


def _note(dropped: int) -> bytes:
    return NOTE.format(dropped).encode()


class Drain:
    """Reads a pipe's read end in a thread until its end; `data` is what it read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Drain":
        self.thread.start()
        return self

    def _run(self) -> None:
        while chunk := os.read(self.fd, 65536):
            self.data += chunk

    def finish(self) -> bytes:
        self.thread.join(10)
        os.close(self.fd)
        return bytes(self.data)


def test_a_pipe_nobody_reads_never_holds_up_a_put_and_what_is_dropped_is_counted():
    read_end, write_end = os.pipe()
    writer = pipes.PipeWriter(write_end, _note, limit=64 * 1024)
    line = b"x" * 999 + b"\n"
    started = time.monotonic()
    kept = sum(writer.put(line) for _ in range(5000))
    assert time.monotonic() - started < 1.0  # 5 MB offered to a 64 KiB pipe and a 64 KiB queue
    assert 0 < kept < 200
    drain = Drain(read_end).start()
    writer.close()
    os.close(write_end)
    lines = drain.finish().splitlines(keepends=True)
    assert lines.count(line) == kept
    notes = [n for n in lines if n != line]
    assert notes and all(n.endswith(b" lines dropped\n") for n in notes)
    assert sum(int(n.split()[0]) for n in notes) == 5000 - kept == writer.dropped


def test_the_note_comes_where_the_dropped_lines_would_have_been():
    read_end, write_end = os.pipe()
    writer = pipes.PipeWriter(write_end, _note, limit=100_000)
    first = b"a" * 70_000 + b"\n"  # more than the pipe holds: the thread waits on it
    assert writer.put(first)
    eventually(lambda: not writer.queued, 5, interval=0.01, what="the queue to empty into the pipe")
    assert writer.put(b"b" * 60_000 + b"\n")
    assert not writer.put(b"c" * 60_000 + b"\n")
    assert writer.put(b"d\n")
    drain = Drain(read_end).start()
    writer.close()
    os.close(write_end)
    lines = drain.finish().splitlines(keepends=True)
    assert [line[:1] for line in lines] == [b"a", b"b", b"1", b"d"]
    assert lines[2] == _note(1)


def test_a_pipe_whose_reader_has_gone_breaks_the_writer_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)
    writer = pipes.PipeWriter(write_end, _note)
    for _ in range(100):
        writer.put(b"lost\n")
    writer.close()
    os.close(write_end)
    assert writer.broken


def test_a_long_log_record_is_cut_with_a_note(caplog):
    read_end, write_end = os.pipe()
    handler = pipes.PipeHandler(pipes.PipeWriter(write_end, _note))
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    record = logging.LogRecord("store.transfer", logging.INFO, __file__, 1, "%s answered 404", ("u" * 70_000,), None)
    drain = Drain(read_end).start()
    handler.emit(record)
    handler.close()
    os.close(write_end)
    line = drain.finish()
    assert line.startswith(b"INFO store.transfer: uuu")
    cut = len("INFO store.transfer: ") + 70_000 + len(" answered 404") - pipes.MAX_LOG_CHARS
    assert line.endswith(f"u [{cut} more characters cut]\n".encode())
    assert len(line) < pipes.MAX_LOG_CHARS + 40


def test_announcements_are_small_whatever_the_url():
    read_end, write_end = os.pipe()
    announcer = pipes.Announcer(write_end)
    drain = Drain(read_end).start()
    url = "http://example.com/" + "a" * 70_000
    announcer.added(url)
    announcer.removed(0)
    announcer.removed(3)
    announcer.close()
    os.close(write_end)
    lines = drain.finish().splitlines()
    assert [json.loads(line) for line in lines] == [{"added": url_digest(url).hex()}, {"removed": 3}]
    assert len(lines[0]) == len('{"added": ""}') + 32


# -- end to end ---------------------------------------------------------------------


@pytest.fixture
def stopped():
    """Stops a process with SIGSTOP (`stopped(pid)`) and always lets it go on again."""
    pids = []

    def stop(pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)
        pids.append(pid)

    yield stop
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def test_a_70_kb_url_and_a_log_flood_while_mitmdump_is_stopped_leave_the_store_answering(origin, proxy, stopped):
    huge = origin.url("/" + "h" * 70_000)
    refused = proxy.api("POST", "/api/fetches", json={"id": "huge", "requests": [huge]})
    assert refused.status_code == 400 and refused.json()["field"] == "requests[0].url"
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)  # httpx takes at most 64 KiB
    conn.request("GET", huge, headers={"Background-Fetch": "?1"})
    too_long = conn.getresponse()
    assert too_long.status == 414 and too_long.getheader("Content-Type") == "application/problem+json"
    assert json.loads(too_long.read())["limit"] == 8192
    conn.close()
    with proxy.client() as client:
        origin.add("/" + "p" * 9000, data=b"passed through")
        assert client.get(origin.url("/" + "p" * 9000)).content == b"passed through"

    stopped(proxy.proc.pid)  # mitmproxy reads none of the store's pipes from now on
    origin.add("/while-stopped.bin", size=100_000)
    slowest = 0.0
    for n in range(250):  # each fails and logs its 8 KB URL: 2 MB for a 64 KiB pipe
        started = time.monotonic()
        created = proxy.api("POST", "/api/fetches", json={"id": f"f{n}", "requests": [origin.url(f"/{n}/" + "m" * 8000)]})
        slowest = max(slowest, time.monotonic() - started)
        assert created.status_code == 201
    created = proxy.api("POST", "/api/fetches", json={"id": "while", "requests": [origin.url("/while-stopped.bin")]})
    assert created.status_code == 201
    proxy.wait_for("while", timeout=20, result="success")
    proxy.wait_for("f249", timeout=20, result="failure")
    assert slowest < 5.0
    os.kill(proxy.proc.pid, signal.SIGCONT)

    proxy.wait_for_log("log lines dropped", 20)
    origin.add("/after.bin", size=50_000)
    assert proxy.api("POST", "/api/fetches", json={"id": "after", "requests": [origin.url("/after.bin")]}).status_code == 201
    proxy.wait_for("after", result="success")
    origin.stop()
    with proxy.client() as client:
        for path in ("/while-stopped.bin", "/after.bin"):
            served = client.get(origin.url(path))
            assert served.status_code == 200 and served.content == origin.data(path), path
    assert proxy.store_running
