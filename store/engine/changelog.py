"""The log of background fetches: a line per state change of a registration, repeated pauses folded.

Each line, at INFO on the logger `store.fetches` (a name to filter on), holds the
registration's id, its URL (its first request's; `urls` counts them when there are more), its
state, result or pause reason, and its bytes, as `key=value` pairs; the same fields go with the
record as `fields`, which the JSON lines of `bgfetch_log_format=json` carry
(`store.proxyside.pipes`). The store's log reaches mitmproxy's.

A transfer that pauses again and again (an origin that drops every few seconds, a database
that another process keeps locked) would write three lines a try: paused, pending, fetching.
So after a pause line, a registration's pauses, retries and starts are folded for
FOLD_SECONDS: the first bytes it commits write one line (fetching, `resumed`), and the first
pause after the window writes one with the count of the pauses folded since the last line
(`pauses`). Its end always writes a line, with that count.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("store.fetches")

FOLD_SECONDS = 60.0
STORM = ("retry", "start")  # the steps of a retry, folded while a registration's pauses are


@dataclass
class _Folding:
    """A registration that has paused: when its window ends, and what was folded meanwhile."""

    until: float
    pauses: int = 0  # pauses not written since the last line
    resumed: bool = False  # a `resumed` line has been written in this window


# registration id -> (the registration as the API shows it, the URLs of its records), or None
Describe = Callable[[str], tuple[dict, list[str]] | None]


class ChangeLog:
    """Writes the lines; `describe` reads what a line says of a registration."""

    def __init__(self, describe: Describe, clock: Callable[[], float] = time.monotonic) -> None:
        self.describe = describe
        self.clock = clock
        self._folding: dict[str, _Folding] = {}

    def changed(self, reg_id: str, event: str, reason: str = "", error: str = "") -> None:
        """A lifecycle `event` of `reg_id` (or "create"), with a pause's or failure's `reason`
        and the `error` it gave."""
        folding = self._folding.get(reg_id)
        if event in ("pause", "hold"):
            now = self.clock()
            if folding is not None and now < folding.until:
                folding.pauses += 1
                return
            self._folding[reg_id] = _Folding(now + FOLD_SECONDS)
            self._write(reg_id, reason=reason, error=error, pauses=folding.pauses if folding else 0)
        elif event in STORM and folding is not None:
            return
        else:
            self._folding.pop(reg_id, None)
            self._write(reg_id, reason=reason if event == "fail" else "", error=error,
                        pauses=folding.pauses if folding else 0)

    def progressed(self, reg_id: str) -> None:
        """`reg_id` committed body bytes: after a pause, the first of them write a line."""
        folding = self._folding.get(reg_id)
        if folding is not None and not folding.resumed:
            folding.resumed = True
            self._write(reg_id, resumed=True, pauses=folding.pauses)
            folding.pauses = 0

    def forget(self, reg_id: str) -> None:
        """`reg_id` is gone: nothing of it is kept."""
        self._folding.pop(reg_id, None)

    def requeued(self, count: int) -> None:
        """At start-up, `count` active registrations run again (one line, not one each)."""
        if count:
            logger.info("%d active background fetches resume from their stored bytes", count,
                        extra={"fields": {"requeued": count}})

    def _write(self, reg_id: str, **more) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        described = self.describe(reg_id)
        if described is None:
            return
        registration, urls = described
        fields = {
            "id": reg_id,
            "state": registration["state"],
            "result": registration["result"],
            "reason": more.pop("reason", "") or registration["failureReason"],
            "bytes": registration["downloaded"],
            "url": urls[0] if urls else "",
        }
        if len(urls) > 1:
            fields["urls"] = len(urls)
        fields.update({key: value for key, value in more.items() if value})
        logger.info("%s", logfmt(fields), extra={"fields": fields})


def logfmt(fields: dict) -> str:
    """`key=value` pairs, but for empty values; a value with a space, a quote or an `=` in it is
    quoted as JSON quotes it (so a line never holds a raw control character)."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items() if value != "")


def _value(value) -> str:
    if value is True:
        return "true"
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "='):
        return text
    return json.dumps(text, ensure_ascii=False)
