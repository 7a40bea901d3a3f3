"""The mitmproxy commands bgfetch.fetch/abort/list/delete, run through mitmproxy's command manager
against a real store process; and the check of the bgfetch_webhook option."""

import asyncio

import pytest
from mitmproxy import exceptions
from mitmproxy.addons import proxyserver, tlsconfig, upstream_auth
from mitmproxy.test import taddons

from addon import BackgroundFetch
from harness.poll import eventually_async

MiB = 1 << 20


def test_commands_fetch_list_abort_and_delete(origin, tmp_path):
    origin.add("/cmd.bin", size=300_000)
    origin.add("/slow.iso", size=8 * MiB)
    origin.behave("/slow.iso", throttle=MiB)

    async def scenario():
        addon = BackgroundFetch()
        with taddons.context(addon, proxyserver.Proxyserver(), tlsconfig.TlsConfig(), upstream_auth.UpstreamAuth()) as tctx:  # their options
            tctx.configure(addon, confdir=str(tmp_path), bgfetch_db=str(tmp_path / "cmd.sqlite3"), bgfetch_token="tok")
            run = tctx.master.commands.execute
            with pytest.raises(exceptions.CommandError, match="not running"):
                run("bgfetch.list")
            addon.running()  # starts the store in the background
            await eventually_async(lambda: addon.keeper.ready, 20, what="the store to be ready")
            try:
                derived = run(f"bgfetch.fetch {origin.url('/cmd.bin')}")
                assert derived.startswith("bgf-")
                assert run(f"bgfetch.fetch {origin.url('/slow.iso')} iso") == "iso"
                await eventually_async(lambda: run("bgfetch.list"), 20, what=f"{derived} listed as a success",
                                       until=lambda listed: f"{derived}  success  293k  cmd.bin" in listed)
                await eventually_async(lambda: addon.lookup.find(origin.url("/slow.iso"), []) is not None, 20,
                                       what="the lookup to know slow.iso")
                run("bgfetch.abort iso")
                assert "iso  failure (aborted)  0b  slow.iso" in run("bgfetch.list")
                with pytest.raises(exceptions.CommandError, match="already ended"):
                    run("bgfetch.abort iso")
                with pytest.raises(exceptions.CommandError, match="must be an absolute http or https URL"):
                    run("bgfetch.fetch notaurl x")
                run(f"bgfetch.delete {derived}")
                run("bgfetch.delete iso")
                assert run("bgfetch.list") == []
                with pytest.raises(exceptions.CommandError, match="No background fetch with id 'iso'"):
                    run("bgfetch.delete iso")
            finally:
                await addon.done()

    asyncio.run(scenario())


def test_webhook_option_must_be_an_http_url():
    addon = BackgroundFetch()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="bgfetch_webhook"):
            tctx.configure(addon, bgfetch_webhook="ftp://127.0.0.1/hook")
        tctx.configure(addon, bgfetch_webhook="http://127.0.0.1:9/hook")
