"""What the rules, the proxy and the store must agree on, in one place that none of them owns.

The fields of a background fetch and their checks (each raises ValueError saying what is
expected; callers name the field), the Fetch standard's bad ports, the registration's states, results and failure reasons,
the key that ties a stored response to the credentials it was fetched with, and the names of
the header fields that are bgfetch's own. Standard library only; imports nothing of bgfetch.
"""

import base64
import hashlib
import json
import re
from collections.abc import Iterable
from decimal import Decimal

# -- the fields of a background fetch -------------------------------------------------

HEADER = "Background-Fetch"  # the request header that makes a request a background fetch
MAX_ID = 256
MAX_TITLE = 1024
MAX_URL = 8192  # the longest URL of a background fetch, by the header, a rule or the API
MAX_BYTES = 2**53  # the largest count of bytes: the largest integer every JSON reader keeps exact
RESPONDS = ("stream", "accepted")  # how the client that started a fetch is answered
# When a stored response is checked with its origin before it is served (bgfetch_revalidate,
# a rule's revalidate): never, when RFC 9111's rules say it is stale, or every time.
REVALIDATE = ("never", "cache-control", "always")
MAX_SEGMENTS = 16  # the most connections one body may take (bgfetch_segments, a rule's or header's segments)
INTEGRITY_PREFIX = "sha256-"
DOT_SEGMENTS = (".", "..")


def check_id(value: object) -> None:
    """ValueError (saying what is expected) unless value is 1-256 printable characters, and
    not "." or "..": in a URL path those are steps, not names (`/api/fetches/..` is `/api/`)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isprintable():
        raise ValueError(f"must be 1 to {MAX_ID} printable characters")
    if value in DOT_SEGMENTS:
        raise ValueError('may not be "." or "..", which a URL path reads as a step, not a name')


def check_title(value: object) -> None:
    """ValueError unless value is a string of at most MAX_TITLE characters."""
    if not isinstance(value, str) or len(value) > MAX_TITLE:
        raise ValueError(f"must be a string of at most {MAX_TITLE} characters")


def check_download_total(value: object) -> None:
    """ValueError unless value is a positive integer (a count of bytes) of at most MAX_BYTES."""
    if type(value) is not int or value <= 0:
        raise ValueError("must be a positive integer of bytes")
    if value > MAX_BYTES:
        raise ValueError(f"must be at most {MAX_BYTES} bytes")


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


def check_revalidate(value: object) -> None:
    """ValueError unless value is one of REVALIDATE."""
    if value not in REVALIDATE:
        raise ValueError(f"must be {', '.join(REVALIDATE[:-1])} or {REVALIDATE[-1]}")


def check_segments(value: object) -> None:
    """ValueError unless value is a whole number of connections from 1 to MAX_SEGMENTS."""
    if type(value) is not int or not 1 <= value <= MAX_SEGMENTS:
        raise ValueError(f"must be a whole number of connections from 1 to {MAX_SEGMENTS}")


# The fields of a fetch spec (what the proxy hands the store for one request) and their checks.
SPEC_CHECKS = {
    "id": check_id,
    "title": check_title,
    "download_total": check_download_total,
    "respond": check_respond,
    "integrity": check_integrity,
    "revalidate": check_revalidate,
    "segments": check_segments,
}
SPEC_OPTIONAL = ("download_total", "integrity", "revalidate", "segments")  # None: not given


def check_spec(fields: dict) -> None:
    """ValueError naming the first field of a fetch spec that is missing, unknown or invalid."""
    if set(fields) != set(SPEC_CHECKS):
        raise ValueError(f"a fetch spec has exactly the fields {', '.join(SPEC_CHECKS)}")
    for name, check in SPEC_CHECKS.items():
        value = fields[name]
        if value is None and name in SPEC_OPTIONAL:
            continue
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"fetch spec field {name} {exc}, got {_shown(value)}") from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- ports: the Fetch standard's port blocking ----------------------------------------

# The Fetch standard's bad ports (https://fetch.spec.whatwg.org/#bad-port): ports of services
# (mail, FTP, IRC, NFS, ...) that a request crafted by a page could talk to as if it were HTTP.
# A browser's fetch() of a URL with one of them rejects; so does a background fetch, whichever
# way it starts (the API, a command, the header, a rule), and so does a redirect to one.
BAD_PORTS = frozenset((
    0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
    102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427,
    465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990,
    993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667,
    6668, 6669, 6679, 6697, 10080,
))


def check_port(port: int) -> None:
    """ValueError naming the port when it is one of the Fetch standard's bad ports."""
    if port in BAD_PORTS:
        raise ValueError(
            f"port {port} is a bad port of the Fetch standard (https://fetch.spec.whatwg.org/#bad-port),"
            " which no fetch may use"
        )


# -- sizes: a rule's download-total, the store's quota ---------------------------------

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
SHOWN_SIZE = 80  # a text that is not a size is quoted (as JSON) cut to this length


def parse_size(text: str) -> int:
    """The bytes in a size such as "62914560", "2GB" or "1.5 GiB"; ValueError when it is not one."""
    found = SIZE.fullmatch(text.strip())
    if not found:
        shown = json.dumps(text)
        shown = shown if len(shown) <= SHOWN_SIZE else shown[: SHOWN_SIZE - 3] + "..."
        raise ValueError(f"{shown} is not a size; use bytes or a number with B, KB, MB, GB, TB, KiB, MiB, GiB, TiB")
    return int(Decimal(found[1]) * UNITS[(found[2] or "B").upper()])


# -- a registration's lifecycle, in the spec's words -----------------------------------

STATES = ("pending", "fetching", "paused", "done")
ACTIVE = ("pending", "fetching", "paused")  # every state but done
RESULTS = ("", "success", "failure")  # "" while active
FAILURE_REASONS = (
    "aborted",
    "bad-status",
    "fetch-error",
    "quota-exceeded",
    "download-total-exceeded",
)  # a failure's failureReason; "" otherwise

# -- header fields ---------------------------------------------------------------------

# The fields whose values make a response one user's: a stored one is served only to requests
# that carry the same ones (the lookup key holds a hash of them).
CREDENTIALS = ("authorization", "cookie")
# Header fields named with this prefix are bgfetch's own: the proxy adds them to the flows it
# hands to the store, and nothing with them is sent upstream.
INTERNAL_PREFIX = "x-bgfetch-"


def credential_key(fields: Iterable[tuple[str, str]]) -> str:
    """A hash of the request's credentials ('' without any): part of a stored URL's key."""
    found = sorted((k.lower(), v) for k, v in fields if k.lower() in CREDENTIALS)
    if not found:
        return ""
    return hashlib.sha256(repr(found).encode()).hexdigest()
