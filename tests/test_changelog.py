"""The log of background fetches (store/engine/changelog.py): a line per state change, a storm of
pauses folded into a few lines, `key=value` text that stays one line; and the JSON lines of
`bgfetch_log_format=json` (store/proxyside/pipes.py). End to end: test_operations_e2e.py."""

import json
import logging

import pytest

from store.engine import changelog
from store.engine.changelog import FOLD_SECONDS, ChangeLog, logfmt
from store.proxyside.pipes import MAX_FIELD_CHARS, JsonLines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log(caplog):
    """A ChangeLog of one registration "r" (the state is what the last event made it) and its lines."""
    caplog.set_level(logging.INFO, logger="store.fetches")
    state = {"id": "r", "state": "pending", "result": "", "failureReason": "", "downloaded": 0}
    clock = Clock()
    made = ChangeLog(lambda reg_id: (state, ["http://origin.test/a b", "http://origin.test/c"]) if reg_id == "r" else None, clock)
    made.state, made.clock_ = state, clock
    made.lines = lambda: [record.fields for record in caplog.records if record.name == "store.fetches"]
    return made


NEXT = {"start": "fetching", "pause": "paused", "retry": "pending", "succeed": "done", "fail": "done", "create": "pending"}


def step(log, event: str, reason: str = "", error: str = "", seconds: float = 1.0) -> None:
    log.clock_.now += seconds
    log.state["state"] = NEXT[event]
    log.changed("r", event, reason, error)


def test_each_state_change_is_one_line_with_id_url_state_reason_and_bytes(log):
    step(log, "create")
    step(log, "start")
    log.state["downloaded"] = 4096
    log.state.update(result="failure", failureReason="bad-status")
    step(log, "fail", "bad-status", "http://origin.test/a b answered 404")
    lines = log.lines()
    assert [line["state"] for line in lines] == ["pending", "fetching", "done"]
    assert lines[-1] == {"id": "r", "state": "done", "result": "failure", "reason": "bad-status", "bytes": 4096,
                         "url": "http://origin.test/a b", "urls": 2, "error": "http://origin.test/a b answered 404"}


def test_a_storm_of_pauses_is_folded_into_one_line_a_window_and_counted_at_the_end(log):
    step(log, "create")
    step(log, "start")
    for _ in range(30):  # every 2 s for a minute: refused, retried, started again
        step(log, "pause", "connect-error", "ConnectError")
        step(log, "retry", seconds=0.5)
        step(log, "start", seconds=0.5)
    step(log, "pause", "connect-error", "ConnectError")  # the window is over: a line with the count
    step(log, "retry")
    step(log, "start")
    log.state["downloaded"] = 10
    log.progressed("r")  # bytes again: one line says so
    log.progressed("r")
    log.state["result"] = "success"
    step(log, "succeed")
    lines = log.lines()
    assert [(line["state"], line.get("pauses", 0), line.get("resumed", False)) for line in lines] == [
        ("pending", 0, False), ("fetching", 0, False), ("paused", 0, False),
        ("paused", 29, False), ("fetching", 0, True), ("done", 0, False)]
    assert lines[2]["reason"] == "connect-error" and lines[2]["error"] == "ConnectError"


def test_pauses_folded_since_the_last_line_are_counted_on_the_end_and_a_resume_is_told_once_a_window(log):
    step(log, "create")
    step(log, "start")
    step(log, "pause", "connection-lost")
    step(log, "retry")
    step(log, "start")
    log.progressed("r")  # resumed: a line
    step(log, "pause", "connection-lost")  # within the window: folded
    step(log, "retry")
    step(log, "start")
    log.progressed("r")  # a second resume in the window: folded too
    step(log, "pause", "connection-lost")
    log.state.update(result="failure", failureReason="aborted")
    step(log, "fail", "aborted")
    states = [(line["state"], line.get("pauses", 0)) for line in log.lines()]
    assert states == [("pending", 0), ("fetching", 0), ("paused", 0), ("fetching", 0), ("done", 2)]
    assert log._folding == {}  # nothing kept of a registration that ended


def test_a_registration_that_is_gone_writes_nothing_and_is_forgotten(log):
    log.changed("gone", "create")
    step(log, "pause", "timeout")
    log.forget("r")
    assert log._folding == {}
    assert [line["id"] for line in log.lines()] == ["r"]


def test_nothing_is_read_when_info_is_not_logged(caplog):
    caplog.set_level(logging.WARNING, logger="store.fetches")
    ChangeLog(lambda reg_id: pytest.fail("described though nothing is written")).changed("r", "create")


def test_requeued_registrations_are_one_line(caplog):
    caplog.set_level(logging.INFO, logger="store.fetches")
    log = ChangeLog(lambda reg_id: None)
    log.requeued(0)
    log.requeued(1000)
    assert [record.getMessage() for record in caplog.records] == [
        "1000 active background fetches resume from their stored bytes"]


@pytest.mark.parametrize(("fields", "text"), [
    ({"id": "ep5", "bytes": 10, "result": ""}, "id=ep5 bytes=10"),
    ({"url": "http://o/?a=1"}, 'url="http://o/?a=1"'),
    ({"id": 'two words "quoted"'}, r'id="two words \"quoted\""'),
    ({"error": "line\nbreak\x1b[31m"}, r'error="line\nbreak\u001b[31m"'),
    ({"resumed": True}, "resumed=true"),
])
def test_logfmt_is_one_line_of_key_value_pairs(fields, text):
    assert logfmt(fields) == text


def test_json_lines_hold_the_fields_of_a_state_change_or_the_message_and_stay_json_when_long():
    formatter = JsonLines()
    record = logging.LogRecord("store.fetches", logging.INFO, __file__, 1, "%s", ("text",), None)
    record.fields = {"id": "r", "state": "done", "error": "x" * (MAX_FIELD_CHARS + 10)}
    level, _, text = formatter.format(record).partition(" ")
    entry = json.loads(text)
    assert level == "INFO" and entry["level"] == "info" and entry["logger"] == "store.fetches"
    assert entry["id"] == "r" and "message" not in entry and entry["time"].endswith("Z")
    assert entry["error"].endswith("[10 more characters cut]")
    plain = logging.LogRecord("store", logging.WARNING, __file__, 1, "a\n%s", ("b",), None)
    assert json.loads(formatter.format(plain).partition(" ")[2])["message"] == "a\nb"
    assert "\n" not in formatter.format(plain)

