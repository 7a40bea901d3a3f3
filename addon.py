"""bgfetch: the browser's Background Fetch API for every HTTP client, as a mitmproxy addon.

`mitmdump -s addon.py`. A request with a `Background-Fetch` header, or matched by a rule of
`bgfetch_rules`, is handed to the store process, which finishes the transfer whatever the
client does; later requests for a stored URL are answered from the store. This module is
glue: options, hooks and commands; the work is in `rules/` and `store/`.
"""

import asyncio
import json
import logging
import os
import secrets

from mitmproxy import ctx, exceptions, http

import rules
from rules.config import parse_size
from store import headers as fields
from store.lookup import Lookup
from store.process import StoreError, StoreProcess

logger = logging.getLogger("bgfetch")

HEADER = "Background-Fetch"
RULES_POLL_SECONDS = 1.0
STORE_OPTIONS = {
    "bgfetch_db", "bgfetch_host", "bgfetch_listen_port", "bgfetch_concurrency", "bgfetch_quota",
    "bgfetch_webhook", "bgfetch_token", "bgfetch_retry_cap",
}


class BackgroundFetch:
    def __init__(self) -> None:
        self.rules = rules.RuleSet([])
        self.rules_stamp: tuple | None = None
        self.secret = secrets.token_urlsafe(32)
        self.process: StoreProcess | None = None
        self.lookup: Lookup | None = None
        self.port = 0
        self.tasks: set[asyncio.Task] = set()

    def load(self, loader) -> None:
        loader.add_option("bgfetch_db", str, "", "The SQLite store (default: <confdir>/bgfetch.sqlite3).")
        loader.add_option("bgfetch_rules", str, "", "YAML file of rules that make requests background fetches.")
        loader.add_option("bgfetch_host", str, "bgfetch.internal", "Host name that serves the dashboard and API through the proxy.")
        loader.add_option("bgfetch_listen_port", int, 0, "Also serve the dashboard and API on 127.0.0.1 at this port (0: off).")
        loader.add_option("bgfetch_concurrency", int, 4, "Background fetches transferring at once; the rest wait as pending.")
        loader.add_option("bgfetch_quota", str, "", "Most bytes the store may hold, e.g. 20GB (empty: no limit).")
        loader.add_option("bgfetch_webhook", str, "", "URL that receives each background fetch event as a JSON POST.")
        loader.add_option("bgfetch_token", str, "", "When set, the API requires Authorization: Bearer <token>.")
        loader.add_option("bgfetch_retry_cap", int, 30, "Longest wait, in seconds, between retries of a paused fetch.")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "bgfetch_rules" in updated:
            try:
                self._load_rules(opts.bgfetch_rules)
            except rules.RulesError as exc:
                raise exceptions.OptionsError(str(exc)) from exc
        if opts.bgfetch_concurrency < 1:
            raise exceptions.OptionsError("bgfetch_concurrency must be 1 or more")
        if not 0 <= opts.bgfetch_listen_port < 65536:
            raise exceptions.OptionsError("bgfetch_listen_port must be a port number, or 0 for none")
        if opts.bgfetch_retry_cap < 1:
            raise exceptions.OptionsError("bgfetch_retry_cap must be 1 second or more")
        if opts.bgfetch_quota:
            try:
                parse_size(opts.bgfetch_quota)
            except ValueError as exc:
                raise exceptions.OptionsError(f"bgfetch_quota: {exc}") from exc
        if self.process and updated & STORE_OPTIONS:
            self._spawn(self._restart_store())

    async def running(self) -> None:
        ctx.options.update(connection_strategy="lazy")
        await self._start_store()
        self._spawn(self._watch_rules())

    async def done(self) -> None:
        await self._stop_store()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- hooks -------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        request = flow.request
        value = request.headers.pop(HEADER, None)
        if request.pretty_host == ctx.options.bgfetch_host:
            self._to_store(flow, request.path)
            return
        try:
            given = rules.parse_header(value) if value is not None else None
        except rules.HeaderError as exc:
            flow.response = http.Response.make(
                400, json.dumps(exc.problem()), {"Content-Type": "application/problem+json"}
            )
            return
        matched = self.rules.match(request.method, request.url, flow)
        if given is not None or matched is not None:
            spec = rules.make_spec(request.method, request.url, matched or {}, given or {})
            self._to_store(flow, "/_bgfetch/fetch", {fields.SPEC: spec.to_json(), fields.URL: request.url})
        elif request.method in ("GET", "HEAD") and self.lookup:
            record = self.lookup.find(request.url, fields.credential_key(request.headers.items(multi=True)))
            if record is not None:
                self._to_store(flow, "/_bgfetch/stored", {fields.RECORD: str(record)})

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if "bgfetch" in flow.metadata and flow.response:
            flow.response.stream = True

    # -- rules -------------------------------------------------------------------

    def _load_rules(self, path: str) -> None:
        """Load the rules file (raises RulesError, leaving the rules in force as they were)."""
        stamp = _stamp(path) if path else None
        self.rules = rules.load_file(path) if path else rules.RuleSet([])
        self.rules_stamp = stamp
        if path:
            logger.info("bgfetch: %d rules from %s: %s", len(self.rules), path, ", ".join(self.rules.names))

    async def _watch_rules(self) -> None:
        """Reload the rules file when it changes; a bad edit keeps the previous rules."""
        while True:
            await asyncio.sleep(RULES_POLL_SECONDS)
            path = ctx.options.bgfetch_rules
            if path and _stamp(path) != self.rules_stamp:
                try:
                    self._load_rules(path)
                except rules.RulesError as exc:
                    self.rules_stamp = _stamp(path)
                    logger.error("bgfetch: %s; the previous rules stay in force", exc)

    # -- the store process ---------------------------------------------------

    def _to_store(self, flow: http.HTTPFlow, path: str, extra: dict[str, str] | None = None) -> None:
        """Point the flow at the store's internal port, with the secret and the fetch details."""
        if not self.port:
            flow.response = http.Response.make(
                503,
                json.dumps({"title": "bgfetch store not running", "status": 503,
                            "detail": "The bgfetch store process is not running; see mitmproxy's log."}),
                {"Content-Type": "application/problem+json"},
            )
            return
        request = flow.request
        flow.metadata["bgfetch"] = request.url
        for name in [n for n in request.headers if n.lower().startswith(fields.INTERNAL_PREFIX)]:
            del request.headers[name]
        request.scheme, request.host, request.port, request.path = "http", "127.0.0.1", self.port, path
        request.headers[fields.SECRET] = self.secret
        for name, value in (extra or {}).items():
            request.headers[name] = value

    def _store_args(self) -> list[str]:
        opts = ctx.options
        args = [
            "--db", self.db_path(),
            "--listen-port", str(opts.bgfetch_listen_port),
            "--public-host", opts.bgfetch_host,
            "--concurrency", str(opts.bgfetch_concurrency),
            "--retry-cap", str(opts.bgfetch_retry_cap),
        ]
        upstream = next((m.split(":", 1)[1] for m in opts.mode if m.startswith("upstream:")), None)
        if upstream:
            args += ["--upstream-proxy", upstream]
        if opts.ssl_insecure:
            args.append("--insecure")
        if opts.ssl_verify_upstream_trusted_ca:
            args += ["--ca-file", opts.ssl_verify_upstream_trusted_ca]
        return args

    def db_path(self) -> str:
        if ctx.options.bgfetch_db:
            return os.path.expanduser(ctx.options.bgfetch_db)
        confdir = os.path.expanduser(ctx.options.confdir)
        os.makedirs(confdir, exist_ok=True)
        return os.path.join(confdir, "bgfetch.sqlite3")

    async def _start_store(self) -> None:
        self.process = StoreProcess(self._store_args(), {"secret": self.secret, "token": ctx.options.bgfetch_token})
        try:
            ports = await self.process.start()
        except StoreError as exc:
            logger.error("%s", exc)
            self.process = None
            return
        self.port = ports["port"]
        self.lookup = Lookup(self.db_path())
        where = f" and http://127.0.0.1:{ports['listen_port']}/" if ports["listen_port"] else ""
        logger.info("bgfetch: store %s, dashboard at http://%s/%s", self.db_path(), ctx.options.bgfetch_host, where)

    async def _stop_store(self) -> None:
        self.port = 0
        if self.lookup:
            self.lookup.close()
            self.lookup = None
        if self.process:
            await self.process.stop()
            self.process = None

    async def _restart_store(self) -> None:
        await self._stop_store()
        await self._start_store()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def _stamp(path: str) -> tuple | None:
    """What tells a file's edits apart: modification time and size (None if it is gone)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


addons = [BackgroundFetch()]
