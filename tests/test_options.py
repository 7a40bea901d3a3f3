"""store/proxyside/options.py: one table of options feeds the addon's options and their checks, the
store's command line and secrets, the store's own parser and the README."""

import argparse
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from mitmproxy import exceptions
from mitmproxy.addons import proxyserver, tlsconfig, upstream_auth
from mitmproxy.test import taddons

from addon import BackgroundFetch
from store.proxyside import launch, options

README = Path(__file__).resolve().parent.parent / "README.md"
BGFETCH = [option for option in options.OPTIONS if option.type is not None]


def test_the_readme_options_table_is_the_option_table():
    text = README.read_text()
    start = text.index("\n## Options\n")
    table = text[text.index("\n| option |", start) + 1:]
    table = table[:table.index("\n\n") + 1]
    assert table == options.readme_table(), "README.md's options table: paste options.readme_table()"


def test_the_addon_adds_every_bgfetch_option_of_the_table():
    fetch = BackgroundFetch()
    with taddons.context(fetch, proxyserver.Proxyserver(), tlsconfig.TlsConfig(), upstream_auth.UpstreamAuth()) as tctx:
        for option in BGFETCH:
            added = tctx.options._options[option.name]
            assert (added.typespec, added.default, added.help) == (option.type, option.default, option.help)
        assert {name for name in tctx.options.keys() if name.startswith("bgfetch_")} == {o.name for o in BGFETCH}
        assert all(option.name in tctx.options.keys() for option in options.OPTIONS)  # mitmproxy's own are its


@pytest.mark.parametrize("changed, message", [
    ({"bgfetch_concurrency": 0}, "bgfetch_concurrency must be 1 or more"),
    ({"bgfetch_listen_port": 65536}, "bgfetch_listen_port must be a port number, or 0 for none"),
    ({"bgfetch_retry_cap": 0}, "bgfetch_retry_cap must be 1 second or more"),
    ({"bgfetch_webhook": "ftp://127.0.0.1/hook"}, "bgfetch_webhook must be an http or https URL, got 'ftp://"),
    ({"bgfetch_quota": "2XB"}, 'bgfetch_quota "2XB" is not a size'),
    ({"bgfetch_revalidate": "sometimes"}, "bgfetch_revalidate must be never, cache-control or always"),
    ({"bgfetch_refuse_private": True, "mode": ["upstream:http://127.0.0.1:3128"]}, "cannot be enforced in mode upstream"),
])
def test_a_bad_value_is_refused_naming_the_option_and_the_previous_one_stays(changed, message):
    fetch = BackgroundFetch()
    with taddons.context(fetch) as tctx:
        before = {name: getattr(tctx.options, name) for name in changed}
        with pytest.raises(exceptions.OptionsError) as refused:
            tctx.configure(fetch, **changed)
        assert message in str(refused.value)
        assert {name: getattr(tctx.options, name) for name in changed} == before


def test_only_the_options_changed_are_checked():
    values = {option.name: option.default for option in BGFETCH}
    opts = SimpleNamespace(**{**values, "bgfetch_concurrency": 0, "bgfetch_refuse_private": True,
                              "mode": ["upstream:http://127.0.0.1:3128"]})
    options.check(opts, {"bgfetch_host", "bgfetch_db"})
    with pytest.raises(ValueError, match="bgfetch_concurrency"):
        options.check(opts, {"bgfetch_host", "bgfetch_concurrency"})
    for name in ("mode", "bgfetch_refuse_private"):  # either side of the pair checks the pair
        with pytest.raises(ValueError, match="mode upstream"):
            options.check(opts, {name})


class Recorder(SimpleNamespace):
    """Mitmproxy's options as `launch` reads them, noting each name it reads."""

    def __getattribute__(self, name: str):
        if not name.startswith("_"):
            object.__getattribute__(self, "_read").add(name)
        return object.__getattribute__(self, name)


def _mitmproxy_options(tmp_path, **changed) -> Recorder:
    values = {option.name: option.default for option in BGFETCH}
    values.update(mode=["upstream:http://up.example:3128"], listen_port=None, upstream_auth="user:pass",
                  ssl_insecure=True, ssl_verify_upstream_trusted_ca="/ca.pem", ssl_verify_upstream_trusted_confdir="/cas",
                  confdir=str(tmp_path), bgfetch_token="tok", bgfetch_webhook="http://hook.example/", **changed)
    recorder = Recorder(**values)
    object.__setattr__(recorder, "_read", set())
    return recorder


def test_every_option_launch_reads_restarts_the_store(tmp_path):
    opts = _mitmproxy_options(tmp_path)
    launch.launch(opts, "shared", None, [8080])
    read = object.__getattribute__(opts, "_read")
    assert read and read <= options.RESTARTS
    assert options.RESTARTS - read == {"bgfetch_quota", "listen_port"}  # given to launch worked out
    assert "bgfetch_rules" not in options.RESTARTS


def test_the_store_reads_back_what_launch_gives_it(tmp_path):
    opts = _mitmproxy_options(tmp_path, bgfetch_listen_port=8181, bgfetch_host="bgf.example", bgfetch_concurrency=2,
                              bgfetch_retry_cap=7, bgfetch_refuse_private=True, bgfetch_paused_read_timeout=4,
                              bgfetch_revalidate="always", bgfetch_segments=8, bgfetch_log_format="json")
    started = launch.launch(opts, "shared", 20 * 10**9, [8080, 8081])
    parser = argparse.ArgumentParser()
    options.store_arguments(parser)
    args = parser.parse_args(started.args)
    assert vars(args) == {
        "db": str(tmp_path / "bgfetch.sqlite3"), "public_host": "bgf.example", "listen_port": 8181, "concurrency": 2,
        "quota": 20 * 10**9, "retry_cap": 7.0, "paused_read_timeout": 4.0, "revalidate": "always",
        "segments": 8, "refuse_private": True, "log_format": "json", "upstream_proxy": "http://up.example:3128",
        "proxy_port": [8080, 8081], "insecure": True, "ca_file": "/ca.pem", "ca_dir": "/cas", "bodies": None,
        "lease": 10.0,
    }
    assert started.secrets == {"secret": "shared", "token": "tok", "upstream_auth": "user:pass",
                               "webhook": "http://hook.example/", "s3_access_key": "", "s3_secret_key": ""}


def test_a_fleet_nodes_password_and_keys_reach_the_store_on_its_standard_input_only(tmp_path):
    bodies = "s3://bodies/fleet?endpoint=http://objects.example:8333"
    opts = _mitmproxy_options(tmp_path, bgfetch_db="postgresql://bgfetch:pa%20ss@db.example:5432/bgfetch",
                              bgfetch_bodies=bodies, bgfetch_s3_access_key="AKID", bgfetch_s3_secret_key="s3cret",
                              bgfetch_lease=4)
    started = launch.launch(opts, "shared", None, [8080])
    parser = argparse.ArgumentParser()
    options.store_arguments(parser)
    args = parser.parse_args(started.args)
    assert (args.db, args.bodies, args.lease) == ("postgresql://bgfetch@db.example:5432/bgfetch", bodies, 4.0)
    assert started.db == args.db
    assert {key: started.secrets[key] for key in ("db_password", "s3_access_key", "s3_secret_key")} == {
        "db_password": "pa ss", "s3_access_key": "AKID", "s3_secret_key": "s3cret"}
    assert not {"pa ss", "pa%20ss", "AKID", "s3cret"} & set(" ".join(started.args).split())


def test_the_stores_defaults_are_the_tables():
    parser = argparse.ArgumentParser()
    options.store_arguments(parser)
    args = parser.parse_args(["--db", "x.sqlite3"])
    assert (args.public_host, args.listen_port, args.concurrency, args.retry_cap, args.quota, args.revalidate) == (
        "bgfetch.internal", 0, 4, 30.0, None, "cache-control")
    with pytest.raises(SystemExit):
        parser.parse_args(["--db", "x.sqlite3", "--revalidate", "sometimes"])
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --db is required


def test_python_m_store_takes_every_flag_of_the_table():
    shown = subprocess.run([sys.executable, "-m", "store", "--help"], capture_output=True, text=True, timeout=60,
                           cwd=README.parent, check=True).stdout
    assert all(option.flag in shown for option in options.OPTIONS if option.flag)
    assert "--lock-wait" in shown
