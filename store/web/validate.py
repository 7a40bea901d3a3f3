"""Checking the control API's JSON bodies: a bad value raises `Invalid` naming its field.

Field names are paths into the body as a JavaScript user would write them:
`requests[1].url`, `records[0].headers.Authorization`. The checks return plain values in
the shape `tables` stores them.
"""

import json
import re
import urllib.parse
from collections.abc import Callable
from itertools import accumulate
from typing import TypeVar

import httpx

from vocabulary import MAX_URL, check_download_total, check_id, check_integrity, check_title, credential_key

MAX_REQUESTS = 1000
MAX_ICONS = 32
MAX_TEXT = 8192  # a header value or an icon's text
# A fetch of 1,000 requests with URLs of 1,000 characters fits; tornado alone would take 100 MB.
MAX_BODY_BYTES = 1024 * 1024
# The deepest valid body nests 4 levels ({"records": [{"headers": {...}}]}). 32 leaves room for
# any field to come, and keeps every walk over a body (json's parser, json.dumps, these checks)
# far below Python's recursion limit of 1000: 100,000 levels raised RecursionError, a 500.
MAX_DEPTH = 32
# No field takes a number beyond 2**53 (16 digits). A longer integer literal is read as a float,
# as a JavaScript reader would, and refused as "not a whole number" naming its field; Python's
# int() would raise ValueError past 4,300 digits, and costs time well before that.
MAX_DIGITS = 20
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
FIELD_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
FORBIDDEN_METHODS = {"CONNECT", "TRACE", "TRACK", "HEAD"}  # Fetch's forbidden ones; HEAD has no body
NORMALISED_METHODS = {"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}
ICON_FIELDS = {"src", "sizes", "type", "label"}
FETCH_FIELDS = {"id", "requests", "title", "icons", "downloadTotal"}
REQUEST_FIELDS = {"url", "method", "headers", "body", "integrity"}
UPDATE_FIELDS = {"title", "icons", "records"}
RECORD_CHANGE_FIELDS = {"index", "headers", "url"}


class Invalid(ValueError):
    """A value of the request the API refuses; `field` says which ("" for the whole body)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}" if field else reason)
        self.field = field


class Unreadable(Invalid):
    """A body that is not JSON text this API reads: not UTF-8 JSON, or nested too deep."""

    def __init__(self, reason: str) -> None:
        super().__init__("", reason)


# A JSON string (possessive: a string without its closing quote costs one pass, not one per
# quote), else a quote that opens a string never closed: everything after it is that string.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"|".*', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_document(raw: bytes) -> object:
    """The value of a JSON body (RFC 8259: UTF-8, no NaN or Infinity), nested at most
    MAX_DEPTH levels, integers beyond MAX_DIGITS read as floats; Unreadable otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"The body is not JSON text in UTF-8: {exc}") from None
    if nesting(text) > MAX_DEPTH:
        raise Unreadable(f"The body nests arrays and objects deeper than {MAX_DEPTH} levels.")
    try:
        value = json.loads(text, parse_int=_integer, parse_constant=_not_json)
        json.dumps(value, ensure_ascii=False).encode()  # no unpaired surrogate (\ud800) inside
    except ValueError as exc:
        raise Unreadable(f"The body is not JSON text in UTF-8: {exc}") from None
    return value


def nesting(text: str) -> int:
    """How deep arrays and objects nest in JSON text, brackets inside strings not counted
    (at C speed: a 1 MiB body takes milliseconds)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_NESTING.__getitem__, brackets)), default=0)


def _integer(digits: str) -> int | float:
    return int(digits) if len(digits) <= MAX_DIGITS else float(digits)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


Refusal = Callable[[str], str | None]  # why a transfer may not fetch a URL; None: it may
Checked = TypeVar("Checked")


def _anywhere(url: str) -> None:
    return None


def fetch_body(body: object, refused: Refusal = _anywhere) -> tuple[dict, list[dict]]:
    """The registration and its records from a `POST /api/fetches` body; a URL that
    `refused` gives a reason for is invalid. A request may appear more than once, as in the
    spec: each is a record of its own."""
    fields = _object(body, "", FETCH_FIELDS, required=("id", "requests"))
    reg_id = identifier(fields["id"], "id")
    requests = fields["requests"]
    if not isinstance(requests, list) or not 0 < len(requests) <= MAX_REQUESTS:
        raise Invalid("requests", f"must be a list of 1 to {MAX_REQUESTS} URLs or request objects")
    records = [_request(request, f"requests[{n}]", refused) for n, request in enumerate(requests)]  # repeats allowed
    registration = {
        "id": reg_id,
        "title": _checked(check_title, fields.get("title", ""), "title"),
        "icons": _icons(fields.get("icons", []), "icons"),
        "download_total": _download_total(fields.get("downloadTotal", 0), "downloadTotal"),
    }
    return registration, records


def update_body(
    body: object, record_count: int, refused: Refusal = _anywhere,
) -> tuple[str | None, list | None, list[dict]]:
    """(title, icons, record changes) from a `PATCH /api/fetches/{id}` body."""
    fields = _object(body, "", UPDATE_FIELDS)
    title = _checked(check_title, fields["title"], "title") if "title" in fields else None
    icons = _icons(fields["icons"], "icons") if "icons" in fields else None
    changes = fields.get("records", [])
    if not isinstance(changes, list) or len(changes) > record_count:
        raise Invalid("records", f"must be a list of at most {record_count} record changes")
    return title, icons, [
        _record_change(change, f"records[{n}]", record_count, refused) for n, change in enumerate(changes)
    ]


def identifier(value: object, field: str) -> str:
    return _checked(check_id, value, field)


def url(value: object, field: str) -> str:
    """An absolute http(s) URL as the proxy sees it: scheme and host lower case, no
    default port, no fragment, IDNA and percent-encoding as on the wire."""
    if not isinstance(value, str) or not value.isprintable() or " " in value or len(value) > MAX_URL:
        raise Invalid(field, "must be an absolute http or https URL")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise Invalid(field, f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(field, "must be an absolute http or https URL")
    if parts.username is not None:
        raise Invalid(field, "may not hold credentials (user:password@); send an Authorization header")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host += f":{port}"
    try:  # as sent on the wire: an IDNA host in punycode, the rest percent-encoded
        return str(httpx.URL(urllib.parse.urlunsplit((scheme, host, parts.path or "/", parts.query, ""))))
    except httpx.InvalidURL as exc:
        raise Invalid(field, f"is not a valid URL ({exc})") from None


def destination(value: object, field: str, refused: Refusal) -> str:
    """A URL a transfer may fetch (see `url`); Invalid naming the field when `refused` says why not."""
    checked = url(value, field)
    if reason := refused(checked):
        raise Invalid(field, f"may not be fetched: {reason}")
    return checked


def _request(value: object, field: str, refused: Refusal) -> dict:
    if isinstance(value, str):
        value = {"url": value}
    fields = _object(value, field, REQUEST_FIELDS, required=("url",))
    method = _method(fields.get("method", "GET"), f"{field}.method")
    body = fields.get("body")
    if "body" in fields and (not isinstance(body, str) or method == "GET"):
        raise Invalid(f"{field}.body", "must be a string, and only for methods other than GET")
    given = _header_changes(fields.get("headers", {}), f"{field}.headers", removable=False)
    return {
        "url": destination(fields["url"], f"{field}.url", refused),
        "method": method,
        "headers": given,
        "body": body.encode() if body is not None else None,
        "integrity": _checked(check_integrity, fields["integrity"], f"{field}.integrity") if "integrity" in fields else None,
        "credential": credential_key(given),
    }


def _record_change(value: object, field: str, record_count: int, refused: Refusal) -> dict:
    fields = _object(value, field, RECORD_CHANGE_FIELDS, required=("index",))
    index = fields["index"]
    if type(index) is not int or not 0 <= index < record_count:
        raise Invalid(f"{field}.index", f"must be the index of a record, 0 to {record_count - 1}")
    change: dict = {"index": index, "headers": _header_changes(fields.get("headers", {}), f"{field}.headers", removable=True)}
    if "url" in fields:
        change["url"] = destination(fields["url"], f"{field}.url", refused)
    return change


def _object(value: object, field: str, known: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise Invalid(field, "must be a JSON object")
    where = f"{field}." if field else ""
    for name in value:
        if name not in known:
            raise Invalid(where + name, f"is not a field here; the fields are {', '.join(sorted(known))}")
    for name in required:
        if name not in value:
            raise Invalid(where + name, "is required")
    return value


def _text(value: object, field: str, longest: int) -> str:
    if not isinstance(value, str) or len(value) > longest:
        raise Invalid(field, f"must be a string of at most {longest} characters")
    return value


def _checked(check: Callable[[object], None], value: Checked, field: str) -> Checked:
    """value when the shared vocabulary's `check` passes it; Invalid naming the field otherwise."""
    try:
        check(value)
    except ValueError as exc:
        raise Invalid(field, str(exc)) from None
    return value


def _download_total(value: object, field: str) -> int | None:
    """downloadTotal in bytes, None for 0 (no limit)."""
    if type(value) is int and value == 0:
        return None
    try:
        check_download_total(value)
    except ValueError as exc:
        raise Invalid(field, f"{exc}, or 0 for no limit") from None
    return value


def _method(value: object, field: str) -> str:
    if not isinstance(value, str) or not TOKEN.fullmatch(value) or len(value) > 32:
        raise Invalid(field, "must be an HTTP method such as GET or POST")
    if value.upper() in FORBIDDEN_METHODS:
        raise Invalid(field, f"may not be {value}; a background fetch needs a response body")
    return value.upper() if value.upper() in NORMALISED_METHODS else value


def _header_changes(value: object, field: str, removable: bool) -> list[tuple[str, str | None]]:
    """Header fields from a JSON object of name -> value (null: remove it, when `removable`)."""
    if not isinstance(value, dict) or len(value) > 100:
        raise Invalid(field, "must be a JSON object of header names to values")
    found = []
    for name, text in value.items():
        if not TOKEN.fullmatch(name):
            raise Invalid(f"{field}.{name}", "is not a valid header name")
        if text is None and removable:
            found.append((name, None))
        elif not isinstance(text, str) or len(text) > MAX_TEXT or not FIELD_VALUE.fullmatch(text):
            raise Invalid(f"{field}.{name}", "must be a string of printable ASCII" + (" or null" if removable else ""))
        else:
            found.append((name, text))
    return found


def _icons(value: object, field: str) -> list[dict]:
    if not isinstance(value, list) or len(value) > MAX_ICONS:
        raise Invalid(field, f"must be a list of at most {MAX_ICONS} icons {{src, sizes, type, label}}")
    for n, icon in enumerate(value):
        _object(icon, f"{field}[{n}]", ICON_FIELDS, required=("src",))
        for name, text in icon.items():
            _text(text, f"{field}[{n}].{name}", MAX_TEXT)
    return value
