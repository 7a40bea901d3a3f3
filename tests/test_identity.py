"""store/db/identity.py: only a bgfetch store (or a new file) is opened; any other file is refused, named and unchanged."""

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.proxy import ROOT
from store.db import identity, schema


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(path: Path) -> tuple[str, list[str]]:
    """The file's digest and what lies beside it."""
    return sha256(path), sorted(p.name for p in path.parent.iterdir())


def unrelated(path: Path, *, wal: bool = False, table: str = "notes") -> Path:
    """Another program's SQLite database, closed cleanly (no -wal or -shm left)."""
    path.parent.mkdir(exist_ok=True)
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute(f"INSERT INTO {table} (text) VALUES ('mine')")
    conn.commit()
    conn.close()
    return path


def not_sqlite(path: Path) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"a plain text file someone named bgfetch_db by mistake\n" * 100)
    return path


def other_application(path: Path) -> Path:
    unrelated(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    return path


REFUSED = {
    "unrelated": (unrelated, "without bgfetch's migrations (its tables: notes)"),
    "unrelated in WAL mode": (lambda p: unrelated(p, wal=True), "without bgfetch's migrations"),
    "with a records table": (lambda p: unrelated(p, table="records"), "its tables: records"),
    "not SQLite": (not_sqlite, "it is not an SQLite database"),
    "another application's": (other_application, "another application's SQLite database (application_id 0x4d2)"),
}


@pytest.mark.parametrize("kind", REFUSED)
def test_another_file_is_refused_before_anything_is_written(tmp_path, kind):
    make, why = REFUSED[kind]
    path = make(tmp_path / "data" / "file.db")
    before = snapshot(path)
    with pytest.raises(identity.NotAStore) as refused:
        schema.connect(str(path))
    assert str(refused.value).startswith(f"{path} is not a bgfetch store: ") and why in str(refused.value)
    assert snapshot(path) == before


def test_a_wal_left_beside_another_database_is_read_and_left_as_it_was(tmp_path):
    path = unrelated(tmp_path / "data" / "file.db", wal=True)
    writer = subprocess.run(  # a program that dies with its last commit in the WAL
        [sys.executable, "-c", "import os, sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('PRAGMA wal_autocheckpoint=0')\n"
         "c.execute('CREATE TABLE records (x)'); os._exit(0)", str(path)],
        check=True,
    )
    assert writer.returncode == 0
    before = snapshot(path)
    wal = sha256(Path(f"{path}-wal"))
    with pytest.raises(identity.NotAStore, match="its tables: notes, records"):
        schema.connect(str(path))
    assert snapshot(path) == before and sha256(Path(f"{path}-wal")) == wal


def test_a_new_store_carries_the_application_id_from_its_first_page(tmp_path):
    for path in (tmp_path / "new.sqlite3", tmp_path / "empty.sqlite3"):
        if path.name == "empty.sqlite3":
            path.write_bytes(b"")
        conn = schema.connect(str(path))
        schema.migrate(conn)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == identity.APPLICATION_ID
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        assert conn.execute("PRAGMA page_size").fetchone()[0] == schema.DATABASE_PAGE_SIZE
        conn.close()
        assert identity.check(str(path)) == "store"


OLD_STORE = """
import os, sqlite3, sys
import sqlite_utils
from store.db import schema
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
for pragma in ("page_size=65536", "auto_vacuum=INCREMENTAL", "journal_mode=WAL", "wal_autocheckpoint=0"):
    conn.execute("PRAGMA " + pragma)
schema.migrations.apply(sqlite_utils.Database(conn), stop_before="m003_revalidate")  # the migrations of then
conn.execute("INSERT INTO registrations (id, created_at, updated_at) VALUES ('kept', 1, 1)")
os._exit(0) if sys.argv[2] == "crash" else conn.close()
"""


@pytest.mark.parametrize("crashed", [False, True])
def test_a_store_made_before_the_application_id_is_recognised_and_gets_it(tmp_path, crashed):
    """Opened as stores were before the id, and migrated; closed cleanly, or killed with its
    tables still in the WAL."""
    path = tmp_path / "old.sqlite3"
    subprocess.run([sys.executable, "-c", OLD_STORE, str(path), "crash" if crashed else "close"], check=True, cwd=ROOT)
    assert Path(f"{path}-wal").exists() == crashed
    assert identity.check(str(path)) == "old store"
    conn = schema.connect(str(path))
    schema.migrate(conn)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == identity.APPLICATION_ID
    assert [tuple(row) for row in conn.execute("SELECT id FROM registrations")] == [("kept",)]
    conn.close()
    assert identity.check(str(path)) == "store"


@pytest.mark.parametrize("kind", ["unrelated", "with a records table", "not SQLite"])
def test_mitmdump_stops_at_start_up_naming_the_file_and_leaves_it_unchanged(tmp_path, make_proxy, kind):
    make, why = REFUSED[kind]
    path = make(tmp_path / "data" / "file.db")
    before = snapshot(path)
    proxy = make_proxy()
    proxy.db = path
    with pytest.raises(RuntimeError, match="mitmdump exited"):
        proxy.start()
    lines = [line for line in proxy.log.read_text().splitlines() if f"{path} is not a bgfetch store" in line]
    assert lines and why in lines[0], proxy.log.read_text()
    assert snapshot(path) == before


@pytest.mark.parametrize("kind", ["unrelated", "not SQLite"])
def test_the_store_process_stops_with_one_line_naming_the_file(tmp_path, kind):
    make, why = REFUSED[kind]
    path = make(tmp_path / "data" / "file.db")
    before = snapshot(path)
    done = subprocess.run(
        [sys.executable, "-m", "store", "--db", str(path)], input=b'{"secret": "s"}\n',
        capture_output=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        f"{path} is not a bgfetch store: {done.stderr.decode().split(': ', 1)[1].strip()}"
    ]
    assert why in done.stderr.decode()
    assert snapshot(path) == before  # no lock file, no -wal, no -shm beside it
