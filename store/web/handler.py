"""The base of every route: who may ask (the proxy's secret, the host, the token, no forged
browser request), and answers as JSON or RFC 9457 problems (`problems.TABLE`)."""

import hmac
import json
import logging

import tornado.web

from store.engine import StorageFault
from store.proxyside import protocol
from store.engine.service import Store
from store.web import forgery
from store.web.problems import PROBLEM_BASE, Problem, problem_for

logger = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Every answer's, unless a route sets its own: JSON and problems are never sniffed into a page,
# run anything or sit in a frame. A stored body goes out with its own (`body_fields`).
DEFAULT_FIELDS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
}


class StoreHandler(tornado.web.RequestHandler):
    """Base of every route: the shared secret on the internal port, the API token or, without
    one, the dashboard's secret on a browser's state change (`forgery`), problem+json."""

    CHECKS_FORGERY = True  # False for the proxy's flows: any client's requests, for their origin

    def initialize(self, store: Store, secret: str | None, token: str | None) -> None:
        self.store = store
        self.secret = secret
        self.token = token

    def prepare(self) -> None:
        request = self.request
        if self.secret is not None and not _same(request.headers.get(protocol.SECRET), self.secret):
            raise Problem(403, "forbidden", "This port answers only the bgfetch proxy.")
        public_host = self.settings["public_host"]
        if self.secret is None and request.host_name not in (*LOCAL_HOSTS, public_host):
            raise Problem(  # a page on another site that a DNS trick points at 127.0.0.1
                421, "misdirected-request",
                f"This port answers requests for {', '.join(LOCAL_HOSTS)} or {public_host} only.",
            )
        if self.token and not _same(request.headers.get("Authorization"), f"Bearer {self.token}"):
            raise Problem(
                401, "unauthorized", "Send Authorization: Bearer <bgfetch_token>.",
                headers={"WWW-Authenticate": 'Bearer realm="bgfetch"'},
            )
        if not self.token and self.CHECKS_FORGERY and forgery.forged(
            request.method, request.headers, self.settings["page_secret"]
        ):
            raise Problem(
                403, "cross-site-request",
                f"A web browser sent this {request.method}: a state change from a browser needs the"
                f" {forgery.HEADER} header that the dashboard page holds (or set bgfetch_token and"
                " send it). Scripts and command-line clients that send no Origin need neither.",
            )

    @classmethod
    def methods(cls) -> list[str]:
        """The methods this route answers (its `Allow`)."""
        base = tornado.web.RequestHandler
        return [m for m in cls.SUPPORTED_METHODS if getattr(cls, m.lower()) is not getattr(base, m.lower())]

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        for name, value in DEFAULT_FIELDS.items():
            self.set_header(name, value)

    def problem(self, status: int, kind: str, detail: str, headers: dict | None = None, **extra) -> None:
        """Finish with an RFC 9457 problem+json answer (and these response `headers`)."""
        self.clear()
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_status(status)
        self.set_header("Content-Type", "application/problem+json")
        self.finish(json.dumps({
            "type": PROBLEM_BASE + kind,
            "title": kind.replace("-", " ").capitalize(),
            "status": status,
            "detail": detail,
            **extra,
        }))

    def send_json(self, value, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, StorageFault):  # a 503 with Retry-After, not a bug: one line
            logger.warning("%s %s: %s", self.request.method, self.request.path, value)
        elif isinstance(value, tornado.web.HTTPError) or problem_for(value) is None:
            super().log_exception(typ, value, tb)  # an answer tornado logs in a line, or a bug

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if (problem := problem_for(exc)) is not None:
            self.problem(problem.status_code, problem.kind, problem.detail, problem.headers, **problem.extra)
            return
        allowed = {"Allow": ", ".join(self.methods())} if status_code == 405 else None
        self.problem(status_code, "error", self._reason, headers=allowed)


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
