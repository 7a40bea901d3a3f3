"""How one try of a transfer ends, when it does not succeed: `Pause` (try again later) or
`Failure` (the registration ends), sorted at the boundary as httpx maps httpcore's errors.

A `faults.StorageFault` (a full disk, another process's lock) ends a try as a pause too.
"""

import ssl
from dataclasses import dataclass

import httpx


class Pause(Exception):
    """The transfer cannot go on now; it will be retried."""


class Failure(Exception):
    """The registration fails with `reason` (a spec failureReason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def transport_problem(url: str, exc: httpx.TransportError) -> Exception:
    """`Pause` for trouble that may pass; `Failure` for what no retry can fix."""
    if isinstance(exc, httpx.UnsupportedProtocol) or _caused_by(exc, ssl.SSLCertVerificationError):
        return Failure("fetch-error", f"{url}: {exc}")
    return Pause(f"{url}: {type(exc).__name__}: {exc or 'connection lost'}")


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
