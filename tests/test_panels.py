"""The dashboard's panels (bench/panels.py): deploy/grafana-dashboard.json is the table's, every query
names a metric the store exposes, and the series drawn from scrapes are what Prometheus would
compute (a rate, a gauge summed by label, a histogram's 99th percentile). The picture of a real
run: `python -m bench.watch`."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from bench.panels import PANELS, Query, grafana, promql, series
from harness.metrics import Scrape
from store.db.sqlite import SqliteStorage
from store.engine.service import Store

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json"


def test_the_grafana_dashboard_is_the_panels_table():
    assert json.loads(DASHBOARD.read_text()) == grafana(), "remake it: python -m bench.panels > deploy/grafana-dashboard.json"
    exprs = [target["expr"] for panel in grafana()["panels"] for target in panel["targets"]]
    assert 'max by (state) (bgfetch_registrations{state!="done"})' in exprs
    assert "sum by (source) (rate(bgfetch_served_bytes_total[$__rate_interval]))" in exprs


def test_every_query_names_a_metric_the_store_exposes(tmp_path):
    async def exposed() -> str:
        async with httpx.AsyncClient() as client:
            store = Store(SqliteStorage.open(str(tmp_path / "p.sqlite3")), client, quota=10**9)
            try:
                return (await store.observer.exposition(None))[0].decode()
            finally:
                await store.close()

    names = {name for name, _ in Scrape(asyncio.run(exposed())).samples}
    for panel in PANELS:
        for query in panel.queries:
            assert (f"{query.metric}_bucket" if query.how == "p99" else query.metric) in names, promql(query)
            assert all(label in {"state", "source", "result", "reason", "outcome"} for label in query.by)


def scrapes(*texts: str) -> list[tuple[float, Scrape]]:
    """Scrapes of these texts, 2 s apart."""
    return [(2.0 * n, Scrape(text)) for n, text in enumerate(texts)]


def test_a_rate_is_the_counters_growth_a_second_summed_by_the_labels():
    taken = scrapes(
        'bgfetch_served_bytes_total{route="proxy",source="store"} 100\nbgfetch_served_bytes_total{route="api",source="store"} 0\n',
        'bgfetch_served_bytes_total{route="proxy",source="store"} 300\nbgfetch_served_bytes_total{route="api",source="store"} 100\n',
    )
    query = Query("bgfetch_served_bytes_total", "rate", by=("source",), legend="{{source}}")
    assert series(query, taken) == {"store": [(2.0, 150.0)]}


def test_a_gauge_is_summed_by_its_labels_and_filtered():
    taken = scrapes('bgfetch_registrations{state="done",result="success",reason="none"} 7\n'
                    'bgfetch_registrations{state="paused",result="none",reason="none"} 2\n')
    query = Query("bgfetch_registrations", by=("state",), where=(("state", "!done"),), over="max", legend="{{state}}")
    assert series(query, taken) == {"paused": [(0.0, 2.0)]}
    assert promql(query) == 'max by (state) (bgfetch_registrations{state!="done"})'


def test_the_99th_percentile_is_interpolated_in_its_bucket():
    def histogram(counts: tuple[int, int, int]) -> str:
        return "".join(f'bgfetch_event_loop_lag_seconds_bucket{{le="{le}"}} {n}\n'
                       for le, n in zip(("0.01", "0.1", "+Inf"), counts))

    taken = scrapes(histogram((0, 0, 0)), histogram((50, 100, 100)))
    ((at, p99),) = series(Query("bgfetch_event_loop_lag_seconds", "p99", legend="p99"), taken)["p99"]
    assert at == 2.0 and p99 == pytest.approx(0.01 + (0.1 - 0.01) * (99 - 50) / 50)
