"""The store's metrics for Prometheus: counters moved where things happen, gauges read when scraped.

Each `Store` has a `Metrics` of its own on a registry of its own (never prometheus_client's
global one: two stores in one process, as in the tests, never mix). Counters move where things
happen: every state change in `Store.transition` (`changed`), origin bytes in the transfer,
served bytes in the web layer, deliveries in the webhook. Gauges are read when `/metrics` is
asked (`Readings`, turned into metric families by a collector): registrations by state and
result (`Storage.tally`), the transfer loop's tasks, the store's size against its quota, and
what storage reports of itself (`Storage.figures`: SQLite's file and WAL sizes; a fleet's
leases and backends).

Labels hold only words of fixed lists (events, states, reasons, routes, sources, outcomes),
never a URL or an id: the number of series stays bounded whatever the registrations.
prometheus_client writes the text format (`exposition`); nothing here formats it.
"""

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from store.db import Figure, Tally
from store.engine import lifecycle
from store.engine.outcomes import PAUSE_REASONS
from vocabulary import FAILURE_REASONS, STATES

EVENTS = tuple(sorted({event for _, event in lifecycle.TRANSITIONS}))
RESULTS = ("none", "success", "failure")  # none: still active
REASONS = ("none", *FAILURE_REASONS)
# (result, reason) of a registration: still active, a success, a failure for each reason
_OUTCOMES = [("none", "none"), ("success", "none"), *(("failure", reason) for reason in FAILURE_REASONS)]
ENDS = ("succeed", "fail", "abort")
ROUTES = ("proxy", "api")  # a proxied request; the API's record body route
# store: a stored body, the origin not asked; revalidated: a stored body after the origin was
# asked (304, or it could not answer); transfer: a body still downloading; origin: the origin's
# new answer to a revalidation (stored as it comes, a renewal, or relayed)
SOURCES = ("store", "revalidated", "transfer", "origin")
REVALIDATIONS = ("not-modified", "modified", "unreachable", "origin-error", "other")
DELIVERIES = ("delivered", "failed", "dropped")
TRANSFERS = ("running", "waiting", "paused")
LAG_SECONDS = 0.5  # how often the event loop's lag is sampled
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def word(value: str, allowed: tuple[str, ...]) -> str:
    """`value` if it is one of `allowed`, else "other": a label never takes a word from outside."""
    return value if value in allowed else "other"


@dataclass
class Readings:
    """What the gauges show, read when `/metrics` is asked (`Observer.readings`)."""

    tally: Tally | None = None
    transfers: dict[str, int] = field(default_factory=dict)
    slots: int = 0
    held: int = 0
    quota: int | None = None
    subscribers: int = 0
    figures: list[Figure] = field(default_factory=list)


class Metrics:
    """The counters of one store, and `exposition` of them with the gauges of `Readings`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._readings = Readings()
        self.registry.register(_Gauges(lambda: self._readings))

        def counter(name: str, help_: str, labels: tuple[str, ...] = (), series: Iterable[tuple] = ()) -> Counter:
            made = Counter(name, help_, labels, registry=self.registry)
            for values in series:  # each series there from the start, at 0
                made.labels(*values)
            return made

        reasons = [(reason,) for reason in PAUSE_REASONS]
        self.created = counter("bgfetch_registrations_created", "Background fetches made.")
        self.transitions = counter("bgfetch_transitions", "State changes of background fetches, by lifecycle"
                                   " event.", ("event",), [(event,) for event in EVENTS])
        self.finished = counter("bgfetch_registrations_finished", "Background fetches that ended, by result and"
                                " failure reason (none for a success).", ("result", "reason"), _OUTCOMES[1:])
        self.pauses = counter("bgfetch_pauses", "Transfers paused, by reason.", ("reason",), reasons)
        self.retries = counter("bgfetch_retries", "Paused transfers tried again, by the reason they paused for.",
                               ("reason",), reasons)
        self.fetched = counter("bgfetch_fetched_bytes", "Body bytes received from origins by background fetches.")
        where = ("route", "source"), list(itertools.product(ROUTES, SOURCES))
        self.served = counter("bgfetch_served_bytes", "Body bytes sent to clients, by route (proxy, api) and"
                              " source (store: stored, the origin not asked; revalidated: stored, after asking"
                              " the origin; transfer: still downloading; origin: the origin's new answer).", *where)
        self.responses = counter("bgfetch_served_responses", "Responses sent from the store (304s included), by"
                                 " route and source as bgfetch_served_bytes_total.", *where)
        self.revalidations = counter("bgfetch_revalidations", "Stored responses checked with their origin, by"
                                     " outcome.", ("outcome",), [(o,) for o in REVALIDATIONS])
        self.deliveries = counter("bgfetch_webhook_deliveries", "Events for the webhook, by outcome (failed: after"
                                  " every try; dropped: its queue was full).", ("outcome",), [(o,) for o in DELIVERIES])
        self.webhook_posts = counter("bgfetch_webhook_posts", "POSTs to the webhook, retries included.")
        self.loop_lag = Histogram("bgfetch_event_loop_lag_seconds", "How late the store's event loop ran a timer"
                                  f" (sampled every {LAG_SECONDS} s).", buckets=LAG_BUCKETS, registry=self.registry)
        self._paused_for: dict[str, str] = {}  # registration id -> why its last pause was (until it retries)

    def changed(self, reg_id: str, event: str, reason: str = "") -> None:
        """A lifecycle `event` of `reg_id` (or "create"); `reason`: a failure's, or a pause's
        (PAUSE_REASONS), which its retry is then counted under."""
        if event == "create":
            self.created.inc()
            return
        self.transitions.labels(word(event, EVENTS)).inc()
        if event in ("pause", "hold"):
            self._paused_for[reg_id] = word(reason, PAUSE_REASONS)
            self.pauses.labels(self._paused_for[reg_id]).inc()
        elif event == "retry":
            self.retries.labels(self._paused_for.pop(reg_id, "other")).inc()
        elif event in ENDS:
            self.forget(reg_id)
            result, failure = lifecycle.outcome(event, reason)
            self.finished.labels(result, failure or "none").inc()

    def forget(self, reg_id: str) -> None:
        """`reg_id` is gone or ended: nothing of it is kept."""
        self._paused_for.pop(reg_id, None)

    def revalidated(self, outcome: str) -> None:
        """The origin was asked about a stored response: `outcome` (REVALIDATIONS)."""
        self.revalidations.labels(word(outcome, REVALIDATIONS)).inc()

    def served_to(self, route: str, source: str) -> Counter:
        """The counter of bytes for one response of `route` from `source`, which is counted."""
        labels = word(route, ROUTES), word(source, SOURCES)
        self.responses.labels(*labels).inc()
        return self.served.labels(*labels)

    async def sample_lag(self) -> None:
        """Observe the event loop's lag every LAG_SECONDS, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_SECONDS)
            self.loop_lag.observe(max(0.0, loop.time() - before - LAG_SECONDS))

    def exposition(self, readings: Readings, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format `accept` asks for (Prometheus text, or OpenMetrics), and its
        media type, with the gauges of `readings`."""
        encode, media_type = choose_encoder(accept or "")
        self._readings = readings
        return encode(self.registry), media_type


class _Gauges:
    """A collector of the gauges of the latest `Readings`."""

    def __init__(self, latest) -> None:
        self.latest = latest

    def collect(self) -> Iterable[Metric]:
        readings: Readings = self.latest()
        if readings.tally is not None:
            counts = {(s, r, why): 0 for s in STATES for r, why in _OUTCOMES if (s == "done") == (r != "none")}
            for (state, result, reason), count in readings.tally.items():
                key = word(state, STATES), word(result or "none", RESULTS), word(reason or "none", REASONS)
                counts[key] = counts.get(key, 0) + count
            yield _gauge("bgfetch_registrations", "Background fetches in the store, by state, result and failure"
                         " reason.", ("state", "result", "reason"), counts)
        yield _gauge("bgfetch_transfers", "Transfers of this process: running (a slot held), waiting for a slot,"
                     " paused (waiting to retry).", ("state",), {(s,): readings.transfers.get(s, 0) for s in TRANSFERS})
        yield _gauge("bgfetch_transfer_slots", "Transfers that may run at once (bgfetch_concurrency).", (), {(): readings.slots})
        yield _gauge("bgfetch_store_bytes", "Bytes the store holds or will hold for the bodies it is fetching (what"
                     " bgfetch_quota counts).", (), {(): readings.held})
        if readings.quota is not None:
            yield _gauge("bgfetch_quota_bytes", "bgfetch_quota: most bytes the store may hold.", (), {(): readings.quota})
        yield _gauge("bgfetch_event_subscribers", "Clients reading /api/events.", (), {(): readings.subscribers})
        yield from _figures(readings.figures)



def _gauge(name: str, help_: str, labels: tuple[str, ...], values: dict[tuple, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_, labels=list(labels))
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _figures(figures: list[Figure]) -> Iterable[Metric]:
    """Storage's own figures as metric families: `bgfetch_<name>`, one family per name."""
    families: dict[str, Metric] = {}
    for figure in figures:
        name = f"bgfetch_{figure.name}"
        labels = [key for key, _ in figure.labels]
        if name not in families:
            kind = CounterMetricFamily if figure.counter else GaugeMetricFamily
            families[name] = kind(name.removesuffix("_total") if figure.counter else name, figure.help, labels=labels)
        families[name].add_metric([value for _, value in figure.labels], figure.value)
    return families.values()

