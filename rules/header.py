"""Parsing the Background-Fetch request header, an RFC 8941 dictionary."""

import difflib
import re

import http_sfv

from vocabulary import SPEC_CHECKS as CHECKS
from vocabulary import HEADER
EXAMPLE = 'id="ep-5", title="Episode 5"'
PROBLEM_TYPE = "https://bgfetch.dev/problems/bad-header"
TOO_LARGE_TYPE = "https://bgfetch.dev/problems/header-too-large"
# The longest valid header is about 2.7 KB (an id of 256 and a title of 1024 characters, each
# of which may be escaped). http_sfv takes about 2 µs a byte, more with many small members, so
# the value is measured before it is parsed, and so is its count of separators outside quoted
# strings (a valid one has fewer than 16): the worst 4 KiB then parses in about 1 ms.
MAX_BYTES = 4096
MAX_PIECES = 64
QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"?')
SEPARATORS = re.compile(rb"[,;()\s]+")

# header key -> (python name, the http_sfv type of its value, that type in words)
KEYS = {
    "id": ("id", str, "a quoted string"),
    "title": ("title", str, "a quoted string"),
    "download-total": ("download_total", int, "a positive integer of bytes"),
    "respond": ("respond", http_sfv.Token, "the token stream or accepted, without quotes"),
    "integrity": ("integrity", str, 'a quoted string "sha256-<base64>"'),
    "segments": ("segments", int, "an integer of connections"),
}


class HeaderError(ValueError):
    """An invalid Background-Fetch header: which key (or "" for all of it) and why."""

    status = 400

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        where = f'{HEADER}: key "{key}": ' if key else f"{HEADER}: "
        super().__init__(where + reason)

    def problem(self) -> dict[str, object]:
        """The error as an RFC 9457 problem object for a response of `status`."""
        return {
            "type": PROBLEM_TYPE,
            "title": f"Invalid {HEADER} header",
            "status": self.status,
            "detail": str(self),
            "key": self.key,
        }


class HeaderTooLarge(HeaderError):
    """A Background-Fetch header longer than MAX_BYTES, refused unparsed (431)."""

    status = 431

    def __init__(self, size: int) -> None:
        super().__init__("", f"the value is {size} bytes; at most {MAX_BYTES} are allowed")

    def problem(self) -> dict[str, object]:
        return {
            **super().problem(),
            "type": TOO_LARGE_TYPE,
            "title": f"{HEADER} header too large",
            "header": HEADER,
            "limit": MAX_BYTES,
        }


def parse_header(value: str) -> dict[str, object]:
    """The fields a Background-Fetch header sets, by python name; HeaderError when invalid
    (HeaderTooLarge, before any parsing, when over MAX_BYTES)."""
    data = value.strip().encode("utf-8", "surrogatepass")
    if len(data) > MAX_BYTES:
        raise HeaderTooLarge(len(data))
    if not data:
        raise HeaderError("", f"the value is empty; send ?1 for defaults or a dictionary such as {EXAMPLE}")
    pieces = len(SEPARATORS.findall(QUOTED.sub(b"", data)))
    if pieces > MAX_PIECES:
        raise HeaderError("", f"has {pieces} separators outside quoted strings, at most {MAX_PIECES}: "
                              f"it takes at most {len(KEYS)} keys, without parameters or lists; such as {EXAMPLE}")
    if data.startswith(b"?"):
        return _parse_boolean(data)
    members = http_sfv.Dictionary()
    _sf_parse(members, data)
    return dict(_field(key, member) for key, member in members.items())


def _parse_boolean(data: bytes) -> dict[str, object]:
    """{} for the bare boolean ?1 (defaults for everything); HeaderError otherwise."""
    item = http_sfv.Item()
    _sf_parse(item, data)
    if item.params:
        raise HeaderError("", f"?1 takes no parameters, got {item}")
    if item.value is not True:
        reason = "?0 is not allowed: the header turns a background fetch on; remove it to turn it off"
        raise HeaderError("", reason)
    return {}


def _sf_parse(structure, data: bytes) -> None:
    """Parse data into an http_sfv structure; HeaderError naming the syntax problem."""
    try:
        structure.parse(data)
    except ValueError as exc:
        raise HeaderError(
            "",
            f"not a valid structured-field dictionary (RFC 8941): {_innermost(exc)}; "
            f"expected ?1 or a dictionary such as {EXAMPLE}",
        ) from None


def _innermost(exc: BaseException) -> str:
    """The message of the deepest ValueError that has one (http_sfv chains bare ones)."""
    message = ""
    while exc is not None:
        if isinstance(exc, ValueError) and str(exc):
            message = str(exc)
        exc = exc.__cause__
    return message or "unknown syntax error"


def _field(key: str, member) -> tuple[str, object]:
    """(python name, value) of one dictionary member, checked; HeaderError when wrong."""
    if key not in KEYS:
        raise HeaderError(key, _unknown_key(key))
    name, kind, words = KEYS[key]
    if not isinstance(member, http_sfv.Item) or type(member.value) is not kind:
        raise HeaderError(key, f"must be {words}, got {_shown(member)}")
    if member.params:
        raise HeaderError(key, f"takes no parameters, got {_shown(member)}")
    value = str(member.value) if kind is http_sfv.Token else member.value
    try:
        CHECKS[name](value)
    except ValueError as exc:
        raise HeaderError(key, f"{exc}, got {_shown(member)}") from None
    return name, value


def _unknown_key(key: str) -> str:
    """Why an unknown key is refused, with the nearest known key when there is one."""
    known = ", ".join(KEYS)
    guess = difflib.get_close_matches(key, KEYS, n=1)
    hint = f'; did you mean "{guess[0]}"?' if guess else ""
    return f"is not a {HEADER} key; the keys are {known}{hint}"


def _shown(member) -> str:
    """A member as the header spelled it, cut short when long."""
    text = str(member)
    if isinstance(member, http_sfv.Item) and member.value is True and not member.params:
        text = "?1 (what a key alone means)"
    return text if len(text) <= 80 else text[:77] + "..."
