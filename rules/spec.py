"""The fetch spec handed to the store: its fields (checked by the shared vocabulary), defaults and layering."""

import hashlib
import json
import posixpath
from dataclasses import asdict, dataclass
from urllib.parse import unquote, urlsplit

from vocabulary import MAX_TITLE, check_id, check_spec


@dataclass(frozen=True)
class FetchSpec:
    """How one request becomes a background fetch; checked on creation, so always valid."""

    id: str
    title: str
    download_total: int | None = None
    respond: str = "stream"
    integrity: str | None = None
    revalidate: str | None = None  # None: bgfetch_revalidate's
    segments: int | None = None  # None: the option's, bgfetch_segments

    def __post_init__(self) -> None:
        check_spec(asdict(self))

    def to_json(self) -> str:
        """Compact ASCII JSON of the fields, safe to carry in one header line."""
        return json.dumps(asdict(self), separators=(",", ":"))


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
