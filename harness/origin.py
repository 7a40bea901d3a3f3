"""A real HTTP(S) origin on 127.0.0.1 that misbehaves on demand, for bgfetch's end-to-end tests.

    with Origin() as origin:
        origin.add("/big.bin", size=8 << 20)
        origin.behave("/big.bin", cut_after=1 << 20, cuts=1, throttle=4 << 20)
        ...  # fetch origin.url("/big.bin") through the proxy
        assert origin.count("/big.bin") == 2
        origin.stop()   # "the origin goes down": listener and open connections closed at once
        origin.start()  # "it comes back" on the same port

Files are served for any method (HEAD without a body); `Range` (one range) and `If-Range` are
honoured for GET, and `If-None-Match`/`If-Modified-Since` (a `304`) for GET and HEAD. A file
may carry header fields of its own (`Cache-Control`, `Vary`, `Expires`...). The server runs in background threads, one per connection, with HTTP/1.1
keep-alive. Run it by hand: `python harness/origin.py --port 8000 --size 64MiB /big.bin`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import email.message
import email.utils
import hashlib
import ipaddress
import re
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

# A loopback address where nothing listens, for fetches that must wait paused: port 2 is below
# 1024 (no test binds it) and, unlike port 1, not one of the Fetch standard's bad ports, which
# bgfetch refuses outright.
NOTHING_LISTENS = "http://127.0.0.1:2"
THROTTLED_PIECE = 16 << 10  # bytes written between two throttle pauses
PIECE = 256 << 10  # bytes written per send() when not throttled


@dataclass(frozen=True)
class File:
    """One version of a served file."""

    data: bytes
    version: int
    mtime: int  # Last-Modified, seconds since the epoch
    content_type: str
    has_etag: bool
    has_last_modified: bool
    sha256: str
    headers: tuple[tuple[str, str], ...] = ()  # sent with it (and with a 304 for it)

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    @property
    def last_modified(self) -> str:
        return email.utils.formatdate(self.mtime, usegmt=True)


@dataclass(frozen=True)
class Behaviour:
    """How the origin misbehaves for one path; the defaults are a well-behaved origin."""

    throttle: float | None = None  # body bytes per second
    cut_after: int | None = None  # body bytes sent before the connection is closed
    cuts: int | None = None  # responses still to cut; None: every response
    ignore_range: bool = False  # always 200 with the whole body
    status: int | None = None  # answer with this status and a small body
    no_validators: bool = False  # no ETag, no Last-Modified (and If-Range never matches)
    delay: float = 0.0  # seconds to wait before the response headers
    redirect_to: str | None = None  # 302 to this path, or to this absolute URL
    echo: bool = False  # 200 with the request's own body (an upload's answer)


@dataclass(frozen=True)
class RequestRecord:
    """A request the origin has seen."""

    method: str
    target: str  # the request-target as sent, query included
    path: str  # the target without its query
    headers: email.message.Message  # case-insensitive: headers["range"]
    body: bytes
    time: float  # time.monotonic() when the headers were read


class Unsatisfiable(Exception):
    """A Range that selects no byte of the body (answered with 416)."""


def pseudo_random_bytes(path: str, version: int, size: int) -> bytes:
    """Deterministic bytes for a path and version: the same in every run and on every machine."""
    return hashlib.shake_256(f"{path}#{version}".encode()).digest(size)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (start, end exclusive) a `Range` header selects, or None to send the whole body.

    Only one `bytes` range is supported; anything else is ignored, as RFC 9110 allows.
    """
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header, re.IGNORECASE)
    if not match or match[1] == match[2] == "":
        return None
    first, last = match[1], match[2]
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(int(last) if last else size, size - 1) + 1


def if_range_matches(value: str, etag: str | None, last_modified: int | None) -> bool:
    """Whether an `If-Range` value names this version: strong ETag comparison, or the exact date."""
    if value.startswith(('"', "W/")):
        return etag is not None and value == etag
    try:
        date = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return last_modified is not None and date.timestamp() == last_modified


def not_modified(headers: email.message.Message, etag: str | None, last_modified: int | None) -> bool:
    """Whether a GET's `If-None-Match` (weak comparison; it wins) or `If-Modified-Since` says the
    client holds this version (RFC 9110 §13.1.2, §13.1.3)."""
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return etag is not None and ("*" in tags or etag.removeprefix("W/") in tags)
    since = headers.get("If-Modified-Since")
    if since is None or last_modified is None:
        return False
    try:
        return last_modified <= email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and localhost; return (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bgfetch test origin")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=False,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "origin-cert.pem", directory / "origin-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Origin:
    """Files, per-path behaviour and accounting, and a server that can go down and come back."""

    host = "127.0.0.1"

    def __init__(self, port: int = 0, tls: bool = False) -> None:
        self.port = port  # 0 until the first start() picks a free one
        self.cert_path: Path | None = None
        self._tls_context: ssl.SSLContext | None = None
        if tls:
            directory = Path(tempfile.mkdtemp(prefix="bgfetch-origin-"))
            weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)
            self.cert_path, key_path = make_certificate(directory)
            self._tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls_context.load_cert_chain(self.cert_path, key_path)
        self._lock = threading.Lock()
        self._files: dict[str, File] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self._requests: list[RequestRecord] = []
        self._sent: dict[str, int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Origin:
        """Listen (again) on the origin's port, the same one every time."""
        if self._server is not None:
            raise RuntimeError("the origin is already running")
        self._server = _Server(self, self._tls_context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"origin:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down at once: stop listening and drop every open connection, mid-body or idle."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Origin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url(self, path: str) -> str:
        if not self.port:
            raise RuntimeError("start() the origin first: it has no port yet")
        scheme = "https" if self._tls_context else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"

    # -- files ----------------------------------------------------------------------------------

    def add(
        self,
        path: str,
        data: bytes | None = None,
        size: int | None = None,
        etag: bool = True,
        last_modified: bool = True,
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        modified_ago: int = 86400,
    ) -> None:
        """Serve `data`, or `size` pseudo-random bytes made from the path, at `path`, with
        these extra `headers`, last modified `modified_ago` seconds ago (by default a day, like
        most files an origin serves: a cache takes it as fresh for a tenth of that, RFC 9111
        §4.2.2). `change` makes a version modified now."""
        if (data is None) == (size is None):
            raise ValueError("give either data or size")
        if data is None:
            data = pseudo_random_bytes(path, 0, size)
        file = File(
            data=data,
            version=0,
            mtime=int(time.time()) - modified_ago,
            content_type=content_type,
            has_etag=etag,
            has_last_modified=last_modified,
            sha256=hashlib.sha256(data).hexdigest(),
            headers=tuple((headers or {}).items()),
        )
        with self._lock:
            self._files[path] = file

    def change(self, path: str, data: bytes | None = None) -> None:
        """Publish a new version: new bytes (same size unless given), ETag and Last-Modified."""
        with self._lock:
            old = self._files[path]
            version = old.version + 1
            if data is None:
                data = pseudo_random_bytes(path, version, len(old.data))
            self._files[path] = dataclasses.replace(
                old,
                data=data,
                version=version,
                mtime=max(int(time.time()), old.mtime + 1),
                sha256=hashlib.sha256(data).hexdigest(),
            )

    def data(self, path: str) -> bytes:
        with self._lock:
            return self._files[path].data

    def sha256(self, path: str) -> str:
        """Hex SHA-256 of the current version."""
        with self._lock:
            return self._files[path].sha256

    def etag(self, path: str) -> str:
        with self._lock:
            return self._files[path].etag

    def last_modified(self, path: str) -> str:
        """The Last-Modified of the current version, as sent."""
        with self._lock:
            return self._files[path].last_modified

    # -- misbehaviour -----------------------------------------------------------------------

    def behave(self, path: str, **knobs: object) -> None:
        """Set some knobs of `Behaviour` for a path (the others keep their value).

        `cuts` counts from this call: setting `cut_after` without `cuts` cuts every response.
        """
        if "cut_after" in knobs:
            knobs.setdefault("cuts", None)
        with self._lock:
            self._behaviours[path] = dataclasses.replace(self.behaviour(path), **knobs)

    def behaviour(self, path: str) -> Behaviour:
        return self._behaviours.get(path, Behaviour())

    def reset_behaviour(self, path: str) -> None:
        with self._lock:
            self._behaviours.pop(path, None)

    # -- accounting -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request seen so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str, method: str | None = None) -> int:
        """How many requests for `path` (of `method`, if given) the origin has seen."""
        return sum(1 for r in self.requests if r.path == path and method in (None, r.method))

    def body_bytes_sent(self, path: str | None = None) -> int:
        """Body bytes written to sockets, cut responses included; for one path or all."""
        with self._lock:
            return sum(self._sent.values()) if path is None else self._sent.get(path, 0)

    # -- used by the request handler --------------------------------------------------------

    def _record(self, request: RequestRecord) -> tuple[Behaviour, File | None]:
        with self._lock:
            self._requests.append(request)
            return self.behaviour(request.path), self._files.get(request.path)

    def _take_cut(self, path: str, length: int) -> int | None:
        """Where to cut a body of `length` bytes for `path`, or None to send it whole."""
        with self._lock:
            behaviour = self.behaviour(path)
            if behaviour.cut_after is None or behaviour.cut_after >= length or behaviour.cuts == 0:
                return None
            if behaviour.cuts is not None:
                self._behaviours[path] = dataclasses.replace(behaviour, cuts=behaviour.cuts - 1)
            return behaviour.cut_after

    def _count_sent(self, path: str, n: int) -> None:
        with self._lock:
            self._sent[path] = self._sent.get(path, 0) + n


class _Server(ThreadingHTTPServer):
    """One listening period of an Origin; keeps its connections so that it can drop them."""

    daemon_threads = False  # server_close() joins the connection threads

    def __init__(self, origin: Origin, tls_context: ssl.SSLContext | None) -> None:
        self.origin = origin
        self.tls_context = tls_context
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__((origin.host, origin.port), _Handler)

    def finish_request(self, request: socket.socket, client_address: tuple) -> None:
        """Serve one connection in its own thread, TLS handshake included; quiet when it breaks."""
        with self._lock:
            if self.stopping.is_set():
                request.close()
                return
            if self.tls_context:
                request = self.tls_context.wrap_socket(
                    request, server_side=True, do_handshake_on_connect=False
                )
            self._connections.add(request)
        try:
            if self.tls_context:
                request.do_handshake()
            self.RequestHandlerClass(request, client_address, self)
        except OSError:  # the client went away, or the origin was stopped
            pass
        finally:
            with self._lock:  # the TLS socket is not the one process_request_thread will close
                self._connections.discard(request)
                self.shutdown_request(request)

    def drop_connections(self) -> None:
        with self._lock:
            self.stopping.set()
            for connection in self._connections:
                try:  # socket.socket's own shutdown: SSLSocket's would drop its TLS state
                    socket.socket.shutdown(connection, socket.SHUT_RDWR)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    """Answers one request after another on a connection, as the origin's behaviour says."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: `Origin.requests` is the log."""

    def serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        record = RequestRecord(self.command, self.path, path, self.headers, body, time.monotonic())
        behaviour, file = self.server.origin._record(record)
        if behaviour.delay and self.server.stopping.wait(behaviour.delay):
            self.close_connection = True
        elif behaviour.redirect_to:
            target = behaviour.redirect_to
            location = target if "://" in target else self.server.origin.url(target)
            self.reply_status(HTTPStatus.FOUND, {"Location": location})
        elif behaviour.status:
            self.reply_status(behaviour.status)
        elif behaviour.echo:
            self.reply_echo(body)
        elif file is None:
            self.reply_status(HTTPStatus.NOT_FOUND)
        else:
            self.reply_file(path, file, behaviour)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = serve

    def reply_status(self, status: int, headers: dict[str, str] | None = None) -> None:
        """A response with a short text body naming the status (none for 204 and 304)."""
        phrase = self.responses.get(status, ("",))[0]
        body = b"" if status in (204, 304) else f"{status} {phrase}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_echo(self, body: bytes) -> None:
        """200 with the request's body, as text."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_file(self, path: str, file: File, behaviour: Behaviour) -> None:
        validators = not behaviour.no_validators
        etag = file.etag if validators and file.has_etag else None
        mtime = file.mtime if validators and file.has_last_modified else None
        size = len(file.data)
        if self.command in ("GET", "HEAD") and not_modified(self.headers, etag, mtime):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_validators(file, etag, mtime)
            self.end_headers()
            return
        selected = None
        if self.command == "GET" and not behaviour.ignore_range and "Range" in self.headers:
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range_matches(if_range, etag, mtime):
                try:
                    selected = byte_range(self.headers["Range"], size)
                except Unsatisfiable:
                    unsatisfiable = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
                    self.reply_status(unsatisfiable, {"Content-Range": f"bytes */{size}"})
                    return
        start, end = selected or (0, size)
        self.send_response(HTTPStatus.PARTIAL_CONTENT if selected else HTTPStatus.OK)
        self.send_header("Content-Type", file.content_type)
        self.send_header("Content-Length", str(end - start))
        if selected:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if not behaviour.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        self.send_validators(file, etag, mtime)
        self.end_headers()
        if self.command != "HEAD":
            self.send_body(path, memoryview(file.data)[start:end], behaviour.throttle)

    def send_validators(self, file: File, etag: str | None, mtime: int | None) -> None:
        """ETag, Last-Modified and the file's own header fields: what a 200 and a 304 share."""
        if etag:
            self.send_header("ETag", etag)
        if mtime is not None:
            self.send_header("Last-Modified", file.last_modified)
        for name, value in file.headers:
            self.send_header(name, value)

    def send_body(self, path: str, body: memoryview, throttle: float | None) -> None:
        """Write the body, paced by `throttle`, cut short when the behaviour says so."""
        cut = self.server.origin._take_cut(path, len(body))
        if cut is not None:
            body = body[:cut]
            self.close_connection = True  # after the bytes sent: the announced length is never met
        size = THROTTLED_PIECE if throttle else PIECE
        began = time.monotonic()
        sent = 0
        while sent < len(body):
            if throttle and self.server.stopping.wait(began + sent / throttle - time.monotonic()):
                self.close_connection = True
                return
            sent += self.send_piece(path, body[sent : sent + size])

    def send_piece(self, path: str, piece: memoryview) -> int:
        """send() once; counted first, so that a client never holds bytes not yet counted."""
        self.server.origin._count_sent(path, len(piece))
        written = 0
        try:
            written = self.connection.send(piece)
        finally:
            if written != len(piece):
                self.server.origin._count_sent(path, written - len(piece))
        return written


def parse_size(text: str) -> int:
    """'64MiB' -> 67108864; KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024, bare numbers bytes."""
    match = re.fullmatch(r"(\d+)\s*(|B|[KMG]i?B?)", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    unit = match[2].upper().removesuffix("B")
    power = " KMG".index(unit[0]) if unit else 0
    base = 1024 if unit.endswith("I") else 1000
    return int(match[1]) * base**power


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve pseudo-random files till Ctrl-C/SIGTERM.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a path to serve, like /big.bin")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--size", type=parse_size, default="64MiB", help="e.g. 64MiB, 1GB")
    parser.add_argument("--tls", action="store_true", help="HTTPS with a self-signed certificate")
    args = parser.parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started in the background
        signal.signal(signum, signal.default_int_handler)
    with Origin(port=args.port, tls=args.tls) as origin:
        for path in args.paths:
            origin.add(path, size=args.size)
            print(origin.url(path), "sha256", origin.sha256(path), flush=True)
        if origin.cert_path:
            print("certificate:", origin.cert_path, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
