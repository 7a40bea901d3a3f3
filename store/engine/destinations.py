"""Where transfers may connect: never to a bad port of the Fetch standard, never back into bgfetch
itself, and with `bgfetch_refuse_private` only to global addresses.

Two checks share one policy (`Destinations`):

- `refusal(url)` knows what the URL alone tells, before any DNS: a bad port (the shared
  vocabulary's `BAD_PORTS`), bgfetch's own host name (`bgfetch_host`), and a literal address
  (`127.1`, `[::1]`, `localhost` as RFC 6761 has it) that is one of bgfetch's own ports or,
  with the option, not global. The API refuses such a URL with a 400, the proxy's route with
  a 400, and every request of a transfer (redirects included) fails with it through
  `refuse_in_hook`.
- `CheckedBackend` checks the addresses a name resolves to, at connect time, and connects to
  the address it checked: a name that resolves to a private address, at once or on a second
  lookup (DNS rebinding), is never connected to.

Behind an upstream proxy only the first check applies: the proxy resolves names and connects,
so the addresses are out of sight (the addon refuses `bgfetch_refuse_private` with one).
"""

import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable

import anyio
import httpcore
import httpx

from vocabulary import check_port

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: an IPv4 address inside an IPv6 one
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


class Refused(httpx.RequestError):
    """A transfer may not connect there: bgfetch's own host or port, or an address the
    options refuse. Not a transport error: no retry can make it allowed."""


class Destinations:
    """The policy: bgfetch's own host name and ports (on this machine), and whether
    non-global addresses are refused."""

    def __init__(self, public_host: str, own_ports: Iterable[int] = (), refuse_private: bool = False) -> None:
        self.public_host = public_host.lower().rstrip(".")
        self.own_ports = set(own_ports)  # the store adds its own once it listens
        self.refuse_private = refuse_private

    def refusal(self, url: str | httpx.URL) -> str | None:
        """Why a transfer may not fetch `url`, as far as the URL alone tells; None if it may
        (a URL httpx cannot read fails its transfer as it is)."""
        try:
            url = httpx.URL(url)
        except httpx.InvalidURL:
            return None
        port = DEFAULT_PORTS.get(url.scheme, 80) if url.port is None else url.port
        try:
            check_port(port)
        except ValueError as exc:
            return str(exc)
        host = url.host.lower().rstrip(".")
        if host == self.public_host:
            return f"{host} is bgfetch's own host (bgfetch_host): the fetch would fetch bgfetch itself"
        address = literal_address(host)
        if address is None:
            return None
        return self.address_refusal(address, port, host)

    def address_refusal(self, address: Address, port: int, name: str) -> str | None:
        """Why a transfer may not connect to `address`:`port` (which `name` gave); None if it may."""
        shown = str(address) if name == str(address) else f"{name} ({address})"
        here = any(inner.is_loopback or inner.is_unspecified for inner in _inner_addresses(address))
        if here and port in self.own_ports:
            return f"{shown} port {port} is bgfetch's own (the store's or mitmproxy's): the fetch would loop"
        if self.refuse_private and (kind := non_global(address)):
            return f"{shown} is a {kind} address, refused by bgfetch_refuse_private"
        return None


def literal_address(host: str) -> Address | None:
    """The address a host name stands for without DNS: an IP literal in any form the system
    resolver reads (`127.1`, `2130706433`, `0x7f.1`), or loopback for `localhost` names."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 6.3
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host or "%" in host or not host.isascii():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def non_global(address: Address) -> str | None:
    """What makes an address one that bgfetch_refuse_private refuses ("loopback", "private",
    ...), or None for a global unicast address. IPv4 inside IPv6 (mapped, NAT64) is judged too."""
    for inner in _inner_addresses(address):
        if inner.is_global and not inner.is_multicast:
            continue
        for kind, test in (
            ("loopback", inner.is_loopback), ("unspecified", inner.is_unspecified),
            ("link-local", inner.is_link_local), ("multicast", inner.is_multicast),
            ("unique-local", inner.version == 6 and inner in UNIQUE_LOCAL), ("private", inner.is_private),
        ):
            if test:
                return kind
        return "non-global"
    return None


def _inner_addresses(address: Address) -> list[Address]:
    """The address, and the IPv4 address it carries (IPv4-mapped, or NAT64's well-known prefix)."""
    found = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            found.append(address.ipv4_mapped)
        elif address.scope_id is None and address in NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refuse_in_hook(destinations: Destinations) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook: every request of a transfer, each redirect too, is checked."""

    async def check(request: httpx.Request) -> None:
        if reason := destinations.refusal(request.url):
            raise Refused(reason, request=request)

    return check


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, as the system resolver gives them, each once."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, except that `connect_tcp` resolves the name itself, refuses
    the addresses the policy refuses, and connects to an address it checked, never to the
    name (which could resolve anew). Each address left gets an equal share of the connect
    timeout, so one that drops packets leaves time for the next."""

    def __init__(self, destinations: Destinations, inner: httpcore.AsyncNetworkBackend, resolver: Resolver = resolve) -> None:
        self.destinations = destinations
        self.inner = inner
        self.resolver = resolver

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        allowed, refused = [], []
        for address in await self._resolve(host, port, timeout):
            reason = self.destinations.address_refusal(ipaddress.ip_address(address), port, host)
            (refused if reason else allowed).append(reason or address)
        if not allowed:
            raise Refused(refused[0])
        for n, address in enumerate(allowed, start=1):
            share = None if deadline is None else max(deadline - time.monotonic(), 0.001) / (len(allowed) - n + 1)
            try:
                return await self.inner.connect_tcp(address, port, share, local_address, socket_options)
            except httpcore.ConnectError:
                if n == len(allowed):
                    raise

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The addresses of `host`; a failed or slow lookup is a connect error, as httpcore's own is."""
        try:
            with anyio.fail_after(timeout):
                return await self.resolver(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host}: timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"resolving {host}: {exc}") from exc

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def checked_transport(destinations: Destinations, resolver: Resolver = resolve, **options) -> httpx.AsyncHTTPTransport:
    """httpx's transport with `options`, connecting through CheckedBackend. httpx 0.28 takes
    no network backend, so the one of the pool it built is wrapped; a pool of another shape
    stops the store rather than leave transfers unchecked."""
    transport = httpx.AsyncHTTPTransport(**options)
    pool = getattr(transport, "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if type(pool) is not httpcore.AsyncConnectionPool or not isinstance(inner, httpcore.AsyncNetworkBackend):
        raise RuntimeError(f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: no network backend to check")
    pool._network_backend = CheckedBackend(destinations, inner, resolver)
    return transport
