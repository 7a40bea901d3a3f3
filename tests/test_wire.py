"""store/engine/wire.py: BodyBuffer behaves exactly like h11's receive buffer, minus the copies of body bytes;
a TLS read hands on every record already decrypted."""

import asyncio.selector_events
import random
import ssl

import anyio
import h11
import h11._connection
import h11._receivebuffer
import httpcore
import pytest
from anyio._backends._asyncio import SocketStream
from anyio.streams.tls import TLSStream

import harness.tls
from store.engine import wire
from store.engine.wire import BodyBuffer

ReceiveBuffer = h11._receivebuffer.ReceiveBuffer


def _plain(value):
    """A method's result in comparable form: buffers as bytes, lists of them as lists of bytes."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list):
        return [bytes(v) for v in value]
    return value


def _random_bytes(rng: random.Random) -> bytes:
    pieces = [b"\r\n", b"\n", b"\r\n\r\n", b"GET / HTTP/1.1", b" ", b"x" * rng.randint(1, 300), b"\x16\x03"]
    return b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))


def _operation(rng: random.Random):
    """One call on a buffer, as (name, args); the same for both buffers under comparison."""
    choice = rng.randrange(8)
    if choice <= 2:
        data = _random_bytes(rng)
        return "__iadd__", (bytearray(data) if rng.random() < 0.2 else data,)
    if choice == 3:
        return "maybe_extract_at_most", (rng.choice([0, 1, 5, 64, 10_000]),)
    return rng.choice(["maybe_extract_next_line", "maybe_extract_lines", "__len__", "__bool__", "__bytes__",
                       "is_next_line_obviously_invalid_request_line"]), ()


def test_every_operation_answers_as_h11s_own_buffer_does():
    rng = random.Random(8)
    for _ in range(2000):
        ours, theirs = BodyBuffer(), ReceiveBuffer()
        for step in range(rng.randint(1, 40)):
            name, args = _operation(rng)
            got, expected = getattr(ours, name)(*args), getattr(theirs, name)(*args)
            if name != "__iadd__":
                assert _plain(got) == _plain(expected), (step, name, args)
            # bytes(ours) would append a kept read to the bytearray: look without touching
            assert len(ours) == len(theirs) and bytes(ours._held) + (ours._whole or b"") == bytes(theirs._data)


RESPONSES = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nETag: \"a\"\r\n\r\nhello world"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 3-5/6\r\nContent-Length: 3\r\n\r\nlo!"
)


def _events(buffer_class: type, reads: list[bytes]) -> list:
    """What a client h11 connection makes of three pipelined responses delivered in `reads`."""
    original = h11._connection.ReceiveBuffer
    h11._connection.ReceiveBuffer = buffer_class
    try:
        conn = h11.Connection(h11.CLIENT)
    finally:
        h11._connection.ReceiveBuffer = original
    events, pending = [], list(reads)
    for _ in range(3):
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "origin")]))
        conn.send(h11.EndOfMessage())
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(pending.pop(0) if pending else b"")
                continue
            events.append((type(event).__name__, _plain(getattr(event, "data", None)),
                           getattr(event, "status_code", None), list(getattr(event, "headers", []))))
            if type(event) is h11.EndOfMessage:
                break
        conn.start_next_cycle()
    return events


def test_h11_parses_the_same_events_with_it_however_the_bytes_are_split():
    rng = random.Random(11)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(RESPONSES)), rng.randint(0, 12)))
        reads = [RESPONSES[a:b] for a, b in zip([0, *cuts], [*cuts, len(RESPONSES)])]
        assert _events(BodyBuffer, reads) == _events(ReceiveBuffer, reads)


def test_a_read_that_is_all_body_reaches_httpcore_as_the_same_object():
    h11._connection.ReceiveBuffer, original = BodyBuffer, h11._connection.ReceiveBuffer
    try:
        conn = h11.Connection(h11.CLIENT)
    finally:
        h11._connection.ReceiveBuffer = original
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "origin")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"a" * 1000)
    assert type(conn.next_event()) is h11.Response
    assert conn.next_event().data == b"a" * 1000  # the part of the first read after the headers
    body = bytes(range(256)) * 3900
    conn.receive_data(body)
    data = conn.next_event().data
    assert data is body and bytes(data) is body  # httpcore's bytes(event.data) copies nothing either


def test_compatible_knows_h11s_buffer_and_refuses_another():
    assert wire.compatible()

    class Extra(ReceiveBuffer):
        def peek(self) -> bytes:  # a way to the bytes that BodyBuffer would not settle first
            return bytes(self._data)

    class Elsewhere:
        def __init__(self) -> None:
            self._bytes = bytearray()

    assert not wire.compatible(Extra)
    assert not wire.compatible(Elsewhere)


def test_install_sets_the_read_size_and_the_buffer(monkeypatch):
    for owner, name in ((httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES"),
                        (asyncio.selector_events._SelectorSocketTransport, "max_size"),
                        (h11._connection, "ReceiveBuffer"), (TLSStream, "receive"),
                        (SocketStream.receive, "__defaults__")):
        monkeypatch.setattr(owner, name, getattr(owner, name))  # restored after the test
    wire.install()
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == wire.READ_BYTES
    assert asyncio.selector_events._SelectorSocketTransport.max_size == wire.READ_BYTES
    assert h11._connection.ReceiveBuffer is BodyBuffer
    assert TLSStream.receive is wire.tls_receive and SocketStream.receive.__defaults__ == (wire.READ_BYTES,)


def test_a_tls_read_hands_on_every_record_already_decrypted(tmp_path):
    """Over a real TLS connection on loopback, 16 KiB records: one read gives many of them."""
    harness.tls.self_signed(tmp_path / "cert.pem", tmp_path / "key.pem")
    served = random.Random(5).randbytes(4 << 20)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_side = ssl.create_default_context(cafile=tmp_path / "cert.pem")

    async def send(reader, writer) -> None:
        writer.write(served)
        await writer.drain()
        writer.close()

    async def scenario() -> list[bytes]:
        server = await asyncio.start_server(send, "127.0.0.1", 0, ssl=server_side)
        port = server.sockets[0].getsockname()[1]
        reads = []
        async with server, await anyio.connect_tcp("127.0.0.1", port, tls=True, ssl_context=client_side) as stream:
            while sum(map(len, reads)) < len(served):
                await asyncio.sleep(0.01)  # let records pile up, as they do behind a busy loop
                reads.append(await wire.tls_receive(stream, wire.READ_BYTES))
        return reads

    reads = asyncio.run(scenario())
    assert b"".join(reads) == served
    assert max(map(len, reads)) > 16 * 1024 and len(reads) < len(served) // (16 * 1024)


@pytest.mark.parametrize("count", [0, 3, 4, 100])
def test_asking_for_part_of_a_kept_read_leaves_the_rest(count):
    buffer = BodyBuffer()
    buffer += b"abcd"
    out = buffer.maybe_extract_at_most(count)
    assert (bytes(out) if out is not None else None) == (b"abcd"[:count] or None)
    assert bytes(buffer) == b"abcd"[count:]
