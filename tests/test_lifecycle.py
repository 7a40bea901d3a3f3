"""The registration lifecycle (store/engine/lifecycle.py): every edge of the table, and what finishing does to the tables."""

import itertools

import pytest

from store.db import schema, tables
from store.engine import lifecycle

STATES = ("pending", "fetching", "paused", "done")
EVENTS = ("start", "pause", "retry", "succeed", "fail", "abort")
PAIRS = list(itertools.product(STATES, EVENTS))

# The whole table, written out: (state, event) -> next state; every other pair is refused.
EDGES = {
    ("pending", "start"): "fetching",
    ("fetching", "pause"): "paused",
    ("paused", "retry"): "pending",
    ("fetching", "succeed"): "done",
    ("pending", "fail"): "done",
    ("fetching", "fail"): "done",
    ("paused", "fail"): "done",
    ("pending", "abort"): "done",
    ("fetching", "abort"): "done",
    ("paused", "abort"): "done",
}


@pytest.mark.parametrize("state, event", PAIRS)
def test_every_pair_of_state_and_event(state, event):
    if (state, event) in EDGES:
        assert lifecycle.next_state(state, event) == EDGES[(state, event)]
    else:
        with pytest.raises(lifecycle.LifecycleError, match=f"cannot {event} a registration that is {state}"):
            lifecycle.next_state(state, event)


def test_the_table_is_the_one_written_here():
    assert lifecycle.TRANSITIONS == EDGES
    assert set(lifecycle.ACTIVE) == set(STATES) - {"done"}


@pytest.mark.parametrize(
    "event, reason, outcome",
    [
        ("succeed", "", ("success", "")),
        ("abort", "", ("failure", "aborted")),
        *[("fail", reason, ("failure", reason)) for reason in lifecycle.FAILURE_REASONS],
        ("start", "", ("", "")),
        ("pause", "", ("", "")),
        ("retry", "", ("", "")),
    ],
)
def test_outcome(event, reason, outcome):
    assert lifecycle.outcome(event, reason) == outcome


def test_an_unknown_failure_reason_is_refused():
    with pytest.raises(lifecycle.LifecycleError, match="unknown failure reason"):
        lifecycle.outcome("fail", "tired")


@pytest.fixture
def conn(tmp_path):
    connection = schema.connect(str(tmp_path / "bgfetch.sqlite3"))
    schema.migrate(connection)
    yield connection
    connection.close()


def registration_at(conn, path: list[str]) -> None:
    """A registration 'r' with one record holding two stored bytes, walked along `path`."""
    tables.create(conn, {"id": "r", "title": ""}, [{"url": "http://o/x", "headers": [["Cookie", "c=1"]], "body": b"q"}])
    record = tables.records(conn, "r")[0]["id"]
    tables.set_response(conn, record, 200, [], 2)
    tables.append_chunk(conn, record, 0, 0, [b"ab"])
    for event in path:
        tables.transition(conn, "r", event)


PATHS = {  # a way to reach each state from a new registration
    "pending": [],
    "fetching": ["start"],
    "paused": ["start", "pause"],
    "done": ["start", "succeed"],
}


@pytest.mark.parametrize("state, event", PAIRS)
def test_every_edge_through_the_tables(conn, state, event):
    registration_at(conn, PATHS[state])
    reason = "bad-status" if event == "fail" else ""
    if (state, event) not in EDGES:
        with pytest.raises(lifecycle.LifecycleError):
            tables.transition(conn, "r", event, reason)
        assert tables.registration(conn, "r")["state"] == state
        return
    assert tables.transition(conn, "r", event, reason, error="why") == EDGES[(state, event)]
    shown = tables.registration(conn, "r")
    record = tables.records(conn, "r")[0]
    assert (shown["state"], shown["lastError"]) == (EDGES[(state, event)], "why")
    assert (shown["result"], shown["failureReason"]) == lifecycle.outcome(event, reason)
    finished = shown["state"] == "done"
    assert (record["request_headers"] is None, record["request_body"] is None) == (finished, finished)
    kept = shown["result"] != "failure"
    assert (record["stored"], shown["recordsAvailable"]) == ((2, True) if kept else (0, False))
    assert conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == (1 if kept else 0)


def test_a_missing_registration(conn):
    with pytest.raises(tables.NotFound):
        tables.transition(conn, "nope", "start")


def test_an_active_id_cannot_be_created_again_but_a_done_one_is_replaced(conn):
    registration_at(conn, ["start"])
    with pytest.raises(tables.Conflict):
        tables.create(conn, {"id": "r", "title": ""}, [{"url": "http://o/y"}])
    tables.transition(conn, "r", "succeed")
    tables.create(conn, {"id": "r", "title": "again"}, [{"url": "http://o/y"}])
    assert tables.registration(conn, "r")["state"] == "pending"
    assert [row["url"] for row in tables.records(conn, "r")] == ["http://o/y"]
