"""What every API route shares: the JSON body read as it arrives (bounded), query flags, the
registration or 404; and the two routes of their own: the OpenAPI document and "no such path"."""

import tornado.web

from store.engine import NotFound
from store.web import openapi, validate
from store.web.handler import Problem, StoreHandler


def too_large() -> Problem:
    return Problem(413, "content-too-large", f"The API takes JSON bodies of at most {validate.MAX_BODY_BYTES} bytes.", field="")


@tornado.web.stream_request_body
class ApiHandler(StoreHandler):
    """Helpers of the API routes: the registration or 404, the JSON body (read as it
    arrives, up to validate.MAX_BODY_BYTES), query flags."""

    def prepare(self) -> None:
        self.chunks: list[bytes] | None = []
        self.received = 0
        if _declares_too_much(self.request.headers):
            raise too_large()  # answered before the body is read; the connection then closes
        try:
            super().prepare()
        except Problem as problem:
            refusal = problem  # the except clause unbinds its own name
            # Answered now, before the body is read, the refusal would close the connection
            # (tornado cannot keep it alive with a body unread), and mitmproxy, reusing it for
            # the client's next request, would answer that one 502: refuse once it is read.
            def refuse(*_args: str) -> None:
                raise refusal

            setattr(self, self.request.method.lower(), refuse)

    def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > validate.MAX_BODY_BYTES:
            self.chunks = None  # the rest is read and dropped, and the method answers 413
        elif self.chunks is not None:
            self.chunks.append(chunk)

    def registration(self, reg_id: str) -> dict:
        """The registration; NotFound (a 404 problem) when there is none."""
        return self.store.get(reg_id)

    def json_body(self, optional: bool = False) -> object:
        """The request's JSON body (an empty one is {} when `optional`); validate.Unreadable."""
        if self.chunks is None:
            raise too_large()
        media_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise Problem(415, "unsupported-media-type", "Send the body as Content-Type: application/json.")
        raw = b"".join(self.chunks)
        if optional and not raw.strip():
            return {}
        return validate.json_document(raw)

    def refused(self, url: str) -> str | None:
        """Why a transfer may not fetch `url` (bgfetch itself, or an address the options refuse)."""
        return self.settings["destinations"].refusal(url)

    def flag(self, name: str) -> bool:
        value = self.get_argument(name, "0")
        if value not in ("0", "1"):
            raise Problem(400, "invalid-request", f"{name} must be 0 or 1.", field=name)
        return value == "1"


class OpenApi(ApiHandler):
    """`GET /api/openapi.json`: the OpenAPI 3.1 description of these routes."""

    def get(self) -> None:
        self.send_json(openapi.document(self.settings["public_host"]))


class NoRoute(ApiHandler):
    """Any other path: a 404 problem."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def get(self) -> None:
        raise Problem(404, "not-found", f"No such path: {self.request.path}.")

    head = post = put = patch = delete = options = get


def _declares_too_much(fields) -> bool:
    """Whether the request's Content-Length is over validate.MAX_BODY_BYTES (tornado refuses a malformed one)."""
    value = fields.get("Content-Length", "").split(",")[0].strip()
    return value.isascii() and value.isdigit() and (len(value) > 9 or int(value) > validate.MAX_BODY_BYTES)


__all__ = ["ApiHandler", "NoRoute", "NotFound", "OpenApi", "too_large"]
