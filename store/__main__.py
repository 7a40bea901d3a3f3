"""The store process: `python -m store --db PATH ...`, started by the addon beside mitmproxy.

For a fleet, `--db postgresql://... --bodies s3://...`: many store processes (one per proxy)
share the database and the bucket; nothing that cannot be opened (the database, the bucket)
lets it start: it stops with one line naming it.

It reads its secrets from the first line of standard input, as JSON ({"secret": ...,
"token": ..., "upstream_auth": ..., "webhook": ...}, kept out of the process list), and keeps
reading: when the pipe closes (mitmproxy exited, even by `kill -9`), the store stops. One store
owns a database at a time (an exclusive lock beside it). When ready it writes its ports to
standard output, and after them the announcements of `pipes.Announcer` (a fixed-size digest
of each URL a record takes), so the proxy knows which URLs to look up: the lines of
`store.proxyside.protocol`. Its log goes to standard error; neither pipe ever blocks
the store (`pipes`). A --db file that is not a bgfetch store stops it at once, with one line
naming the file, before anything is made beside it.
"""

import argparse
import asyncio
import json
import logging
import signal
import ssl
import sys

import httpx
import prometheus_client
import tornado.httpserver
import tornado.netutil

from store.db import Storage, identity, locations
from store.db.sqlite import SqliteStorage
from store.engine import wire
from store.engine.service import Store
from store.engine.destinations import Destinations, checked_transport, refuse_in_hook
from store.engine.webhook import Webhook
from store.proxyside import options, owner, pipes, protocol
from store.web import forgery
from store.web.app import make_app

logger = logging.getLogger("store")
MAX_HEADER_BYTES = 256 * 1024  # room for a long URL in a query, e.g. /records?url=...


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The store's command line: the flags of the options table (as the addon's `launch` gives
    them), and how long to wait for another store on the database to go."""
    parser = argparse.ArgumentParser(prog="python -m store", description=__doc__.splitlines()[0])
    options.store_arguments(parser)
    parser.add_argument("--lock-wait", type=float, default=10.0, help="seconds to wait for a store whose proxy has gone to go")
    return parser.parse_args(argv)


def listen(app, port: int) -> tuple[tornado.httpserver.HTTPServer, int]:
    sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=300, max_header_size=MAX_HEADER_BYTES)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


def http_client(
    args: argparse.Namespace, destinations: Destinations, upstream_auth: str | None = None,
) -> httpx.AsyncClient:
    """The transfers' client, with mitmproxy's upstream settings: its upstream proxy (and
    `upstream_auth`, "user:password"), `ssl_insecure`, `ssl_verify_upstream_trusted_ca` and
    `ssl_verify_upstream_trusted_confdir`. Every request, each redirect too, goes only where
    `destinations` allows; without an upstream proxy that is checked again after DNS."""
    verify: bool | ssl.SSLContext = True
    if args.insecure:
        verify = False
    elif args.ca_file or args.ca_dir:
        verify = ssl.create_default_context(cafile=args.ca_file, capath=args.ca_dir)
    if args.upstream_proxy:
        auth = tuple(upstream_auth.split(":", 1)) if upstream_auth and ":" in upstream_auth else None
        proxy = httpx.Proxy(args.upstream_proxy, auth=auth)
        transport = httpx.AsyncHTTPTransport(proxy=proxy, verify=verify, trust_env=False)
    else:
        transport = checked_transport(destinations, verify=verify, trust_env=False)
    return httpx.AsyncClient(
        follow_redirects=True,
        timeout=httpx.Timeout(30.0, connect=10.0),
        transport=transport,
        trust_env=False,
        event_hooks={"request": [refuse_in_hook(destinations)]},
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
    hook = secrets.get("webhook") or None
    destinations = Destinations(args.public_host, args.proxy_port, refuse_private=args.refuse_private)
    async with http_client(args, destinations, secrets.get("upstream_auth")) as client:
        store = Store(await open_storage(args, secrets), client, concurrency=args.concurrency,
                      retry_cap=args.retry_cap, quota=args.quota, revalidate=args.revalidate,
                      segments=args.segments)
        webhook = Webhook(hook, args.retry_cap, store.metrics) if hook else None
        servers: list[tornado.httpserver.HTTPServer] = []
        announcer = pipes.Announcer(sys.stdout.fileno())
        try:
            if webhook:
                webhook.start()
                store.events.listeners.append(webhook.listener)
            ports = listen_all(args, store, destinations, secrets, servers)
            sys.stdout.buffer.write(protocol.ready_line(ports["port"], ports["listen_port"]))
            sys.stdout.buffer.flush()
            store.url_listeners.append(announcer.added)
            store.removal_listeners.append(announcer.removed)
            await store.start()
            await stop.wait()
        finally:
            announcer.close()
            transport.close()
            for server in servers:
                server.stop()
            await store.close()
            if webhook:
                await webhook.close()
    logger.info("store stopped")


async def open_storage(args: argparse.Namespace, secrets: dict) -> Storage:
    """SQLite, or for a fleet PostgreSQL with the bodies in object storage (Unopenable, one line)."""
    if not locations.is_postgres(args.db):
        return SqliteStorage.open(args.db)
    from store.db.postgres.storage import PostgresStorage  # psycopg and boto3 load only for a fleet

    return await PostgresStorage.open(
        args.db, secrets.get("db_password"), args.bodies, secrets.get("s3_access_key"),
        secrets.get("s3_secret_key"), args.lease,
    )


def listen_all(args: argparse.Namespace, store: Store, destinations: Destinations, secrets: dict,
               servers: list) -> dict:
    """The internal app on a port of its own, the public one on the listen port if asked; their ports."""
    app_options = {
        "token": secrets.get("token") or None, "public_host": args.public_host,
        "page_secret": forgery.new_secret(),  # the dashboard's, the same on both ports (one page)
        "destinations": destinations, "paused_read_timeout": args.paused_read_timeout,
    }
    internal, port = listen(make_app(store, secret=secrets["secret"], **app_options), 0)
    servers.append(internal)
    listen_port = 0
    if args.listen_port:
        public, listen_port = listen(make_app(store, secret=None, **app_options), args.listen_port)
        servers.append(public)
    destinations.own_ports |= {port, listen_port} - {0}  # before any transfer starts
    return {"port": port, "listen_port": listen_port}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    pipes.log_to_pipe(sys.stderr.fileno(), json_lines=args.log_format == "json")
    logging.getLogger("tornado.access").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line a request; the fetches' own lines say more
    logging.getLogger("botocore").setLevel(logging.WARNING)  # a fleet's S3 client: no line per credential lookup
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # a database gone is told once a try, not per connection
    prometheus_client.disable_created_metrics()  # no `_created` series beside each counter in /metrics
    fleet = locations.is_postgres(args.db)
    try:
        if fleet:
            locations.check_pair(args.db, args.bodies or "")
        else:
            identity.check(args.db)  # before the lock file: nothing is made beside another program's file
    except (identity.NotAStore, ValueError) as exc:
        sys.exit(str(exc))
    try:  # held for the life of the process; a fleet's nodes share their database
        _lock = None if fleet else owner.take(args.db, args.lock_wait)
    except owner.Owned as exc:
        sys.exit(str(exc))
    wire.install()
    secrets = json.loads(sys.stdin.buffer.readline())
    try:
        asyncio.run(serve(args, secrets))
    except locations.Unopenable as exc:
        sys.exit(str(exc))


main()
