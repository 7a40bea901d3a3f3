"""Who a registration belongs to, and which requests may join it, be served by it or replace it.

A registration made through the control API (or a command) belongs to the API; one made by a
proxy request (its `Background-Fetch` header or a rule) belongs to that request, named by its
key: a hash of its method, URL, credentials and body. A proxy request may join a registration,
or be served by it, only when one of its records is that same request; it may start a
registration under a taken id only in place of a failed one that it made itself. The API may
replace any registration that is no longer active, as the spec's `fetch()` may.
"""

import hashlib
import json

API = "api"


def body_hash(body: bytes | None) -> str:
    """What a record keeps of its request body once the body is dropped: its SHA-256, "" for none."""
    return hashlib.sha256(body).hexdigest() if body else ""


def request_key(method: str, url: str, credential: str, body_digest: str) -> str:
    """The key of a request: the same for two requests only when all four parts are equal."""
    return hashlib.sha256(json.dumps([method, url, credential, body_digest]).encode()).hexdigest()


def record_key(record) -> str:
    """The key of the request a stored record (`store.db.Record`) was made for."""
    return request_key(record.method, record.url, record.credential, record.body_hash)


def may_replace(owner: str, existing_owner: str, existing_result: str) -> bool:
    """Whether `owner` may put a new registration in the place of an inactive one."""
    return owner == API or (owner == existing_owner and existing_result == "failure")
