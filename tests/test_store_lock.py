"""One store per database: the lock beside it (store/proxyside/owner.py). A second mitmproxy on a
database owned says so at once, in one line with the fix, before it listens; a second store
refuses to run; one started while the previous still goes waits for it, then goes with its parent."""

import fcntl
import json
import re
import subprocess
import sys

from harness.proxy import ROOT, Proxy


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
    assert second.returncode != 0 and b"is in use by another mitmproxy" in err


def test_a_second_proxy_on_the_default_database_says_so_in_one_line_before_it_listens(tmp_path, origin):
    origin.add("/a.bin", size=4096)
    first = Proxy(tmp_path / "first", home=tmp_path / "home", default_db=True)
    second = Proxy(tmp_path / "second", home=tmp_path / "home", default_db=True)
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first.start()
    try:
        second.spawn()
        assert second.proc.wait(15) == 1  # not 10 s of 503s waiting for the lock
        said = second.log.read_text()
        lines = [line for line in said.splitlines() if "bgfetch" in line and "Loading script" not in line]
        assert len(lines) == 1, said
        assert f"the database {first.db} is in use by another mitmproxy (pid {first.proc.pid})" in lines[0]
        assert "Traceback" not in said and "listening" not in said, said  # it stopped before it listened
        fix = re.search(r"--set (bgfetch_db=\S+)$", lines[0]).group(1)
        third = Proxy(tmp_path / "second", fix, home=tmp_path / "home", default_db=True)
        third.db = fix.split("=", 1)[1]
        third.start()  # the fix works: a database of its own
        try:
            with third.client() as client:
                assert client.get(origin.url("/a.bin"), headers={"Background-Fetch": "?1"}).content == origin.data("/a.bin")
        finally:
            third.stop()
        with first.client() as client:  # the first one never noticed
            assert client.get(origin.url("/a.bin"), headers={"Background-Fetch": "?1"}).status_code == 200
    finally:
        first.stop()


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
