"""The fetch spec handed to the store: its fields, their checks, defaults and layering."""

import base64
import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass
from urllib.parse import unquote, urlsplit

RESPONDS = ("stream", "accepted")
MAX_ID = 256
MAX_TITLE = 1024
INTEGRITY_PREFIX = "sha256-"
DOT_SEGMENTS = (".", "..")


@dataclass(frozen=True)
class FetchSpec:
    """How one request becomes a background fetch; checked on creation, so always valid."""

    id: str
    title: str
    download_total: int | None = None
    respond: str = "stream"
    integrity: str | None = None

    def __post_init__(self) -> None:
        for name, check in CHECKS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            try:
                check(value)
            except ValueError as exc:
                raise ValueError(f"fetch spec field {name} {exc}, got {value!r}") from None

    def to_json(self) -> str:
        """Compact ASCII JSON of the fields, safe to carry in one header line."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "FetchSpec":
        """The spec that to_json wrote; ValueError when the text is not one."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a fetch spec must be a JSON object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"not a fetch spec: {exc}") from exc


def check_id(value: object) -> None:
    """ValueError (saying what is expected) unless value is 1-256 printable characters, and
    not "." or "..": in a URL path those are steps, not names (`/api/fetches/..` is `/api/`)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isprintable():
        raise ValueError(f"must be 1 to {MAX_ID} printable characters")
    if value in DOT_SEGMENTS:
        raise ValueError('may not be "." or "..", which a URL path reads as a step, not a name')


def check_title(value: object) -> None:
    """ValueError unless value is a string of at most 1024 characters."""
    if not isinstance(value, str) or len(value) > MAX_TITLE:
        raise ValueError(f"must be a string of at most {MAX_TITLE} characters")


def check_download_total(value: object) -> None:
    """ValueError unless value is a positive integer (a count of bytes)."""
    if type(value) is not int or value <= 0:
        raise ValueError("must be a positive integer of bytes")


def check_respond(value: object) -> None:
    """ValueError unless value is one of RESPONDS."""
    if value not in RESPONDS:
        raise ValueError(f"must be {' or '.join(RESPONDS)}")


def check_integrity(value: object) -> None:
    """ValueError unless value is "sha256-" and the base64 of a 32-byte digest."""
    digest = b""
    if isinstance(value, str) and value.startswith(INTEGRITY_PREFIX):
        try:
            digest = base64.b64decode(value.removeprefix(INTEGRITY_PREFIX), validate=True)
        except ValueError:
            pass
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError(
            f'must be "{INTEGRITY_PREFIX}" followed by the base64 of a SHA-256 digest (44 characters)'
        )


CHECKS = {
    "id": check_id,
    "title": check_title,
    "download_total": check_download_total,
    "respond": check_respond,
    "integrity": check_integrity,
}
OPTIONAL = {"download_total", "integrity"}


def url_fields(url: str) -> dict[str, str]:
    """The template fields of a URL: host, path (no query), filename and url."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path or "/"
    name = posixpath.basename(path.rstrip("/"))
    return {"host": host, "path": path, "filename": unquote(name) or host, "url": url}


def derived_id(text: str) -> str:
    """A stable id for text: "bgf-" and 24 hex digits of its SHA-256."""
    return "bgf-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def fit_id(text: str) -> str:
    """text when it is a valid id, else a stable id derived from it."""
    try:
        check_id(text)
    except ValueError:
        return derived_id(text)
    return text


def fit_title(text: str) -> str:
    """text cut to the longest title allowed."""
    return text[:MAX_TITLE]


def make_spec(method: str, url: str, *layers: dict, credential: str = "") -> FetchSpec:
    """The spec for a request: layers merged left to right (later wins), defaults filled in.

    The default id is derived from the method and URL and, when the request carries any,
    `credential` (a hash of its credentials): two users of one URL get two registrations."""
    fields: dict = {}
    for layer in layers:
        fields.update(layer)
    fields.pop("rule", None)
    fields.setdefault("id", derived_id(f"{method} {url} {credential}" if credential else f"{method} {url}"))
    fields.setdefault("title", fit_title(url_fields(url)["filename"]))
    return FetchSpec(**fields)
