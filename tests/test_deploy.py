"""deploy/: the launcher that the systemd unit and the container share (bgfetch-serve) starts a real
mitmdump from the settings in its environment, keeps the token off every command line, and stops
on SIGTERM; the container's health check is ready against it; the unit passes systemd's own check;
the unit, the container and the example settings name the same settings."""

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from harness.poll import eventually
from harness.proxy import free_port, store_running_on

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SETTINGS = ("BGFETCH_LISTEN", "BGFETCH_CONFDIR", "BGFETCH_DB", "BGFETCH_TOKEN")


def launch(tmp_path: Path, port: int, listen_port: int, **settings: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGFETCH_") and "proxy" not in k.lower()}
    env.update(BGFETCH_HOME=str(ROOT), BGFETCH_LISTEN=f"127.0.0.1:{port}", BGFETCH_CONFDIR=str(tmp_path / "conf"),
               BGFETCH_DB=str(tmp_path / "store.sqlite3"), BGFETCH_ARGS=f"--set bgfetch_listen_port={listen_port}",
               **settings)
    log = open(tmp_path / "serve.log", "ab")
    try:
        return subprocess.Popen([str(DEPLOY / "bgfetch-serve")], env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def ready_through(port: int) -> bool:
    try:
        with httpx.Client(proxy=f"http://127.0.0.1:{port}", timeout=2) as client:
            return client.get("http://bgfetch.internal/readyz").status_code == 200
    except httpx.TransportError:
        return False


def healthcheck() -> list[str]:
    """The container's HEALTHCHECK command, as the Dockerfile says it."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", "")
    command = json.loads(re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M).group(1))
    return [str(ROOT / ".venv/bin/python"), *command[1:]]


def stop(proc: subprocess.Popen, db: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    eventually(lambda: not store_running_on(db), 15, what="the store to let go of its database")
    return code


def test_the_launcher_runs_mitmdump_from_its_settings_and_keeps_the_token_off_command_lines(tmp_path):
    port, listen_port = free_port(), free_port()
    token = "it's-a-s3cret"
    proc = launch(tmp_path, port, listen_port, BGFETCH_TOKEN=token)
    try:
        eventually(lambda: ready_through(port), 30, what="the proxy to be ready",
                   explain=lambda _: (tmp_path / "serve.log").read_text()[-2000:])
        config = tmp_path / "conf" / "config.yaml"
        assert config.stat().st_mode & 0o777 == 0o600
        assert "bgfetch_token: 'it''s-a-s3cret'" in config.read_text()
        for pid in [proc.pid, *_children(proc.pid)]:
            assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert httpx.get(f"http://127.0.0.1:{listen_port}/metrics").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{listen_port}/metrics",
                         headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert (tmp_path / "conf" / "mitmproxy-ca-cert.pem").exists()  # the CA clients trust
        assert (tmp_path / "store.sqlite3").exists()
        check = subprocess.run(healthcheck(), env={"BGFETCH_LISTEN": f"127.0.0.1:{port}"}, capture_output=True)
        assert check.returncode == 0, check.stderr
    finally:
        assert stop(proc, tmp_path / "store.sqlite3") == 0
    unready = subprocess.run(healthcheck(), env={"BGFETCH_LISTEN": f"127.0.0.1:{port}"}, capture_output=True)
    assert unready.returncode != 0  # nothing answers now


def test_a_token_set_empty_is_taken_out_and_one_not_set_is_left_as_it_is(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text("bgfetch_token: 'kept'\nbgfetch_concurrency: 2\n")
    for settings, expected in [({}, "bgfetch_token: 'kept'\nbgfetch_concurrency: 2\n"),
                               ({"BGFETCH_TOKEN": ""}, "bgfetch_concurrency: 2\n")]:
        port = free_port()
        proc = launch(tmp_path, port, free_port(), **settings)
        try:
            eventually(lambda: ready_through(port), 30, what="the proxy to be ready")
            assert (conf / "config.yaml").read_text() == expected
        finally:
            stop(proc, tmp_path / "store.sqlite3")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemds_check(tmp_path):
    unit = tmp_path / "bgfetch.service"
    unit.write_text((DEPLOY / "bgfetch.service").read_text().replace("/opt/bgfetch", str(ROOT)))
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stderr


def test_the_unit_the_container_and_the_example_name_the_same_settings():
    unit = dict(re.findall(r"^Environment=(BGFETCH_\w+)=(.*)$", (DEPLOY / "bgfetch.service").read_text(), re.M))
    image = dict(re.findall(r"(BGFETCH_\w+)=(\S+?) *\\?$", (DEPLOY / "Dockerfile").read_text(), re.M))
    example = dict(re.findall(r"^(BGFETCH_\w+)=(.*)$", (DEPLOY / "bgfetch.env").read_text(), re.M))
    launcher = (DEPLOY / "bgfetch-serve").read_text()
    assert unit == image
    assert set(SETTINGS) <= set(example) and all(example[k] == unit[k] for k in unit if k in example)
    assert all(f"${{{name}" in launcher for name in (*SETTINGS, "BGFETCH_HOME", "BGFETCH_ARGS"))
    assert "ExecStart=/opt/bgfetch/deploy/bgfetch-serve" in (DEPLOY / "bgfetch.service").read_text()
    assert 'ENTRYPOINT ["/opt/bgfetch/deploy/bgfetch-serve"]' in (DEPLOY / "Dockerfile").read_text()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
