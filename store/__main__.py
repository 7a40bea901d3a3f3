"""The store process: `python -m store --db PATH ...`, started by the addon beside mitmproxy.

It reads its secrets from the first line of standard input, as JSON
({"secret": ..., "token": ...}, kept out of the process list), and keeps reading: when
the pipe closes (mitmproxy exited, even by `kill -9`), the store stops. One store owns a
database at a time (an exclusive lock beside it). When ready it prints one JSON line to
standard output: {"port": <internal port>, "listen_port": <public port or 0>}.
"""

import argparse
import asyncio
import fcntl
import json
import logging
import signal
import sys

import httpx
import tornado.httpserver
import tornado.netutil

from .app import make_app
from .service import Store

logger = logging.getLogger("store")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--listen-port", type=int, default=0)
    parser.add_argument("--public-host", default="bgfetch.internal")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--retry-cap", type=float, default=30.0)
    parser.add_argument("--upstream-proxy", default=None)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--ca-file", default=None)
    return parser.parse_args(argv)


def lock(db: str):
    """Hold an exclusive lock beside the database for the life of the process."""
    handle = open(db + ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"another bgfetch store is running on {db}; stop it first")
    return handle


def listen(app, port: int) -> tuple[tornado.httpserver.HTTPServer, int]:
    sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=300)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


def http_client(args: argparse.Namespace) -> httpx.AsyncClient:
    verify: bool | str = False if args.insecure else (args.ca_file or True)
    return httpx.AsyncClient(
        follow_redirects=True,
        timeout=httpx.Timeout(30.0, connect=10.0),
        proxy=args.upstream_proxy,
        verify=verify,
        trust_env=False,
    )


class ParentWatch(asyncio.Protocol):
    """Sets `stop` when standard input reaches its end: the parent has gone."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def serve(args: argparse.Namespace, secrets: dict) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    transport, _ = await loop.connect_read_pipe(lambda: ParentWatch(stop), sys.stdin)
    secret, token = secrets["secret"], secrets.get("token") or None
    async with http_client(args) as client:
        store = Store(args.db, client, concurrency=args.concurrency, retry_cap=args.retry_cap)
        internal, port = listen(make_app(store, secret=secret, token=token, public_host=args.public_host), 0)
        servers = [internal]
        listen_port = 0
        if args.listen_port:
            public, listen_port = listen(
                make_app(store, secret=None, token=token, public_host=args.public_host), args.listen_port
            )
            servers.append(public)
        print(json.dumps({"port": port, "listen_port": listen_port}), flush=True)
        await store.resume_all()
        await stop.wait()
        transport.close()
        for server in servers:
            server.stop()
        await store.close()
    logger.info("store stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    _lock = lock(args.db)
    secrets = json.loads(sys.stdin.buffer.readline())
    asyncio.run(serve(args, secrets))


main()
