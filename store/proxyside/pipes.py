"""The store's writes to the pipes mitmproxy reads (its log, its announcements), never blocking.

A pipe holds 64 KiB; when mitmproxy does not read it (busy, stopped, or a reader gone) a
plain write waits, and a store waiting in a log call on its event loop or its SQLite writer
thread is a store that stops. Here every line goes into a queue of at most QUEUE_BYTES, which
a thread of the pipe's own writes out: a line that does not fit is dropped and counted, and a
note of how many were dropped is written where they would have been.
"""

import collections
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from store.proxyside import protocol

QUEUE_BYTES = 1 << 20
MAX_LOG_CHARS = 8192  # a longer log record is cut, with a note of how much
MAX_FIELD_CHARS = 2048  # a longer string of a JSON line is cut (the line stays JSON)
CLOSE_WAIT = 2.0  # seconds that closing waits for what is queued to be written


class PipeWriter:
    """Lines to the file descriptor `fd` from a daemon thread; `put` never waits.

    The queue holds lines, and in the place of lines that did not fit, their count (one
    count for a run of them): the note about them comes out where they would have."""

    def __init__(self, fd: int, note: Callable[[int], bytes], limit: int = QUEUE_BYTES) -> None:
        self.fd = fd
        self.note = note  # the line that says how many lines were dropped
        self.limit = limit
        self.queued = 0  # bytes of the lines in the queue
        self.dropped = 0  # lines dropped in all
        self.broken = False  # the reader has gone: what follows is dropped silently
        self._queue: collections.deque[bytes | int | None] = collections.deque()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"pipe writer {fd}", daemon=True)
        self._thread.start()

    def put(self, line: bytes) -> bool:
        """Queue one line (ending with a newline); False when it was dropped."""
        with self._cond:
            if self.queued + len(line) <= self.limit:
                self._queue.append(line)
                self.queued += len(line)
            elif self._queue and type(self._queue[-1]) is int:
                self._queue[-1] += 1
            else:
                self._queue.append(1)
            self._cond.notify()
            kept = self._queue[-1] is line
            self.dropped += not kept
        return kept

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Write out what is queued (for at most `wait` seconds), then end the thread."""
        with self._cond:
            self._queue.append(None)
            self._cond.notify()
        self._thread.join(wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue.popleft()
                if type(item) is bytes:
                    self.queued -= len(item)
            if item is None:
                return
            self._write(self.note(item) if type(item) is int else item)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.broken:
            try:
                view = view[os.write(self.fd, view):]
            except InterruptedError:
                continue
            except OSError:  # EPIPE: mitmproxy has gone, and the store goes with it
                self.broken = True


class PipeHandler(logging.Handler):
    """A logging handler that puts each record, cut to MAX_LOG_CHARS, into a PipeWriter."""

    def __init__(self, writer: PipeWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a bad format string is a bug, told on the next line
            self.handleError(record)
            return
        if len(text) > MAX_LOG_CHARS:
            text = f"{text[:MAX_LOG_CHARS]} [{len(text) - MAX_LOG_CHARS} more characters cut]"
        self.writer.put(text.encode("utf-8", "replace") + b"\n")

    def close(self) -> None:
        self.writer.close()
        super().close()


class JsonLines(logging.Formatter):
    """Each record as its level and one JSON object (`bgfetch_log_format=json`, for log
    shippers): time, level, logger, and the record's `fields` (a state change's, `changelog`)
    or else its message; long strings cut, so that a line stays whole JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **(getattr(record, "fields", None) or {"message": record.getMessage()}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        cut = {key: f"{value[:MAX_FIELD_CHARS]} [{len(value) - MAX_FIELD_CHARS} more characters cut]"
               for key, value in entry.items() if isinstance(value, str) and len(value) > MAX_FIELD_CHARS}
        return f"{record.levelname} {json.dumps({**entry, **cut}, ensure_ascii=False)}"


def log_to_pipe(fd: int, level: int = logging.INFO, json_lines: bool = False) -> PipeHandler:
    """Send this process's logging to `fd` (its standard error) through a PipeWriter: each
    line its level and the message (`%(name)s: %(message)s`), or with `json_lines` one JSON
    object (`JsonLines`); process.py relays them into mitmproxy's log at that level."""
    note = "WARNING store.pipes: {} log lines dropped: mitmproxy did not read them in time\n"
    handler = PipeHandler(PipeWriter(fd, lambda dropped: note.format(dropped).encode()))
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler


class Announcer:
    """The store's announcements to the proxy on `fd` (its standard output), in the lines of
    `protocol`: each URL a record takes, the count of URLs whose records went, and the count
    of announcements that did not fit in the queue (the proxy then reads the database again)."""

    def __init__(self, fd: int) -> None:
        self.writer = PipeWriter(fd, protocol.dropped_line)

    def added(self, url: str) -> None:
        self.writer.put(protocol.added_line(url))

    def removed(self, count: int) -> None:
        if count:
            self.writer.put(protocol.removed_line(count))

    def close(self) -> None:
        self.writer.close()
