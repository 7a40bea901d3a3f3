"""Routes for those who run the store: `/metrics` for Prometheus, `/healthz` and `/readyz` for
load balancers and orchestrators.

`/metrics` is the store's `Observer.exposition` (prometheus_client's text format, or OpenMetrics
when the `Accept` header asks for it); `bgfetch_token`, when set, protects it as it does the
API. `/healthz` answers 200 while the process answers at all; `/readyz` answers 200 when the
store is open and every part of its storage answers (`Observer.readiness`: the SQLite database
takes a read and its write lock; a fleet's PostgreSQL and object store), 503 otherwise, with
each part and what is wrong in JSON. Neither asks for the token: a load balancer's probe
carries none, and they tell nothing but whether the store works.
"""

from store.web.handler import StoreHandler


class Metrics(StoreHandler):
    """`GET /metrics`."""

    SUPPORTED_METHODS = ("GET",)

    async def get(self) -> None:
        body, media_type = await self.store.observer.exposition(self.request.headers.get("Accept"))
        self.set_header("Content-Type", media_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


class Healthz(StoreHandler):
    """`GET /healthz`: the process answers."""

    SUPPORTED_METHODS = ("GET",)

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.send_json({"status": "ok"})


class Readyz(StoreHandler):
    """`GET /readyz`: the store is open and its storage answers (200), or not (503)."""

    SUPPORTED_METHODS = ("GET",)

    async def get(self) -> None:
        parts = await self.store.observer.readiness()
        ready = all(part.ready for part in parts)
        self.set_header("Cache-Control", "no-store")
        self.send_json({
            "status": "ready" if ready else "unready",
            "parts": [{"part": p.part, "ready": p.ready, **({"detail": p.detail} if p.detail else {})} for p in parts],
        }, 200 if ready else 503)


ROUTES = [(r"/metrics", Metrics, True), (r"/healthz", Healthz, False), (r"/readyz", Readyz, False)]  # path, handler, token
