"""How the proxy's options become the store process's command line and its secrets.

The options are read by name from mitmproxy's option manager (or any object with the same
attributes); nothing here imports mitmproxy. Which option goes where is the table of
`options`: what may be secret (the token, the upstream proxy's credentials, the webhook URL,
and the secret shared with the proxy) goes on the store's standard input, never on its
command line, which every local user can read in `ps`.
"""

import os
from dataclasses import dataclass

from store.proxyside import options


@dataclass(frozen=True)
class Launch:
    """How to start the store: its command-line arguments, its secrets, its database and the
    host name of its dashboard through the proxy (and whether a client of the proxy can ask for it)."""

    args: list[str]
    secrets: dict
    db: str
    host: str
    host_reached: bool = True


def launch(opts, secret: str, quota: int | None, proxy_ports: list[int]) -> Launch:
    """The store's start from the options as they are now (`quota` in bytes, parsed), and the
    ports mitmproxy listens on (which the store never fetches on loopback)."""
    db = db_path(opts)
    worked_out = {  # the values that the options give once worked out; the rest as they are
        "bgfetch_db": db, "bgfetch_quota": quota or None, "mode": options.upstream_proxy(opts.mode),
        "listen_port": proxy_ports,
    }
    args, hidden = options.store_start(lambda name: worked_out[name] if name in worked_out else getattr(opts, name))
    return Launch(args, {"secret": secret, **hidden}, db, opts.bgfetch_host, reaches_hosts(opts.mode))


def reaches_hosts(modes: list[str]) -> bool:
    """Whether the clients of one of mitmproxy's `modes` name the host they ask for, and so can
    ask for bgfetch_host: every mode but reverse (each request goes to its one origin) and dns."""
    return any(mode.split(":", 1)[0].split("@", 1)[0] not in ("reverse", "dns") for mode in modes)


def db_path(opts) -> str:
    """`bgfetch_db`, or bgfetch.sqlite3 in mitmproxy's confdir (made if missing)."""
    if opts.bgfetch_db:
        return os.path.expanduser(opts.bgfetch_db)
    confdir = os.path.expanduser(opts.confdir)
    os.makedirs(confdir, exist_ok=True)
    return os.path.join(confdir, "bgfetch.sqlite3")
