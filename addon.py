"""bgfetch: the browser's Background Fetch API for every HTTP client, as a mitmproxy addon.

`mitmdump -s addon.py`. A request with a `Background-Fetch` header, or matched by a rule of
`bgfetch_rules`, is handed to the store process, which finishes the transfer whatever the
client does; later requests for a stored URL are answered from the store. This module is
glue: options, hooks and commands; the work is in `rules/` and `store/`.
"""

import asyncio
import contextlib
import inspect
import json
import logging
import os
import secrets
import sys
import urllib.parse
from collections.abc import Awaitable, Sequence

from mitmproxy import command, connection, ctx, exceptions, http
from mitmproxy.proxy import mode_specs
from mitmproxy.utils.human import pretty_size

import rules
from store.proxyside import answers, keeper, launch, options, owner, protocol
from vocabulary import HEADER, credential_key, parse_size

logger = logging.getLogger("bgfetch")

RULES_POLL_SECONDS = 1.0


class BackgroundFetch:
    """The addon: its options, the hooks that hand flows to the store, and the commands."""

    def __init__(self) -> None:
        self.rules = rules.RuleSet([])
        self.rules_stamp: tuple | None = None
        self.secret = secrets.token_urlsafe(32)
        self.keeper = keeper.StoreKeeper(self._launch, _stop_mitmproxy)
        self.tasks: set[asyncio.Task] = set()
        self.is_running = False

    def load(self, loader) -> None:
        for option in options.OPTIONS:
            if option.type is not None:  # the others are mitmproxy's own
                loader.add_option(option.name, option.type, option.default, option.help, choices=option.choices or None)

    def configure(self, updated: set[str]) -> None:
        """Check the options that changed; a change of one the store reads starts it again.

        A bad value is an OptionsError (mitmproxy keeps the previous value), except when
        mitmproxy starts (its errorcheck is there and the addon is not running yet): mitmproxy
        would log it under a traceback and listen before it stops, so it stops here, saying
        why in one line on standard error."""
        try:
            self._configure(updated)
        except (rules.RulesError, ValueError, owner.Owned) as exc:
            if not self.is_running and ctx.master.addons.get("errorcheck"):
                raise SystemExit(f"bgfetch: {exc}") from None
            raise exceptions.OptionsError(str(exc)) from None

    def _configure(self, updated: set[str]) -> None:
        if "bgfetch_rules" in updated:
            self._load_rules(ctx.options.bgfetch_rules)
        options.check(ctx.options, updated)
        if updated & {"bgfetch_db", "confdir"}:  # a database another proxy owns: say so now, not in 10 s
            owner.check_free(launch.db_path(ctx.options), os.getpid())
        if self.keeper.started and updated & options.RESTARTS:
            self.keeper.restart()

    def running(self) -> None:
        """Start the store in the background: mitmproxy tells its addons one by one, and
        requests may already arrive (those that need the store wait for it)."""
        self.is_running = True
        ctx.options.update(connection_strategy="lazy")
        self.keeper.start()
        self._spawn(self._watch_rules())

    @property
    def lookup(self):
        """Which URLs the store holds (None before the store first starts)."""
        return self.keeper.lookup

    async def done(self) -> None:
        await self.keeper.stop()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- hooks -------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Hand the flow to the store when it needs it; an awaitable (which mitmproxy awaits)
        only when the store is not ready yet."""
        if flow.response or flow.error or not flow.live:
            return None
        request = flow.request
        value = request.headers.get(HEADER)
        if value is not None:
            del request.headers[HEADER]
        if request.host == ctx.options.bgfetch_host:
            if request.path.startswith(protocol.INTERNAL_PATH):  # the proxy's own routes, not a client's
                return _answer(flow, answers.not_found(request.path))
            return self._to_store(flow, request.path)
        try:
            given = rules.parse_header(value) if value is not None else None
        except rules.HeaderError as exc:
            return _answer(flow, exc.problem())
        url = request.url
        matched = self.rules.match(request.method, url, flow)
        if given is None and matched is None:
            return self._stored_or(flow, url, None) if request.method in ("GET", "HEAD") else None
        if len(url) > answers.MAX_URL:
            return _answer(flow, answers.url_too_long(len(url)))
        credential = credential_key(request.headers.items(multi=True))
        spec = rules.make_spec(request.method, url, matched or {}, given or {}, credential=credential)
        if self.lookup:  # known at once: a second client for this URL must find it
            self.lookup.add(url)
        fetch = (protocol.FETCH_PATH, {protocol.SPEC: spec.to_json(), protocol.URL: url})
        if "id" in (given or {}) or request.method not in ("GET", "HEAD"):  # it asks for the fetch it names
            return self._to_store(flow, *fetch)
        return self._stored_or(flow, url, fetch)  # a rule or a bare header: what is stored wins

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

    # -- commands: the control API over loopback ----------------------------

    @command.command("bgfetch.fetch")
    def fetch_url(self, url: str, fetch_id: str = "") -> str:
        """Start a background fetch of URL, with the id given or one made from the URL."""
        spec = rules.make_spec("GET", url)
        body = {"id": fetch_id or spec.id, "title": spec.title, "requests": [url]}
        registration = self._call("POST", "/api/fetches", body)
        logger.info("bgfetch: %s started: %s", registration["id"], url)
        return registration["id"]

    @command.command("bgfetch.abort")
    def abort_fetch(self, fetch_id: str) -> None:
        """Abort an active background fetch; its partial bodies are discarded."""
        self._call("POST", f"/api/fetches/{_quoted(fetch_id)}/abort", {})
        logger.info("bgfetch: %s aborted", fetch_id)

    @command.command("bgfetch.delete")
    def delete_fetch(self, fetch_id: str) -> None:
        """Delete a background fetch with its stored bodies (aborting it if active)."""
        self._call("DELETE", f"/api/fetches/{_quoted(fetch_id)}")
        logger.info("bgfetch: %s deleted", fetch_id)

    @command.command("bgfetch.list")
    def list_fetches(self) -> Sequence[str]:
        """List every background fetch: id, state, result, bytes and title."""
        ids = self._call("GET", "/api/fetches?all=1")["ids"]
        return [_describe(self._call("GET", f"/api/fetches/{_quoted(i)}")) for i in ids]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        """One call of the store's control API; CommandError with the store's problem."""
        try:
            response = self.keeper.call(method, path, body)
        except keeper.StoreError as exc:
            raise exceptions.CommandError(str(exc)) from exc
        if response.is_error:
            raise exceptions.CommandError(response.json().get("detail", response.reason_phrase))
        return response.json() if response.content else None

    # -- the store process ---------------------------------------------------

    def _to_store(self, flow: http.HTTPFlow, path: str, extra: dict[str, str] | None = None) -> Awaitable[None] | None:
        """Send the flow to the store now, or (an awaitable) once it is ready."""
        if port := self.keeper.port_now():
            self._redirect(flow, port, path, extra)
            return None
        return self._to_store_when_ready(flow, path, extra)

    async def _to_store_when_ready(self, flow: http.HTTPFlow, path: str, extra: dict[str, str] | None) -> None:
        if port := await self.keeper.wait_ready():
            self._redirect(flow, port, path, extra)
        else:
            _answer(flow, answers.UNAVAILABLE, {"Retry-After": answers.RETRY_AFTER})

    def _stored_or(self, flow: http.HTTPFlow, url: str, fetch: tuple[str, dict] | None) -> Awaitable[None] | None:
        """Serve what the store holds for the URL; else hand the flow over for `fetch`, or let it pass."""
        if self.lookup and self.lookup.ready:
            record = self.lookup.find(url, flow.request.headers.items(multi=True))
            if inspect.isawaitable(record):  # a fleet node's store is asked
                return self._when_found(flow, record, fetch)
            return self._record_or(flow, record, fetch)
        if self.keeper.starting:  # whether the URL is stored is known once the store is ready
            return self._when_found(flow, self.keeper.wait_ready(), fetch, url)
        return self._record_or(flow, None, fetch)

    async def _when_found(self, flow: http.HTTPFlow, found: Awaitable, fetch: tuple[str, dict] | None, url: str = "") -> None:
        record = await found
        if url:  # `found` was the store getting ready: now the URL is looked up
            record = await self.lookup.found(url, flow.request.headers.items(multi=True)) if self.lookup else None
        if waiting := self._record_or(flow, record, fetch):
            await waiting

    def _record_or(self, flow: http.HTTPFlow, record: int | None, fetch: tuple[str, dict] | None) -> Awaitable[None] | None:
        where = (protocol.STORED_PATH, {protocol.RECORD: str(record)}) if record is not None else fetch
        return self._to_store(flow, *where) if where else None

    def _redirect(self, flow: http.HTTPFlow, port: int, path: str, extra: dict[str, str] | None) -> None:
        """Point the flow at the store's internal port, with the secret and the fetch details."""
        request = flow.request
        flow.metadata["bgfetch"] = request.url
        for name in [n for n in request.headers if protocol.is_internal(n)]:
            del request.headers[name]
        request.scheme, request.host, request.port, request.path = "http", "127.0.0.1", port, path
        if flow.server_conn.via:  # upstream mode: the store is on this machine, go to it directly
            flow.server_conn = connection.Server(address=("127.0.0.1", port))
            if not (request.is_http2 or request.is_http3):
                request.authority = ""  # origin-form, as in regular mode
        request.headers[protocol.SECRET] = self.secret
        for name, value in (extra or {}).items():
            request.headers[name] = value

    def _launch(self) -> launch.Launch:
        opts = ctx.options
        quota = parse_size(opts.bgfetch_quota) if opts.bgfetch_quota else None
        return launch.launch(opts, self.secret, quota, sorted(_proxy_ports()))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def _answer(flow: http.HTTPFlow, problem: dict, extra: dict[str, str] | None = None) -> None:
    """Answer the flow here with an RFC 9457 problem (without a body for a HEAD: mitmproxy
    would send it)."""
    body = "" if flow.request.method == "HEAD" else json.dumps(problem)
    flow.response = http.Response.make(problem["status"], body, {"Content-Type": "application/problem+json", **(extra or {})})


def _proxy_ports() -> set[int]:
    """The ports mitmproxy listens on, as configured and as bound (port 0 picks one): the
    store never fetches them on loopback, where a fetch would come back to this proxy."""
    ports = {address[1] for address in ctx.master.addons.get("proxyserver").listen_addrs()}
    for spec in ctx.options.mode:
        with contextlib.suppress(ValueError):  # proxyserver refuses a bad mode itself
            ports.add(mode_specs.ProxyMode.parse(spec).listen_port(ctx.options.listen_port) or 0)
    return ports - {0}


def _stop_mitmproxy(exc: Exception) -> None:
    """The store did not start with mitmproxy: stop, as mitmproxy does on an error at start-up
    (sys.exit in a hook: mitmproxy still calls every addon's `done`)."""
    logger.error("%s; mitmproxy stops", exc)
    sys.exit(1)


def _quoted(fetch_id: str) -> str:
    return urllib.parse.quote(fetch_id, safe="")


def _describe(registration: dict) -> str:
    """One line of `bgfetch.list`."""
    outcome = registration["result"] or registration["state"]
    if registration["failureReason"]:
        outcome += f" ({registration['failureReason']})"
    total = registration["downloadTotal"]
    done = pretty_size(registration["downloaded"]) + (f" of {pretty_size(total)}" if total else "")
    return f"{registration['id']}  {outcome}  {done}  {registration['title']}"


def _stamp(path: str) -> tuple | None:
    """What tells a file's edits apart: modification time and size (None if it is gone)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


addons = [BackgroundFetch()]
