"""One store per database: the lock beside it (`python -m store`, store/__main__.py). A second store
refuses to run; one started while the previous still goes waits for it, then goes with its parent."""

import fcntl
import json
import subprocess
import sys

from harness.proxy import ROOT


def run_store(db, *args: str) -> subprocess.Popen:
    """`python -m store` by hand, its secrets already on its standard input (kept open)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "store", "--db", str(db), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    proc.stdin.write(b'{"secret": "s"}\n')
    proc.stdin.flush()
    return proc


def test_a_second_store_on_the_same_database_refuses_to_run(proxy):
    second = run_store(proxy.db, "--lock-wait", "0.3")
    second.stdin.close()
    err = second.stderr.read()
    second.wait(30)
    second.stdout.close()
    second.stderr.close()
    assert second.returncode != 0 and b"another bgfetch store is running" in err


def test_a_store_waits_for_the_previous_one_to_go_and_goes_with_its_parent(tmp_path):
    db = tmp_path / "bgfetch.sqlite3"
    with open(f"{db}.lock", "w") as previous:
        fcntl.flock(previous, fcntl.LOCK_EX)
        store = run_store(db)
        try:
            store.wait(0.5)
        except subprocess.TimeoutExpired:
            pass
        assert store.returncode is None  # still waiting for the lock
    try:
        assert json.loads(store.stdout.readline())["port"] > 0
        store.stdin.close()  # the parent is gone: the store stops by itself
        assert store.wait(15) == 0
    finally:
        if store.poll() is None:
            store.kill()
        store.wait()
        store.stdout.close()
        store.stderr.close()
