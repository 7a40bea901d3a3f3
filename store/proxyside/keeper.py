"""Keeping the store process beside the proxy: started in the background, ready or not, started
again when it dies or its options change.

mitmproxy accepts connections before it tells its addons that it is running, and tells them
one after another: an addon that waited in `running` for its store would keep mitmproxy's own
addons (its TLS set-up among them) from being told, while requests already arrive. So the
keeper starts the store in a task and says at every moment whether it is ready; a request
that needs it waits for it, for at most READY_WAIT seconds.
"""

import asyncio
import contextvars
import logging
from collections.abc import Callable

import httpx

from store.proxyside import protocol
from store.proxyside.launch import Launch
from store.proxyside.lookup import Lookup
from store.proxyside.process import StoreError, StoreProcess

logger = logging.getLogger("bgfetch")

READY_WAIT = 5.0  # seconds a request that needs the store waits for it
RESTART_SECONDS = 1.0  # pause before starting again a store that died
RETRY_CAP = 60.0  # longest pause between attempts when the store does not start
CALL_TIMEOUT = 10.0  # seconds a command waits for the store's API (on loopback: milliseconds)
_CALLING = contextvars.ContextVar("bgfetch_calling", default=False)


class _OwnCalls(logging.Filter):
    """Keeps httpx's line for each call of the store's API by a command out of mitmproxy's
    log: "HTTP Request: GET http://127.0.0.1:.../api/fetches" is no traffic of a client."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _CALLING.get()


logging.getLogger("httpx").addFilter(_OwnCalls())


class StoreKeeper:
    """The store process and the lookup of its URLs, for the addon; `start` once running."""

    def __init__(self, launch: Callable[[], Launch], first_failure: Callable[[StoreError], None]) -> None:
        self.launch = launch  # read again at every start: options may have changed
        self.first_failure = first_failure  # told when the store does not start with the proxy
        self.process: StoreProcess | None = None
        self.lookup: Lookup | None = None
        self.port = 0
        self.listen_port = 0
        self.failing = False  # the last attempt to start failed: waiting for it is pointless
        self.launched: Launch | None = None  # how the store that runs was started
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def starting(self) -> bool:
        """Whether the store is on its way, so that a request needing it had better wait."""
        return self.started and not self.ready and not self.failing

    def start(self) -> None:
        self._task = self._keeping(None, first=True)

    def restart(self) -> None:
        """Start it again (its options changed); requests wait meanwhile."""
        self._down()
        self._task = self._keeping(self._task)

    def _keeping(self, previous: asyncio.Task | None, first: bool = False) -> asyncio.Task:
        task = asyncio.create_task(self._keep(previous, first), name="bgfetch store keeper")
        task.add_done_callback(_told)
        return task

    async def stop(self) -> None:
        self._down()
        task, self._task = self._task, None
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._stop_process()
        if self.lookup:
            self.lookup.close()
            self.lookup = None

    def port_now(self) -> int:
        """The store's internal port if it is ready and alive, else 0 (and it is marked down:
        its end has not reached the event loop yet)."""
        if not self.ready:
            return 0
        if not self.process.alive():
            self._down()
            return 0
        return self.port

    async def wait_ready(self) -> int:
        """The store's port once it is ready, or 0 if it is not within READY_WAIT seconds."""
        if self.starting:
            try:
                await asyncio.wait_for(self._ready.wait(), READY_WAIT)
            except TimeoutError:
                pass
        return self.port_now()

    def call(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        """One call of the store's control API on its internal port, blocking (for mitmproxy's
        commands); StoreError when the store is not running or does not answer."""
        if not (port := self.port_now()):
            raise StoreError("the bgfetch store is not running (yet); see mitmproxy's log")
        sent = {protocol.SECRET: self.launched.secrets["secret"]}
        if token := self.launched.secrets.get("token"):
            sent["Authorization"] = f"Bearer {token}"
        calling = _CALLING.set(True)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=sent, timeout=CALL_TIMEOUT,
                              trust_env=False) as api:
                return api.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise StoreError(f"the bgfetch store did not answer: {exc}") from exc
        finally:
            _CALLING.reset(calling)

    # -- the task ----------------------------------------------------------------

    async def _keep(self, previous: asyncio.Task | None, first: bool) -> None:
        """Start the store, wait for its end, start it again: for as long as mitmproxy runs.
        The first start with mitmproxy that fails is `first_failure`'s to judge."""
        if previous:
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        await self._stop_process()
        attempts = 0
        while True:
            try:
                await self._start(self.launch())
            except StoreError as exc:
                if first:
                    self.first_failure(exc)
                first = False
                attempts += 1
                self.failing = True
                wait = min(RESTART_SECONDS * 2**attempts, RETRY_CAP)
                logger.error("%s; trying again in %.0f s", exc, wait)
                await asyncio.sleep(wait)
                continue
            attempts, first = 0, False
            code = await self.process.exited()
            self._down()
            logger.error("bgfetch: the store process exited (code %s); starting it again", code)
            await self._stop_process()
            await asyncio.sleep(RESTART_SECONDS)

    async def _start(self, launch: Launch) -> None:
        if self.lookup and self.lookup.path != launch.db:
            self.lookup.close()
            self.lookup = None
        self.lookup = self.lookup or Lookup(launch.db)
        self.process = StoreProcess(launch.args, launch.secrets, self.lookup)
        ports = await self.process.start()
        try:
            if not self.lookup.ready:
                await self.lookup.open()
        except Exception as exc:  # sqlite3.Error, OSError: the store made a database it cannot read
            await self._stop_process()
            raise StoreError(f"the bgfetch store's database {launch.db} cannot be read: {exc}") from exc
        self.port, self.listen_port, self.launched = ports["port"], ports["listen_port"], launch
        self.failing = False
        self._ready.set()
        logger.info("bgfetch: store %s, %s", launch.db, self._dashboard(launch))

    def _dashboard(self, launch: Launch) -> str:
        """Where the dashboard and the API can be reached, as the start-up line says it."""
        places = [f"http://{launch.host}/ through the proxy" if launch.host_reached else "",
                  f"http://127.0.0.1:{self.listen_port}/" if self.listen_port else ""]
        if any(places):
            return "dashboard and API at " + " and ".join(filter(None, places))
        return (f"no dashboard: in reverse mode http://{launch.host}/ cannot be reached; --set bgfetch_listen_port=PORT"
                " serves the dashboard and the API at http://127.0.0.1:PORT/")

    def _down(self) -> None:
        self._ready.clear()
        self.port = 0

    async def _stop_process(self) -> None:
        if self.process:
            await self.process.stop()  # cancelled, it goes on: `stop` waits for it again
            self.process = None


def _told(task: asyncio.Task) -> None:
    """Log why the keeper's task ended, if not on purpose: the store is then not started again."""
    if not task.cancelled() and isinstance(task.exception(), Exception):
        logger.error("bgfetch: the store is not kept running any more: %r", task.exception())
