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
    """The options as mitmproxy holds them: bgfetch's defaults from the table, and these."""
    values = {option.name: option.default for option in OPTIONS if option.type is not None} | dict(
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
    assert started.secrets == {"secret": "shared", "token": TOKEN, "upstream_auth": "user:pass", "webhook": hook}
    line = " ".join(started.args)
    for secret in ("shared", TOKEN, "user:pass", hook):
        assert secret not in line
    assert "--upstream-proxy http://up:3128" in line and "--quota 1000000000" in line and "--proxy-port 8080" in line
    assert started.db == str(Path("~/x.sqlite3").expanduser())


def test_clients_reach_bgfetch_host_in_every_mode_but_reverse_and_dns():
    reached = {"regular", "upstream:http://up:3128", "socks5", "transparent", "wireguard", "local", "regular@8081"}
    for mode in reached:
        assert launch.launch(options(mode=[mode]), "s", None, [8080]).host_reached, mode
    for modes in (["reverse:http://origin.example"], ["reverse:https://o.example@8443", "dns@5353"]):
        assert not launch.launch(options(mode=modes), "s", None, [8080]).host_reached, modes
    assert launch.launch(options(mode=["reverse:http://o.example", "regular@8081"]), "s", None, [8080]).host_reached


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


def test_in_reverse_mode_the_start_up_line_names_only_what_can_be_reached(origin, tmp_path):
    origin.add("/r.bin", size=100_000)
    reverse = f"mode=reverse:{origin.url('')}"
    proxy = Proxy(tmp_path, reverse).start()
    try:
        line = proxy.wait_for_log("bgfetch: store").split("bgfetch: store", 1)[1].splitlines()[0]
        assert line == f" {proxy.db}, dashboard and API at http://127.0.0.1:{proxy.listen_port}/", line
        assert proxy.api("GET", "/api/fetches").status_code == 200  # what it names answers
        with httpx.Client(base_url=proxy.url, timeout=10) as client:  # the clients of a reverse proxy
            fetched = client.get("/r.bin", headers={"Background-Fetch": 'id="r"'})
            assert fetched.content == origin.data("/r.bin")
            assert client.get("/", headers={"Host": "bgfetch.internal"}).status_code == 404  # the origin's, not the API
    finally:
        proxy.stop()
    alone = Proxy(tmp_path / "alone", reverse)
    alone.workdir.mkdir()
    alone.listen_port = 0  # no listen port
    alone.spawn()
    try:
        log = alone.wait_for_log("bgfetch: store")
        assert ("no dashboard: in reverse mode http://bgfetch.internal/ cannot be reached; --set bgfetch_listen_port=PORT"
                " serves the dashboard and the API at http://127.0.0.1:PORT/") in log, log
    finally:
        alone.stop()
