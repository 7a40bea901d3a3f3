"""`bgfetch_webhook`: each final event (success, fail, abort) POSTed as JSON, with retries.

The body is `{"type": "success", "id": <event id>, "registration": {...}}`, the same event
`/api/events` sends. Deliveries run one after another on their own task from a bounded
queue, so a slow or dead webhook delays only later deliveries, never a transfer.
"""

import asyncio
import logging

import httpx

from store.engine.events import FINAL
from store.engine.metrics import Metrics
from store.engine.retry import backoff

logger = logging.getLogger(__name__)

ATTEMPTS = 6
WAITING = 1000  # events queued at most; more are dropped (and logged)
RETRIED_STATUSES = {408, 425, 429}  # and every 5xx


class Webhook:
    """Delivers final events to `url`: ATTEMPTS tries each, waiting `backoff` (capped at
    `retry_cap` seconds) between them; transport errors, 5xx and RETRIED_STATUSES are
    retried, any other answer but 2xx gives up on that event at once. Deliveries, their
    outcomes and POSTs are counted in `metrics` (the store's)."""

    def __init__(self, url: str, retry_cap: float, metrics: Metrics | None = None) -> None:
        self.url = url
        self.retry_cap = retry_cap
        self.metrics = metrics or Metrics()
        self.queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=WAITING)
        self.client = httpx.AsyncClient(timeout=10.0, trust_env=False, headers={"User-Agent": "bgfetch"})
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Start delivering, on a task of its own."""
        self.task = asyncio.create_task(self._run(), name="bgfetch webhook")

    def listener(self, event_id: int, type_: str, registration: dict) -> None:
        """For `EventBus.listeners`: queue a final event."""
        if type_ not in FINAL:
            return
        try:
            self.queue.put_nowait({"type": type_, "id": event_id, "registration": registration})
        except asyncio.QueueFull:
            self.metrics.deliveries.labels("dropped").inc()
            logger.error("webhook %s: %d events wait already; event %d is dropped", self.url, WAITING, event_id)

    async def _run(self) -> None:
        while True:
            await self.deliver(await self.queue.get())

    async def deliver(self, event: dict) -> bool:
        """POST one event until it is taken, or ATTEMPTS are spent; whether it was taken."""
        taken = await self._post(event)
        self.metrics.deliveries.labels("delivered" if taken else "failed").inc()
        return taken

    async def _post(self, event: dict) -> bool:
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(backoff(attempt - 1, self.retry_cap))
            self.metrics.webhook_posts.inc()
            try:
                response = await self.client.post(self.url, json=event)
            except httpx.HTTPError as exc:
                trouble = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return True
                trouble = f"answered {response.status_code}"
                if response.status_code < 500 and response.status_code not in RETRIED_STATUSES:
                    break
            logger.warning("webhook %s, event %d (attempt %d): %s", self.url, event["id"], attempt + 1, trouble)
        logger.error("webhook %s: event %d (%s of %s) not delivered", self.url, event["id"], event["type"], event["registration"]["id"])
        return False

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.aclose()
