"""Where transfers may go: never back into bgfetch (its host, the store's ports, mitmproxy's),
and with bgfetch_refuse_private only to global addresses, checked after DNS. Unit tests of
the policy and the network backend, then end to end through a real mitmdump and origin."""

import asyncio
import ipaddress
import os
import socket

import httpcore
import httpx
import pytest
from mitmproxy import exceptions
from mitmproxy.addons import proxyserver, tlsconfig, upstream_auth
from mitmproxy.test import taddons

from addon import BackgroundFetch
from harness.origin import NOTHING_LISTENS
from harness.poll import eventually_async
from store.engine.destinations import CheckedBackend, Destinations, Refused, checked_transport, literal_address, non_global
from vocabulary import BAD_PORTS

API = "http://bgfetch.internal/api"
OWN = 8181


# -- the policy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://bgfetch.internal/api/fetches/a/records/0/body", "https://BGFETCH.internal:8443/", "http://bgfetch.internal./",
    f"http://127.0.0.1:{OWN}/", f"http://127.8.9.10:{OWN}/", f"http://[::1]:{OWN}/", f"http://localhost:{OWN}/",
    f"http://api.localhost:{OWN}/", f"http://LOCALHOST.:{OWN}/", f"http://0.0.0.0:{OWN}/", f"http://[::]:{OWN}/",
    f"http://[::ffff:127.0.0.1]:{OWN}/", f"http://2130706433:{OWN}/", f"http://0x7f.1:{OWN}/", f"http://127.1:{OWN}/",
])
def test_bgfetch_itself_is_refused_from_the_url_alone(url):
    reason = Destinations("bgfetch.internal", [OWN]).refusal(url)
    assert reason is not None and "bgfetch's own" in reason


@pytest.mark.parametrize("url", [
    f"http://127.0.0.1:{OWN + 1}/", f"http://10.0.0.1:{OWN}/", "http://bgfetch.internal.example/", f"http://example.com:{OWN}/",
    "http://[::1]/", "https://localhost/", "http://169.254.169.254/latest/meta-data/",
])
def test_other_destinations_are_allowed_without_the_option(url):
    assert Destinations("bgfetch.internal", [OWN]).refusal(url) is None


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("fd00::1", "unique-local"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("239.255.255.250", "multicast"), ("100.64.0.1", "non-global"), ("192.0.2.1", "private"), ("240.0.0.1", "private"),
    ("255.255.255.255", "private"), ("::ffff:10.0.0.1", "private"), ("64:ff9b::a00:1", "private"),
    ("64:ff9b::7f00:1", "loopback"), ("2002:7f00:1::", "private"),
    ("8.8.8.8", None), ("2001:4860:4860::8888", None), ("::ffff:8.8.8.8", None), ("64:ff9b::808:808", None),
])
def test_non_global_addresses_are_named(address, kind):
    assert non_global(ipaddress.ip_address(address)) == kind


def test_the_option_refuses_literal_non_global_addresses_at_once():
    policy = Destinations("bgfetch.internal", refuse_private=True)
    for url in ("http://127.0.0.1:8000/", "http://[fd00::1]/", "http://localhost/", "http://0x0a.1/", "http://[fe80::1%25eth0]/"):
        assert "refused by bgfetch_refuse_private" in policy.refusal(url), url
    assert "10.0.0.1 is a private address" in policy.refusal("http://10.0.0.1/")
    for url in ("http://8.8.8.8/", "http://example.com/", "http://[2001:4860:4860::8888]/"):
        assert policy.refusal(url) is None, url  # a name is checked when it is resolved
    assert literal_address("example.com") is None and literal_address("1.2.3") == ipaddress.ip_address("1.2.0.3")


@pytest.mark.parametrize("port", sorted(BAD_PORTS))
def test_every_bad_port_of_the_fetch_standard_is_refused_by_name(port):
    reason = Destinations("bgfetch.internal").refusal(f"https://example.com:{port}/a")
    assert reason is not None and f"port {port} is a bad port of the Fetch standard" in reason


@pytest.mark.parametrize("url", [
    "http://example.com/", "https://example.com/", "https://example.com:443/", "https://example.com:80/",
    "http://example.com:8080/", "http://example.com:2/", "http://example.com:588/",
])
def test_default_and_other_ports_are_not_bad(url):
    assert Destinations("bgfetch.internal").refusal(url) is None


# -- the network backend: resolved once, checked, connected to the address checked ---------------

class Recording(httpcore.AsyncNetworkBackend):
    """The real network backend, noting each host it is asked to connect to."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.hosts: list[str] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.hosts.append(host)
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)


def fetch_through(backend: CheckedBackend, url: str) -> tuple[int, bytes]:
    async def run():
        async with httpcore.AsyncConnectionPool(network_backend=backend) as pool:
            response = await pool.request("GET", url)
            return response.status, response.content
    return asyncio.run(run())


def test_a_name_is_resolved_once_and_the_checked_address_connected_to(origin):
    origin.add("/n.bin", data=b"named")
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # a rebinding resolver: another answer next time
    lookups = []

    async def resolver(host, port):
        lookups.append(host)
        return next(answers)

    recording = Recording()
    backend = CheckedBackend(Destinations("bgfetch.internal", refuse_private=False), recording, resolver)
    assert fetch_through(backend, f"http://rebind.test:{origin.port}/n.bin") == (200, b"named")
    assert (lookups, recording.hosts) == (["rebind.test"], ["127.0.0.1"])  # the name never reached the socket layer
    assert origin.requests[-1].headers["Host"] == f"rebind.test:{origin.port}"


def test_each_address_allowed_is_tried_in_turn(origin):
    origin.add("/t.bin", data=b"turn")

    async def resolver(host, port):
        return ["127.0.0.2", "127.0.0.1"]  # the origin listens on the second only

    recording = Recording()
    backend = CheckedBackend(Destinations("bgfetch.internal"), recording, resolver)
    assert fetch_through(backend, f"http://turn.test:{origin.port}/t.bin") == (200, b"turn")
    assert recording.hosts == ["127.0.0.2", "127.0.0.1"]


def test_a_name_that_resolves_to_a_refused_address_is_never_connected_to(origin):
    origin.add("/p.bin", data=b"private")

    async def resolver(host, port):
        return ["127.0.0.1", "::1"]

    recording = Recording()
    private = CheckedBackend(Destinations("bgfetch.internal", refuse_private=True), recording, resolver)
    with pytest.raises(Refused, match=r"rebind\.test \(127\.0\.0\.1\) is a loopback address, refused by bgfetch_refuse_private"):
        fetch_through(private, f"http://rebind.test:{origin.port}/p.bin")
    own = CheckedBackend(Destinations("bgfetch.internal", [origin.port]), recording, resolver)
    with pytest.raises(Refused, match=f"port {origin.port} is bgfetch's own"):
        fetch_through(own, f"http://rebind.test:{origin.port}/p.bin")
    assert recording.hosts == [] and origin.count("/p.bin") == 0


def test_a_name_that_does_not_resolve_is_a_connect_error_the_transfer_retries():
    async def resolver(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def run():
        transport = checked_transport(Destinations("bgfetch.internal"), resolver, trust_env=False)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get("http://nowhere.test/")

    with pytest.raises(httpx.ConnectError, match="resolving nowhere.test"):
        asyncio.run(run())


# -- end to end: bgfetch never fetches itself ----------------------------------------------------

def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def own_urls(proxy) -> dict[str, str]:
    """A URL of each of bgfetch's own destinations: its host, the store's two ports, mitmproxy's."""
    internal = listening_ports(proxy.store_pid()) - {proxy.listen_port}
    assert len(internal) == 1, internal
    return {
        "bgfetch_host": "http://bgfetch.internal/api/fetches/a/records/0/body",
        "listen port": proxy.api_url("/api/fetches/a/records/0/body"),
        "internal port": f"http://127.0.0.1:{internal.pop()}/api/fetches",
        "mitmproxy's port": f"http://localhost:{proxy.port}/x",
    }


def test_the_api_refuses_fetches_of_bgfetch_itself_at_once(origin, proxy):
    origin.add("/a.bin", size=1000)
    proxy.api("POST", "/api/fetches", json={"id": "a", "requests": [origin.url("/a.bin")]})
    proxy.wait_for("a", result="success")
    for what, url in own_urls(proxy).items():
        refused = proxy.api("POST", "/api/fetches", json={"id": "loop", "requests": [origin.url("/a.bin"), url]})
        assert refused.status_code == 400, (what, refused.text)
        problem = refused.json()
        assert problem["field"] == "requests[1].url" and "may not be fetched" in problem["detail"], what
        assert "bgfetch's own" in problem["detail"], what
        with proxy.client() as client:  # the same through the proxy, in the spec's shape
            assert client.post(f"{API}/fetches", json={"id": "loop", "requests": [{"url": url}]}).json()["field"] == "requests[0].url"
    proxy.api("POST", "/api/fetches", json={"id": "p", "requests": [f"{NOTHING_LISTENS}/gone"]})
    proxy.wait_for("p", state="paused")
    patched = proxy.api("PATCH", "/api/fetches/p", json={"records": [{"index": 0, "url": own_urls(proxy)["listen port"]}]})
    assert patched.status_code == 400 and patched.json()["field"] == "records[0].url"
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": ["a", "p"]}


def test_redirects_to_bgfetch_itself_fail_the_fetch(origin, proxy):
    name = loopback_name()
    targets = {**own_urls(proxy), **({"a name for the listen port": f"http://{name}:{proxy.listen_port}/"} if name else {})}
    for n, (what, url) in enumerate(targets.items()):
        origin.behave(f"/hop{n}", redirect_to=url)
        proxy.api("POST", "/api/fetches", json={"id": f"hop{n}", "requests": [origin.url(f"/hop{n}")]})
    for n, what in enumerate(targets):
        failed = proxy.wait_for(f"hop{n}", result="failure", timeout=15)
        assert failed["failureReason"] == "fetch-error", (what, failed)
        assert "bgfetch's own" in failed["lastError"], (what, failed["lastError"])
    assert len(targets) == 4 + bool(name)


def test_the_header_and_rule_paths_never_loop(origin, make_proxy, tmp_path):
    rules = tmp_path / "rules.yaml"
    proxy = make_proxy(f"bgfetch_rules={rules}")
    rules.write_text(f'rules:\n  - name: loop\n    url: "http://127.0.0.1:{proxy.listen_port}/*"\n'
                     f'  - name: self\n    url: "http://127.0.0.1:{proxy.port}/*"\n')
    proxy.start()
    with proxy.client() as client:
        for url in (proxy.api_url("/api/fetches"), f"http://127.0.0.1:{proxy.port}/x"):
            for marked in ({}, {"Background-Fetch": 'id="loop"'}):  # by a rule, and by the header too
                refused = client.get(url, headers=marked)
                assert refused.status_code == 400, (url, refused.text)
                problem = refused.json()
                assert problem["type"].endswith("/refused-destination") and problem["field"] == "url"
                assert "bgfetch's own" in problem["detail"]
        # bgfetch_host is the API: the header is dropped and the API answers; nothing is fetched
        answered = client.get(f"{API}/fetches", headers={"Background-Fetch": 'id="self"'})
        assert (answered.status_code, answered.json()) == (200, {"ids": []})
        assert client.get(f"{API}/fetches/x/records/0/body", headers={"Background-Fetch": "?1"}).status_code == 404
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": []}


def test_commands_refuse_bgfetch_itself_and_bad_ports(origin, tmp_path):
    async def scenario():
        addon = BackgroundFetch()
        with taddons.context(addon, proxyserver.Proxyserver(), tlsconfig.TlsConfig(), upstream_auth.UpstreamAuth()) as tctx:
            tctx.configure(addon, confdir=str(tmp_path), bgfetch_db=str(tmp_path / "cmd.sqlite3"), listen_port=8765)
            addon.running()  # starts the store in the background
            await eventually_async(lambda: addon.keeper.ready, 20, what="the store to be ready")
            try:
                run = tctx.master.commands.execute
                with pytest.raises(exceptions.CommandError, match="bgfetch.internal is bgfetch's own host"):
                    run("bgfetch.fetch http://bgfetch.internal/api/fetches")
                with pytest.raises(exceptions.CommandError, match="port 8765 is bgfetch's own"):
                    run("bgfetch.fetch http://127.0.0.1:8765/x")
                with pytest.raises(exceptions.CommandError, match="port 587 is a bad port of the Fetch standard"):
                    run("bgfetch.fetch http://example.com:587/x")
                assert run("bgfetch.list") == []
            finally:
                await addon.done()

    asyncio.run(scenario())


# -- end to end: bgfetch_refuse_private -----------------------------------------------------------

def loopback_name() -> str | None:
    """A host name (not a literal) this machine resolves to non-global addresses only."""
    for name in (socket.gethostname(), "localhost.localdomain", "ip6-localhost"):
        try:
            found = {info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
        except OSError:
            continue
        if found and literal_address(name) is None and all(non_global(ipaddress.ip_address(a)) for a in found):
            return name
    return None


def test_refuse_private_refuses_literals_at_once_and_names_after_dns(origin, make_proxy):
    origin.add("/lan.bin", size=1000)
    proxy = make_proxy("bgfetch_refuse_private=true").start()
    for host in ("127.0.0.1", "10.1.2.3", "[::1]", "169.254.169.254", "[fe80::1]", "224.0.0.1", "0.0.0.0",
                 "2130706433", "localhost", "[fd00::1]", "100.64.0.1", "[::ffff:192.168.0.1]"):
        refused = proxy.api("POST", "/api/fetches", json={"id": "lan", "requests": [f"http://{host}:{origin.port}/lan.bin"]})
        assert refused.status_code == 400, (host, refused.text)
        assert refused.json()["field"] == "requests[0].url" and "refused by bgfetch_refuse_private" in refused.json()["detail"]
    with proxy.client() as client:
        marked = client.get(origin.url("/lan.bin"), headers={"Background-Fetch": 'id="lan"'})
        assert marked.status_code == 400 and "loopback address" in marked.json()["detail"]
        plain = client.get(origin.url("/lan.bin"))  # the option is about background fetches; proxying is as before
        assert plain.content == origin.data("/lan.bin")
    assert origin.count("/lan.bin") == 1
    name = loopback_name()
    if name is None:
        pytest.skip("no host name of this machine resolves to a non-global address only")
    assert proxy.api("POST", "/api/fetches", json={"id": "named", "requests": [f"http://{name}:{origin.port}/lan.bin"]}).status_code == 201
    failed = proxy.wait_for("named", result="failure", timeout=15)
    assert failed["failureReason"] == "fetch-error"
    assert f"{name} (" in failed["lastError"] and "refused by bgfetch_refuse_private" in failed["lastError"]
    assert origin.count("/lan.bin") == 1


def test_refuse_private_cannot_be_enforced_through_an_upstream_proxy(make_proxy, tmp_path):
    with pytest.raises(RuntimeError, match="bgfetch_refuse_private cannot be enforced in mode upstream"):
        make_proxy("bgfetch_refuse_private=true", "mode=upstream:http://127.0.0.1:1").start()
    addon = BackgroundFetch()
    with taddons.context(addon, proxyserver.Proxyserver()) as tctx:
        tctx.configure(addon, bgfetch_refuse_private=True)
        with pytest.raises(exceptions.OptionsError, match="upstream proxy resolves names"):
            tctx.configure(addon, mode=["upstream:http://127.0.0.1:3128"])
        tctx.configure(addon, bgfetch_refuse_private=False, mode=["upstream:http://127.0.0.1:3128"])
