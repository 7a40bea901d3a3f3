"""The panels of bgfetch's dashboard, in one table: the Grafana dashboard (deploy/grafana-dashboard.json)
is made from it, and so is the picture of a real run (`bench.watch`), which computes each panel's
series from scrapes of /metrics as Prometheus would.

A query is a metric, how it is read — `value` (as it is), `rate` (per second), `p99` (the 99th
percentile of a histogram's observations) — summed (or for a fleet-wide gauge, max'd) by some
labels, one line each. `promql` writes it for Prometheus; `series` computes it from scrapes.

    python -m bench.panels > deploy/grafana-dashboard.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.metrics import Scrape


@dataclass(frozen=True)
class Query:
    metric: str
    how: str = "value"  # value, rate, p99
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()
    over: str = "sum"  # how the nodes of a fleet add up: sum, or max for what every node reports alike
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # Grafana's unit: short, bytes, Bps, ops, s
    queries: tuple[Query, ...]
    stacked: bool = False


PANELS = (
    Panel("Background fetches by state", "short",
          (Query("bgfetch_registrations", by=("state",), where=(("state", "!done"),), over="max", legend="{{state}}"),)),
    Panel("Transfers", "short", (Query("bgfetch_transfers", by=("state",), legend="{{state}}"),), stacked=True),
    Panel("Bytes from origins and to clients", "Bps", (
        Query("bgfetch_fetched_bytes_total", "rate", legend="from origins"),
        Query("bgfetch_served_bytes_total", "rate", by=("source",), legend="to clients: {{source}}"),
    )),
    Panel("Fetches ended", "ops", (
        Query("bgfetch_registrations_finished_total", "rate", by=("result", "reason"), legend="{{result}} {{reason}}"),
    ), stacked=True),
    Panel("Pauses by reason", "ops", (Query("bgfetch_pauses_total", "rate", by=("reason",), legend="{{reason}}"),),
          stacked=True),
    Panel("Revalidations by outcome", "ops",
          (Query("bgfetch_revalidations_total", "rate", by=("outcome",), legend="{{outcome}}"),), stacked=True),
    Panel("Store, quota and write-ahead log", "bytes", (
        Query("bgfetch_store_bytes", over="max", legend="stored"),
        Query("bgfetch_quota_bytes", over="max", legend="quota"),
        Query("bgfetch_wal_bytes", legend="WAL"),
    )),
    Panel("Event-loop lag, p99", "s", (Query("bgfetch_event_loop_lag_seconds", "p99", legend="p99"),)),
    Panel("Webhook deliveries", "ops",
          (Query("bgfetch_webhook_deliveries_total", "rate", by=("outcome",), legend="{{outcome}}"),), stacked=True),
)


def promql(query: Query) -> str:
    """The query in PromQL, over Grafana's `$__rate_interval`."""
    matchers = ",".join(f'{k}!="{v[1:]}"' if v.startswith("!") else f'{k}="{v}"' for k, v in query.where)
    selector = f"{query.metric}{{{matchers}}}" if matchers else query.metric
    if query.how == "p99":
        return f"histogram_quantile(0.99, sum by (le) (rate({query.metric}_bucket[$__rate_interval])))"
    inner = f"rate({selector}[$__rate_interval])" if query.how == "rate" else selector
    return f"{query.over} by ({', '.join(query.by)}) ({inner})" if query.by else f"{query.over}({inner})"


def grafana() -> dict:
    """The Grafana dashboard (import it; it asks for the Prometheus data source)."""
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = []
    for n, panel in enumerate(PANELS):
        panels.append({
            "id": n + 1, "type": "timeseries", "title": panel.title, "datasource": source,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
            "fieldConfig": {"defaults": {"unit": panel.unit, "min": 0, "custom": {
                "stacking": {"mode": "normal" if panel.stacked else "none"},
                "fillOpacity": 30 if panel.stacked else 0}}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + i), "datasource": source, "expr": promql(q), "legendFormat": q.legend}
                        for i, q in enumerate(panel.queries)],
        })
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": "bgfetch", "uid": "bgfetch", "tags": ["bgfetch", "mitmproxy"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def series(query: Query, scrapes: list[tuple[float, Scrape]], window: int = 1) -> dict[str, list[tuple[float, float]]]:
    """The query's lines, computed from scrapes of one node taken at the times given: legend ->
    points; a rate (and a quantile) over `window` scrapes."""
    if query.how == "p99":
        return {query.legend: [(t, _quantile(0.99, _buckets(before, after, query.metric)))
                               for (_, before), (t, after) in zip(scrapes, scrapes[window:])]}
    sums = [(t, _grouped(query, scrape)) for t, scrape in scrapes]
    lines: dict[str, list[tuple[float, float]]] = {}
    if query.how == "rate":
        for (t0, before), (t1, after) in zip(sums, sums[window:]):
            for key, value in after.items():
                lines.setdefault(key, []).append((t1, (value - before.get(key, 0.0)) / (t1 - t0)))
    else:
        for t, grouped in sums:
            for key, value in grouped.items():
                lines.setdefault(key, []).append((t, value))
    return lines


def _grouped(query: Query, scrape: Scrape) -> dict[str, float]:
    """The samples of the query's metric that its matchers take, summed by its labels (as legends)."""
    found: dict[str, float] = {}
    for (name, labels), value in scrape.samples.items():
        labels = dict(labels)
        if name != query.metric or not all(_matches(labels.get(k, ""), v) for k, v in query.where):
            continue
        legend = query.legend
        for label in query.by:
            legend = legend.replace("{{%s}}" % label, labels.get(label, ""))
        found[legend] = found.get(legend, 0.0) + value
    return found


def _matches(value: str, wanted: str) -> bool:
    return value != wanted[1:] if wanted.startswith("!") else value == wanted


def _buckets(before: Scrape, after: Scrape, metric: str) -> list[tuple[float, float]]:
    """(upper bound, observations up to it) of a histogram between two scrapes, by bound."""
    name = f"{metric}_bucket"
    return sorted((float(dict(labels)["le"]), value - before.samples.get((name, labels), 0.0))
                  for (sample, labels), value in after.samples.items() if sample == name)


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile: linear within the bucket the rank falls in (as Prometheus does)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0.0)
        lower, below = bound, count
    return lower


if __name__ == "__main__":
    print(json.dumps(grafana(), indent=2))
