"""bgfetch: the browser's Background Fetch API for every HTTP client, as a mitmproxy addon.

`mitmdump -s addon.py`. A request with a `Background-Fetch` header, or matched by a rule of
`bgfetch_rules`, is handed to the store process, which finishes the transfer whatever the
client does; later requests for a stored URL are answered from the store. This module is
glue: options, hooks and commands; the work is in `rules/` and `store/`.
"""

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Sequence

from mitmproxy import command, connection, ctx, exceptions, http
from mitmproxy.proxy import mode_specs
from mitmproxy.utils.human import pretty_size

import rules
from store.proxyside import answers, control, keeper, launch, options, owner, protocol
from vocabulary import HEADER, credential_key, parse_size

logger = logging.getLogger("bgfetch")

RULES_POLL_SECONDS = 1.0
ASKED = "bgfetch_asked"  # flow.metadata: the request as the client sent it, while the store has the flow
MARKS = {"stored": ":floppy_disk:", "joined": ":link:", "background": ":inbox_tray:"}  # the flow's mark per answer


class BackgroundFetch:
    """The addon: its options, the hooks that hand flows to the store, and the commands."""

    def __init__(self) -> None:
        self.rules_file = rules.RulesFile()
        self.secret = secrets.token_urlsafe(32)
        self.keeper = keeper.StoreKeeper(self._launch, _stop_mitmproxy)
        self.tasks: set[asyncio.Task] = set()
        self.is_running = False

    def load(self, loader) -> None:
        for option in options.OPTIONS:
            if option.type is not None:  # the others are mitmproxy's own
                loader.add_option(option.name, option.type, option.default, option.help, choices=option.choices or None)

    def configure(self, updated: set[str]) -> None:
        """Check the options that changed; a change of one the store reads starts it again. A bad
        value is an OptionsError, but at start-up (errorcheck there, not running yet) mitmproxy would
        log it under a traceback and listen before it stops: then it stops here, in one line."""
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
        """Start the store in the background; requests may come first (those that need it wait)."""
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
        """Hand the flow to the store when it needs it; an awaitable only while the store is not ready."""
        if flow.response or flow.error or not flow.live:
            return None
        request = flow.request
        value = request.headers.get(HEADER)
        if value is not None:
            flow.metadata[ASKED] = request.headers.copy()  # the fields as sent, shown once the store has the flow
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
        """Stream what the store answers, and show the flow as the client asked it: its URL
        and header fields again, with the store's answer as the flow's mark and comment."""
        if "bgfetch" not in flow.metadata or not flow.response:
            return
        flow.response.stream = True
        _as_asked(flow)
        if (value := flow.response.headers.get(protocol.ANSWER)) and (answered := protocol.parse_answer(value)):
            answer, fetch_id = answered
            flow.marked = MARKS[answer]
            flow.comment = "\n".join(filter(None, [flow.comment, f"bgfetch: {protocol.ANSWERS[answer]} ({fetch_id})"]))
        for name in [n for n in flow.response.headers if protocol.is_internal(n)]:
            del flow.response.headers[name]

    def error(self, flow: http.HTTPFlow) -> None:
        if "bgfetch" in flow.metadata:
            _as_asked(flow)

    # -- rules -------------------------------------------------------------------

    def _load_rules(self, path: str) -> None:
        """Load the rules file (raises RulesError, leaving the rules in force as they were)."""
        self.rules_file.load(path)
        if path:
            logger.info("bgfetch: %d rules from %s: %s", len(self.rules), path, ", ".join(self.rules.names))

    @property
    def rules(self) -> rules.RuleSet:
        return self.rules_file.rules

    async def _watch_rules(self) -> None:
        """Reload the rules file when it changes; a bad edit keeps the previous rules."""
        while True:
            await asyncio.sleep(RULES_POLL_SECONDS)
            if self.rules_file.changed(path := ctx.options.bgfetch_rules):
                try:
                    self._load_rules(path)
                except rules.RulesError as exc:
                    self.rules_file.refused(path)
                    logger.error("bgfetch: %s; the previous rules stay in force", exc)

    # -- commands: the control API over loopback ----------------------------

    @command.command("bgfetch.fetch")
    def fetch_url(self, url: str, fetch_id: str = "") -> str:
        """Start a background fetch of URL, with the id given or one made from the URL."""
        spec = rules.make_spec("GET", url)
        body = {"id": fetch_id or spec.id, "title": spec.title, "requests": [url]}
        registration = self._call("POST", control.FETCHES, body)
        logger.info("bgfetch: %s started: %s", registration["id"], url)
        return registration["id"]

    @command.command("bgfetch.abort")
    def abort_fetch(self, fetch_id: str) -> None:
        """Abort an active background fetch; its partial bodies are discarded."""
        self._call("POST", control.fetch_path(fetch_id, "abort"), {})
        logger.info("bgfetch: %s aborted", fetch_id)

    @command.command("bgfetch.delete")
    def delete_fetch(self, fetch_id: str) -> None:
        """Delete a background fetch with its stored bodies (aborting it if active)."""
        self._call("DELETE", control.fetch_path(fetch_id))
        logger.info("bgfetch: %s deleted", fetch_id)

    @command.command("bgfetch.list")
    def list_fetches(self) -> Sequence[str]:
        """List every background fetch: id, state, result, bytes and title."""
        ids = self._call("GET", control.FETCHES + "?all=1")["ids"]
        return [control.describe(self._call("GET", control.fetch_path(i)), pretty_size) for i in ids]

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
            found = self.lookup.find(url, flow.request.headers.items(multi=True))
            if found is not None and not isinstance(found, int):  # an awaitable: a fleet node's store is asked
                return self._when_found(flow, found, fetch)
            fetch = (protocol.STORED_PATH, {protocol.RECORD: str(found)}) if found is not None else fetch
        elif self.keeper.starting:  # whether the URL is stored is known once the store is ready
            return self._stored_when_ready(flow, url, fetch)
        return self._to_store(flow, *fetch) if fetch else None

    async def _when_found(self, flow: http.HTTPFlow, found: Awaitable[int | None], fetch: tuple[str, dict] | None) -> None:
        fetch = fetch if (record := await found) is None else (protocol.STORED_PATH, {protocol.RECORD: str(record)})
        if fetch and (waiting := self._to_store(flow, *fetch)):
            await waiting

    async def _stored_when_ready(self, flow: http.HTTPFlow, url: str, fetch: tuple[str, dict] | None) -> None:
        await self.keeper.wait_ready()
        if self.keeper.starting:  # still not ready: a fetch is unavailable, anything else passes
            return _answer(flow, answers.UNAVAILABLE, {"Retry-After": answers.RETRY_AFTER}) if fetch else None
        if waiting := self._stored_or(flow, url, fetch):
            await waiting

    def _redirect(self, flow: http.HTTPFlow, port: int, path: str, extra: dict[str, str] | None) -> None:
        """Point the flow at the store's internal port, with the secret and the fetch details."""
        request = flow.request
        for name in [n for n in request.headers if protocol.is_internal(n)]:
            del request.headers[name]
        flow.metadata["bgfetch"] = request.url
        flow.metadata[ASKED] = (request.scheme, request.host, request.port, request.path, request.authority,
                                flow.metadata.get(ASKED) or request.headers.copy())
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


def _as_asked(flow: http.HTTPFlow) -> None:
    """The flow's request as the client sent it, once the store has it: mitmproxy's log, console
    and mitmweb show (and replay) the client's URL, and never the secret the store takes."""
    if asked := flow.metadata.pop(ASKED, None):
        request = flow.request
        request.scheme, request.host, request.port, request.path, request.authority, request.headers = asked


def _answer(flow: http.HTTPFlow, problem: dict, extra: dict[str, str] | None = None) -> None:
    """Answer the flow here with an RFC 9457 problem (no body for a HEAD: mitmproxy would send it)."""
    if fields := flow.metadata.pop(ASKED, None):  # never sent upstream: shown with the header as it came
        flow.request.headers = fields
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


addons = [BackgroundFetch()]
