"""How the proxy's options become the store process's command line and its secrets.

The options are read by name from mitmproxy's option manager (or any object with the same
attributes); nothing here imports mitmproxy. What may be secret (the token, the upstream
proxy's credentials, the webhook URL, the secret shared with the proxy) goes on the store's
standard input, never on its command line, which every local user can read in `ps`.
"""

import os
from dataclasses import dataclass

# The options `launch` reads: a change of one starts the store again.
OPTIONS = {
    "bgfetch_db", "bgfetch_host", "bgfetch_listen_port", "bgfetch_concurrency", "bgfetch_quota",
    "bgfetch_webhook", "bgfetch_token", "bgfetch_retry_cap", "bgfetch_refuse_private",
    "mode", "listen_port", "upstream_auth", "ssl_insecure", "ssl_verify_upstream_trusted_ca",
    "ssl_verify_upstream_trusted_confdir", "confdir",
}


@dataclass(frozen=True)
class Launch:
    """How to start the store: its command-line arguments, its secrets, its database and the
    host name of its dashboard through the proxy."""

    args: list[str]
    secrets: dict
    db: str
    host: str


def launch(opts, secret: str, quota: int | None, proxy_ports: list[int]) -> Launch:
    """The store's start from the options as they are now (`quota` in bytes, parsed), and the
    ports mitmproxy listens on (which the store never fetches on loopback)."""
    db = db_path(opts)
    args = [
        "--db", db,
        "--listen-port", str(opts.bgfetch_listen_port),
        "--public-host", opts.bgfetch_host,
        "--concurrency", str(opts.bgfetch_concurrency),
        "--retry-cap", str(opts.bgfetch_retry_cap),
    ]
    if quota:
        args += ["--quota", str(quota)]
    upstream = next((m.split(":", 1)[1] for m in opts.mode if m.startswith("upstream:")), None)
    if upstream:
        args += ["--upstream-proxy", upstream]
    if opts.ssl_insecure:
        args.append("--insecure")
    if opts.ssl_verify_upstream_trusted_ca:
        args += ["--ca-file", opts.ssl_verify_upstream_trusted_ca]
    if opts.ssl_verify_upstream_trusted_confdir:
        args += ["--ca-dir", opts.ssl_verify_upstream_trusted_confdir]
    if opts.bgfetch_refuse_private:
        args.append("--refuse-private")
    for port in proxy_ports:
        args += ["--proxy-port", str(port)]
    secrets = {"secret": secret, "token": opts.bgfetch_token, "upstream_auth": opts.upstream_auth,
               "webhook": opts.bgfetch_webhook}
    return Launch(args, secrets, db, opts.bgfetch_host)


def db_path(opts) -> str:
    """`bgfetch_db`, or bgfetch.sqlite3 in mitmproxy's confdir (made if missing)."""
    if opts.bgfetch_db:
        return os.path.expanduser(opts.bgfetch_db)
    confdir = os.path.expanduser(opts.confdir)
    os.makedirs(confdir, exist_ok=True)
    return os.path.join(confdir, "bgfetch.sqlite3")
