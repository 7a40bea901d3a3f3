"""Stored bodies as the API hands them out: downloads that never run as pages of the API's origin.

A stored body is whatever an origin sent, and any page a proxy user visits can have one
stored (a `Background-Fetch` header on its own request). The API serves it from its own
origin, beside the dashboard, so it goes out as an attachment, in a CSP sandbox (an opaque
origin, no script), never sniffed into another type, and not embeddable by other sites. Of
the origin's headers only those that describe the bytes are kept: no `Access-Control-*`,
`Content-Security-Policy`, `Clear-Site-Data`, `Refresh`, `Link`... of a stranger's choosing.
(Bodies served to proxy clients on their own URL keep the origin's headers: that is the
origin's own origin.)
"""

import posixpath
import re
import urllib.parse
from collections.abc import Iterable

KEPT = ("content-type", "content-encoding", "content-language", "etag", "last-modified")
SANDBOX = [
    ("Content-Security-Policy", "sandbox; default-src 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]
FALLBACK_NAME = "download"
LONGEST_NAME = 200
UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;%]')


def fields(url: str, response_fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The response header fields for a stored body of `url` served by the API."""
    kept = [(k, v) for k, v in response_fields if k.lower() in KEPT]
    if not any(k.lower() == "content-type" for k, _ in kept):
        kept.append(("Content-Type", "application/octet-stream"))
    return kept + SANDBOX + [("Content-Disposition", disposition(file_name(url)))]


def file_name(url: str) -> str:
    """The URL's last path segment (its host when there is none), made safe as a file name."""
    parts = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(posixpath.basename(parts.path.rstrip("/"))) or parts.hostname or ""
    name = UNSAFE.sub("_", name).strip(" .")[:LONGEST_NAME]
    return name or FALLBACK_NAME


def disposition(name: str) -> str:
    """`attachment` with `name`: plain ASCII in `filename`, exact in `filename*` (RFC 6266)."""
    plain = name.encode("ascii", "replace").decode().replace("?", "_")
    exact = urllib.parse.quote(name, safe="", errors="replace")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}"
