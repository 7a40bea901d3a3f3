"""The protocol between the proxy and the store process, as both sides write and read it.

- The flows the proxy hands to the store go to INTERNAL_PATH routes on the store's internal
  port, with header fields of bgfetch's own (INTERNAL_PREFIX): the secret the two processes
  share, and the fetch spec, URL or record number. A client's copies are removed first. The
  store's response says in ANSWER how it answered (stored, joined, background) and for which
  id; the proxy shows it on the flow and removes it.
- The store's standard output: one JSON object a line. First its ports once it is ready
  ({"port": <internal>, "listen_port": <public or 0>}), then its announcements:
  {"added": <hex of url_digest>} for each URL a record takes, {"removed": n} when the records
  of n URLs go, {"dropped": n} when n announcements did not fit in its queue.

Standard library only: the addon imports it, and so does the store's web layer.
"""

import hashlib
import json

from vocabulary import INTERNAL_PREFIX

# What the proxy adds to the flows it redirects to the store, all under INTERNAL_PREFIX.
SECRET = "X-Bgfetch-Secret"
SPEC = "X-Bgfetch-Spec"
URL = "X-Bgfetch-Url"
RECORD = "X-Bgfetch-Record"
# What the store adds to its response to such a flow: how it answered it.
ANSWER = "X-Bgfetch-Answer"
ANSWERS = {
    "stored": "served from the store",  # a body the store holds whole
    "joined": "joined a background fetch",  # read while a fetch that was running writes it
    "background": "started a background fetch",  # this request made the registration
    "renewed": "a new version from the origin, stored as it arrives",  # a stale one's revalidation brought it
    "relayed": "the origin's answer, not stored",  # a stale one's revalidation was answered otherwise
}
# Where the proxy redirects those flows on the store's internal port. A client's own request
# for a path under INTERNAL_PATH (on bgfetch_host) is refused: these routes are the proxy's.
INTERNAL_PATH = "/_bgfetch/"
FETCH_PATH = INTERNAL_PATH + "fetch"
STORED_PATH = INTERNAL_PATH + "stored"

DIGEST_BYTES = 16
ANNOUNCEMENTS = ("added", "removed", "dropped")


def is_internal(name: str) -> bool:
    """Whether a header field name is one of bgfetch's own (a client may not send those)."""
    return name.lower().startswith(INTERNAL_PREFIX)


def url_digest(url: str) -> bytes:
    """The fixed-size hash that stands for a URL between the two processes."""
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def answer_value(answer: str, fetch_id: str) -> str:
    """The ANSWER field: one of ANSWERS, and the id of the registration (ASCII JSON)."""
    return json.dumps({"answer": answer, "id": fetch_id})


def parse_answer(value: str) -> tuple[str, str] | None:
    """(answer, id) of an ANSWER field, or None when it is not one."""
    try:
        message = json.loads(value)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("answer") in ANSWERS and isinstance(message.get("id"), str):
        return message["answer"], message["id"]
    return None


# -- the store's standard output ------------------------------------------------------


def ready_line(port: int, listen_port: int) -> bytes:
    return _line({"port": port, "listen_port": listen_port})


def added_line(url: str) -> bytes:
    return _line({"added": url_digest(url).hex()})


def removed_line(count: int) -> bytes:
    return _line({"removed": count})


def dropped_line(count: int) -> bytes:
    return _line({"dropped": count})


def parse_ready(line: bytes, cut: int = 0) -> dict[str, int]:
    """The ports of a ready line (`cut`: how many bytes the reader cut from its end);
    ValueError saying why when the line is not one."""
    message = _message(line, cut)
    if not (isinstance(message, dict) and type(message.get("port")) is int and type(message.get("listen_port")) is int):
        raise ValueError("not a JSON object of the integers port and listen_port")
    return message


def parse_announcement(line: bytes, cut: int = 0) -> tuple[str, bytes | int]:
    """(kind, value) of an announcement line: ("added", a digest), ("removed", a count) or
    ("dropped", a count); ValueError saying why when the line is not one."""
    message = _message(line, cut)
    if not isinstance(message, dict) or len(message) != 1:
        raise ValueError("not a JSON object of one member")
    (kind, value), = message.items()
    if kind == "added":
        if isinstance(value, str) and len(value) == 2 * DIGEST_BYTES:
            try:
                return kind, bytes.fromhex(value)
            except ValueError:
                pass
        raise ValueError(f"an added URL must be the hex of a {DIGEST_BYTES}-byte digest")
    if kind in ("removed", "dropped"):
        if type(value) is not int or value < 0:
            raise ValueError(f"a count of {kind} must be a whole number, 0 or more")
        return kind, value
    raise ValueError(f"the kinds are {', '.join(ANNOUNCEMENTS)}")


def _line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _message(line: bytes, cut: int) -> object:
    if cut:
        raise ValueError(f"too long: {cut} bytes of it were cut")
    try:
        return json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
