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
- Over TLS, anyio cut each socket read into 64 KiB pieces (copying what was left each
  time: with 1 MiB reads that made the fetch slower, 138 MB/s against 260) and its TLS
  stream returned one TLS record, 16 KiB, per read. `tls_receive` hands on everything the
  reads already decrypted, up to what was asked for, and the socket's reads go whole into
  the TLS layer: 490 MB/s, about a MiB per read (256 MiB from nginx over TLS, httpx alone).

`install()` applies them to this process (the store's own, not mitmproxy's); the store calls
it at start-up. `BodyBuffer` keeps h11's behaviour exactly; tests/test_wire.py holds it to
that, operation by operation, against h11's own buffer.
"""

import asyncio.selector_events
import inspect
import logging
import ssl

import anyio._backends._asyncio
import h11._connection
import h11._receivebuffer
import httpcore
from anyio import EndOfStream
from anyio.streams.tls import TLSStream

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


async def tls_receive(self: TLSStream, max_bytes: int = 65536) -> bytes:
    """anyio's `TLSStream.receive`, but with every record already decrypted, up to `max_bytes`."""
    data = await self._call_sslobject_method(self._ssl_object.read, max_bytes)
    if not data:
        raise EndOfStream
    pieces, got = [data], len(data)
    while got < max_bytes and self._read_bio.pending:
        try:
            more = self._ssl_object.read(max_bytes - got)
        except ssl.SSLError:  # a record not whole yet, or the end: the next receive tells
            break
        if not more:
            break
        pieces.append(more)
        got += len(more)
    return data if len(pieces) == 1 else b"".join(pieces)


def tls_compatible() -> bool:
    """Whether anyio's TLS stream and socket stream are the ones `tls_receive` was written for."""
    receive = inspect.signature(anyio._backends._asyncio.SocketStream.receive).parameters.get("max_bytes")
    return (receive is not None and receive.default in (65536, READ_BYTES)
            and callable(getattr(TLSStream, "_call_sslobject_method", None))
            and {"_ssl_object", "_read_bio"} <= set(TLSStream.__dataclass_fields__))


def install() -> None:
    """Big reads and BodyBuffer for every HTTP/1.1 connection this process makes, and whole reads
    over TLS."""
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = READ_BYTES
    asyncio.selector_events._SelectorSocketTransport.max_size = READ_BYTES
    if compatible():
        h11._connection.ReceiveBuffer = BodyBuffer
    else:
        logger.warning("h11 %s has a receive buffer this store does not know; body bytes are copied as usual",
                       h11.__version__)
    if tls_compatible():
        anyio._backends._asyncio.SocketStream.receive.__defaults__ = (READ_BYTES,)
        TLSStream.receive = tls_receive
    else:
        logger.warning("anyio's TLS stream is not the one this store knows; TLS bodies come a record at a time")
