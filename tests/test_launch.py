"""store/proxyside/launch.py: secrets reach the store on its standard input, never on a command line; with the
token in mitmproxy's config.yaml, no process list shows it at all (a real mitmdump)."""

from pathlib import Path
from types import SimpleNamespace

import httpx

from harness.proxy import Proxy
from store.proxyside import launch
from store.proxyside.options import OPTIONS

TOKEN = "tok-3f9c1d7be2a04e5f8a6b"


def options(**changed) -> SimpleNamespace:
    values = {option.name: option.default for option in OPTIONS if option.type is not None}  # bgfetch's own
    values.update(
        bgfetch_db="~/x.sqlite3", mode=["regular"], ssl_insecure=False, ssl_verify_upstream_trusted_ca=None,
        ssl_verify_upstream_trusted_confdir=None, upstream_auth=None, confdir="~/.mitmproxy",
    )
    return SimpleNamespace(**{**values, **changed})


def test_secrets_go_to_stdin_and_the_rest_to_the_command_line():
    hook = "https://hooks.example.com/services/T000/B000/XXXX"
    started = launch.launch(
        options(bgfetch_token=TOKEN, upstream_auth="user:pass", bgfetch_webhook=hook, mode=["upstream:http://up:3128"]),
        "shared", 10**9, [8080],
    )
    assert started.secrets == {"secret": "shared", "token": TOKEN, "upstream_auth": "user:pass", "webhook": hook,
                               "s3_access_key": "", "s3_secret_key": ""}
    line = " ".join(started.args)
    for secret in ("shared", TOKEN, "user:pass", hook):
        assert secret not in line
    assert "--upstream-proxy http://up:3128" in line and "--quota 1000000000" in line and "--proxy-port 8080" in line
    assert started.db == str(Path("~/x.sqlite3").expanduser())


def _visible(pid: int) -> bytes:
    """What other local users can read of a process: its command line (and, to be sure, its environment)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()


def test_the_token_in_config_yaml_guards_the_api_and_shows_in_no_process_list(tmp_path):
    proxy = Proxy(tmp_path)
    proxy.confdir.mkdir(parents=True)
    (proxy.confdir / "config.yaml").write_text(f"bgfetch_token: {TOKEN}\n")
    proxy.start()
    try:
        assert proxy.api("GET", "/api/fetches").status_code == 401
        assert proxy.api("GET", "/api/fetches", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        with httpx.Client(proxy=proxy.url, timeout=10) as client:
            assert client.get("http://bgfetch.internal/api/fetches").status_code == 401
        for pid in (proxy.proc.pid, proxy.store_pid()):
            assert TOKEN.encode() not in _visible(pid)
    finally:
        proxy.stop()
