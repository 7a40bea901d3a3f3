"""How one try of a transfer ends, when it does not succeed: `Pause` (try again later) or
`Failure` (the registration ends), sorted at the boundary as httpx maps httpcore's errors.

A `faults.StorageFault` (a full disk, another process's lock) ends a try as a pause too.
Each pause has a reason from PAUSE_REASONS (`pause_reason`), which the metrics and the log
name: a short, fixed word, never a URL.
"""

import ssl
from dataclasses import dataclass

import httpx

from store.db import StorageBusy, StorageFault, StorageFull

PAUSE_REASONS = (
    "connect-error",  # refused, DNS, no route
    "timeout",
    "connection-lost",  # reset, closed, a protocol error mid-body
    "short-body",  # the body ended before its Content-Length
    "entity-changed",  # a resume was answered with other bytes: it starts again
    "credentials-refused",  # 401/403 while resuming
    "disk-full",
    "database-locked",  # another process holds the database's write lock
    "storage-error",
    "other",
)


class Pause(Exception):
    """The transfer cannot go on now; it will be retried. `reason`: one of PAUSE_REASONS."""

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason


def pause_reason(exc: BaseException) -> str:
    """The PAUSE_REASONS word for what paused a transfer (a Pause or a StorageFault)."""
    if isinstance(exc, Pause):
        return exc.reason
    if isinstance(exc, StorageFull):
        return "disk-full"
    if isinstance(exc, StorageBusy):
        return "database-locked"
    return "storage-error" if isinstance(exc, StorageFault) else "other"


class Failure(Exception):
    """The registration fails with `reason` (a spec failureReason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def transport_problem(url: str, exc: httpx.TransportError) -> Exception:
    """`Pause` for trouble that may pass; `Failure` for what no retry can fix."""
    if isinstance(exc, httpx.UnsupportedProtocol) or _caused_by(exc, ssl.SSLCertVerificationError):
        return Failure("fetch-error", f"{url}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        reason = "timeout"
    elif isinstance(exc, (httpx.ConnectError, httpx.ProxyError)):
        reason = "connect-error"
    else:
        reason = "connection-lost"
    return Pause(f"{url}: {type(exc).__name__}: {exc or 'connection lost'}", reason)


def _caused_by(exc: BaseException, kind: type[BaseException], depth: int = 8) -> bool:
    while exc is not None and depth:
        if isinstance(exc, kind):
            return True
        exc, depth = exc.__cause__ or exc.__context__, depth - 1
    return False


@dataclass(frozen=True)
class Limit:
    """The most bytes a record may hold, and the failure when it would hold more."""

    most: int
    reason: str
    setting: str

    def failure(self, url: str) -> Failure:
        return Failure(self.reason, f"{url} does not fit in {self.setting} ({max(self.most, 0)} bytes left for it)")
