"""README.md's walk-through runs as it is written: its first shell block, in bash from the checkout
(`make run &`, a local origin from `python3 -m http.server`, curl), on free ports instead of 8080
and 8000 and with a HOME of its own, so that the default database is the test's."""

import os
import signal
import subprocess

from harness.poll import eventually
from harness.proxy import ROOT, free_port, store_running_on


def walk_through() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## A walk-through\n"):]
    return section[section.index("```sh\n") + 6:section.index("\n```\n")]


def test_the_walk_through_runs_as_written(tmp_path):
    proxy_port, origin_port = free_port(), free_port()
    script = walk_through()
    assert "make run &" in script and ":8080" in script and " 8000 " in script and ":8000/" in script
    script = (script.replace("make run &", f"make -s run ARGS='-p {proxy_port} --listen-host 127.0.0.1' &")
              .replace(":8080", f":{proxy_port}").replace(" 8000 ", f" {origin_port} ")
              .replace(":8000/", f":{origin_port}/"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()} | {"HOME": str(home), "TMPDIR": str(tmp_path)}
    log = tmp_path / "walk-through.log"  # a file: what runs on in the background holds its output open
    with open(log, "wb") as output:
        shell = subprocess.Popen(["bash", "-e", "-c", script], cwd=ROOT, env=env, start_new_session=True,
                                 stdout=output, stderr=subprocess.STDOUT)
    try:
        shell.wait(150)
    finally:
        os.killpg(shell.pid, signal.SIGTERM)  # the proxy and the origin it left running in the background
        if shell.poll() is None:
            shell.kill()
            shell.wait()
    said = log.read_bytes()
    db = home / ".mitmproxy" / "bgfetch.sqlite3"
    eventually(lambda: not store_running_on(db), 20, what="the walk-through's store to stop")
    assert shell.returncode == 0, said.decode(errors="replace")[-3000:]
    assert b"the same 50 MB, with the origin down" in said, said[-3000:]
