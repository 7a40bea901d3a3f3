"""The registration lifecycle (store/engine/lifecycle.py): every edge of the table, and what finishing does to the tables."""

import itertools

import pytest

from store.db import NewRecord, chunks, records, registrations, schema
from store.db.storage import Conflict, NotFound
from store.engine import lifecycle, service

STATES = ("pending", "fetching", "paused", "done")
EVENTS = ("start", "pause", "retry", "succeed", "fail", "abort", "hold", "requeue")
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
    ("pending", "hold"): "paused",
    ("fetching", "hold"): "paused",
    ("paused", "hold"): "paused",
    ("pending", "requeue"): "pending",
    ("fetching", "requeue"): "pending",
    ("paused", "requeue"): "pending",
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
        ("hold", "", ("", "")),
        ("requeue", "", ("", "")),
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


def create(conn, registration: dict, requests: list[dict]) -> None:
    registrations.create(conn, {"owner": "api", **registration}, [NewRecord(**r) for r in requests], service._may_replace)


def transition(conn, reg_id: str, event: str, reason: str = "", error: str = "") -> str:
    return registrations.transition(conn, reg_id, event, lifecycle.step, reason, error)


def registration_at(conn, path: list[str]) -> None:
    """A registration 'r' with one record holding two stored bytes, walked along `path`."""
    create(conn, {"id": "r", "title": ""}, [{"url": "http://o/x", "headers": [("Cookie", "c=1")], "body": b"q"}])
    record = records.records(conn, "r")[0].id
    records.set_response(conn, record, 200, [], 2)
    chunks.append(conn, record, 0, 0, [b"ab"])
    for event in path:
        transition(conn, "r", event)


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
            transition(conn, "r", event, reason)
        assert registrations.registration(conn, "r")["state"] == state
        return
    assert transition(conn, "r", event, reason, error="why") == EDGES[(state, event)]
    shown = registrations.registration(conn, "r")
    record = records.records(conn, "r")[0]
    assert (shown["state"], shown["lastError"]) == (EDGES[(state, event)], "why")
    assert (shown["result"], shown["failureReason"]) == lifecycle.outcome(event, reason)
    finished = shown["state"] == "done"
    kept_headers, kept_body = conn.execute("SELECT request_headers, request_body FROM records").fetchone()
    assert (kept_headers is None, kept_body is None) == (finished, finished)
    kept = shown["result"] != "failure"  # a failure drops the partial body; the record stays
    assert (record.stored, shown["recordsAvailable"]) == (2 if kept else 0, True)
    assert conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == (1 if kept else 0)


@pytest.mark.parametrize("event, reason", [("fail", "bad-status"), ("abort", "")])
def test_a_failure_keeps_the_complete_records_and_drops_the_partial_ones(conn, event, reason):
    create(conn, {"id": "r", "title": ""}, [{"url": "http://o/whole"}, {"url": "http://o/partial"}])
    whole, partial = (record.id for record in records.records(conn, "r"))
    for record_id, data in ((whole, b"abc"), (partial, b"de")):
        records.set_response(conn, record_id, 200, [], 3)
        chunks.append(conn, record_id, 0, 0, [data])
    records.complete(conn, whole)
    transition(conn, "r", "start")
    transition(conn, "r", event, reason)
    assert [(r.url, r.stored, r.complete) for r in records.records(conn, "r")] == [
        ("http://o/whole", 3, True), ("http://o/partial", 0, False)]
    assert b"".join(chunks.read(conn, whole, 0, 3)) == b"abc"
    assert conn.execute("SELECT COUNT(*) FROM chunks WHERE record_id = ?", [partial]).fetchone()[0] == 0
    assert records.held(conn) == 3  # the quota counts what a failed registration keeps
    assert registrations.registration(conn, "r")["downloaded"] == 3


def test_a_missing_registration(conn):
    with pytest.raises(NotFound):
        transition(conn, "nope", "start")


def test_an_active_id_cannot_be_created_again_but_a_done_one_is_replaced(conn):
    registration_at(conn, ["start"])
    with pytest.raises(Conflict):
        create(conn, {"id": "r", "title": ""}, [{"url": "http://o/y"}])
    transition(conn, "r", "succeed")
    create(conn, {"id": "r", "title": "again"}, [{"url": "http://o/y"}])
    assert registrations.registration(conn, "r")["state"] == "pending"
    assert [record.url for record in records.records(conn, "r")] == ["http://o/y"]
