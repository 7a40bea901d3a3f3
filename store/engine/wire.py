"""How upstream bytes reach the transfer loop: big reads, and body bytes passed on without a copy.

The store's event loop reads every upstream byte, and whatever it does to a byte it does
holding the GIL, which the SQLite writer thread needs between its calls. Measured on a
2-core machine, fetching 1 GiB from a loopback nginx into the store:

- httpcore reads 64 KiB at a time, asyncio at most 256 KiB; each read costs more in the
  anyio and h11 layers than its bytes do. Reading up to 1 MiB (`READ_BYTES`) made a
  fetch about 1.4x faster than 64 KiB.
- h11's receive buffer copies a body's bytes three times on their way to httpcore
  (appending to its bytearray, a trial slice, the slice it returns), and httpcore copies
  them once more into `bytes`. `BodyBuffer` hands a read that is all body straight on:
  the `bytes` object the socket produced is the one the writer puts into SQLite. That
  took the fetch from about 650 to about 870 MB/s.

`install()` applies both to this process (the store's own, not mitmproxy's); the store calls
it at start-up. `BodyBuffer` keeps h11's behaviour exactly; tests/test_wire.py holds it to
that, operation by operation, against h11's own buffer.
"""

import asyncio.selector_events
import logging

import h11._connection
import h11._receivebuffer
import httpcore

logger = logging.getLogger(__name__)

READ_BYTES = 1024 * 1024


class BodyBuffer(h11._receivebuffer.ReceiveBuffer):
    """h11's receive buffer, except that a `bytes` read into an empty buffer is kept as it is
    (`_whole`) and, when all of it is asked for, returned as it is.

    Every other use reads `_data`, which first appends a kept read to the bytearray: h11's
    own methods then see exactly what they would have seen."""

    def __init__(self) -> None:
        self._whole: bytes | None = None
        super().__init__()

    @property
    def _data(self) -> bytearray:
        if self._whole is not None:
            self._held += self._whole
            self._whole = None
        return self._held

    @_data.setter
    def _data(self, value: bytearray) -> None:
        self._held = value

    def __iadd__(self, byteslike: bytes | bytearray) -> "BodyBuffer":
        if type(byteslike) is bytes and byteslike and self._whole is None and not self._held:
            self._whole = byteslike
        else:
            self._data += byteslike
        return self

    def __len__(self) -> int:
        return len(self._held) if self._whole is None else len(self._whole)

    def maybe_extract_at_most(self, count: int) -> bytes | bytearray | None:
        whole = self._whole
        if whole is not None and count >= len(whole):
            self._whole = None
            self._next_line_search = self._multiple_lines_search = 0
            return whole
        return super().maybe_extract_at_most(count)


def compatible(buffer_class: type = h11._receivebuffer.ReceiveBuffer) -> bool:
    """Whether h11's buffer is the one BodyBuffer was written for: its bytes in `_data`,
    the methods BodyBuffer takes over, nothing that could reach the bytes another way."""
    expected = {"__init__", "__iadd__", "__bool__", "__len__", "__bytes__", "_extract", "maybe_extract_at_most",
                "maybe_extract_next_line", "maybe_extract_lines", "is_next_line_obviously_invalid_request_line"}
    methods = {name for name, value in vars(buffer_class).items() if callable(value)}
    return methods == expected and type(getattr(buffer_class(), "_data", None)) is bytearray


def install() -> None:
    """Big reads and BodyBuffer for every HTTP/1.1 connection this process makes."""
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES
    asyncio.selector_events._SelectorSocketTransport.max_size = READ_BYTES
    if compatible():
        h11._connection.ReceiveBuffer = BodyBuffer
    else:
        logger.warning("h11 %s has a receive buffer this store does not know; body bytes are copied as usual",
                       h11.__version__)
