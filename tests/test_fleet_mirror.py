"""store/db/postgres/mirror.py: a node's copy of the fleet's rows takes only newer rows, whatever order they come in."""

import pytest

from store.db import NotFound
from store.db.postgres.mirror import Mirror


def registration(reg_id: str, seq: int, version: int = 0, **more) -> dict:
    return {"id": reg_id, "seq": seq, "version": version, "title": "", "icons": "[]", "download_total": None,
            "upload_total": 0, "uploaded": 0, "state": "pending", "result": "", "failure_reason": "",
            "last_error": "", "created_at": 0.0, "updated_at": 0.0, **more}


def record(record_id: int, reg_id: str, seq: int, version: int = 0, **more) -> dict:
    return {"id": record_id, "registration_id": reg_id, "registration_seq": seq, "idx": 0, "method": "GET",
            "url": f"http://origin.example/{record_id}", "credential": "", "request_headers": "[]",
            "request_body": None, "body_hash": "", "integrity": None, "status": None, "response_headers": None,
            "size": None, "stored": 0, "received": 0, "generation": 0, "complete": False, "revalidate": "", "segments": 0,
            "reusable": True, "selecting": "",
            "version": version, **more}


def test_an_older_row_never_replaces_a_newer_one():
    mirror = Mirror()
    assert mirror.put_registration(registration("r", 1, version=2, state="fetching"))
    assert not mirror.put_registration(registration("r", 1, version=1, state="pending"))
    assert mirror.registration("r")["state"] == "fetching"
    assert mirror.put_record(record(7, "r", 1, version=3, stored=300))
    assert not mirror.put_record(record(7, "r", 1, version=2, stored=200))
    assert not mirror.put_bytes(7, 3, 250, 250)
    assert mirror.put_bytes(7, 4, 400, 400)
    assert mirror.record(7).stored == 400 and mirror.registration("r")["downloaded"] == 400


def test_a_deleted_or_replaced_registration_takes_no_late_row_of_its_old_self():
    mirror = Mirror()
    mirror.put_registration(registration("r", 1))
    mirror.put_record(record(7, "r", 1))
    mirror.drop_registration("r")
    assert not mirror.put_registration(registration("r", 1, version=5))  # a late row of the deleted one
    with pytest.raises(NotFound):
        mirror.registration("r")
    assert mirror.put_registration(registration("r", 2))  # made again under the same id
    assert not mirror.put_record(record(7, "r", 1, version=9))  # a late record of the old one
    assert mirror.put_record(record(8, "r", 2))
    assert [r.id for r in mirror.records_of("r")] == [8]
    assert mirror.servable("http://origin.example/7", "") is None


def test_a_load_drops_what_the_database_no_longer_has_but_keeps_what_came_meanwhile():
    mirror = Mirror()
    mirror.put_registration(registration("gone", 1))
    mirror.put_registration(registration("kept", 2))
    mirror.loading()
    mirror.put_registration(registration("new", 3))  # written while the load read
    mirror.load([registration("kept", 2, version=1, state="done")], [])
    assert mirror.ids(active_only=False) == ["kept", "new"]
    assert mirror.ids() == ["new"]


def test_pages_and_the_servable_record_of_a_url():
    mirror = Mirror()
    for seq in range(1, 6):
        mirror.put_registration(registration(f"r{seq}", seq, state="done" if seq % 2 else "fetching"))
    first = mirror.page(False, 2, None, False)
    assert first.ids == ["r1", "r2"] and mirror.page(False, 2, first.after, False).ids == ["r3", "r4"]
    assert mirror.page(True, 5, None, True).ids == ["r4", "r2"]
    assert mirror.page(False, 5, None, False).after is None
    mirror.put_record(record(1, "r2", 2, url="http://u/"))  # fetching, no response yet: it will answer
    mirror.put_record(record(2, "r4", 4, url="http://u/", status=200, complete=True))
    mirror.put_record(record(3, "r3", 3, url="http://u/", status=404))
    assert mirror.servable("http://u/", "") == 2
    assert mirror.servable("http://u/", "cookie-key") is None
    assert mirror.held() == 0 and mirror.held(2) == 0
