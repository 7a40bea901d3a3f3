"""The options of bgfetch, in one table: name, type, default, help, and how the value reaches the
store process (a flag on its command line, or a key of the secrets on its standard input, which
no process list shows).

The table feeds the addon's `load` and `configure` (the checks of the options changed),
`launch` (the store's command line and secrets), the store's argument parser
(store/__main__.py) and the README's options table (a test holds the two together). Some of
mitmproxy's own options reach the store too: they are rows without a type (mitmproxy adds
them). A change of any option that reaches the store starts the store again.
"""

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from store.db import locations
from vocabulary import REVALIDATE, check_revalidate, check_segments, parse_size

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Option:
    """One option, set with mitmproxy's `--set name=value`, and how the store gets its value."""

    name: str
    type: type | None  # None: one of mitmproxy's own options, which the store reads too
    default: object
    help: str
    flag: str = ""  # the store's command-line flag that takes the value, or
    secret: str = ""  # its key in the JSON secrets on the store's standard input
    kind: type | None = None  # the flag's value as the store reads it, when not `type` (list: repeated)
    required: bool = False  # the store does not start without the flag
    check: Callable[[object], None] | None = None  # ValueError saying what the value must be
    choices: tuple[str, ...] = ()  # the values a string option takes (mitmproxy's console offers them)

    @property
    def restarts(self) -> bool:
        """Whether the store gets the value: a change starts the store again."""
        return bool(self.flag or self.secret)

    def argument(self) -> dict:
        """The keywords of the store's `parser.add_argument(self.flag, ...)`."""
        kind, described = self.kind or self.type, f"{self.name}: {self.help}"
        if kind is bool:
            return {"action": "store_true", "help": described}
        if kind is list:
            return {"type": int, "action": "append", "default": [], "help": described}
        default = kind(self.default) if self.type is not None and self.default != "" else None
        chosen = {"choices": self.choices} if self.choices else {}
        return {"type": kind, "default": default, "required": self.required, "help": described, **chosen}

    def command_line(self, value: object) -> list[str]:
        """The flag and `value` as the store's command line takes them (nothing for None or False)."""
        if value is None or value is False:
            return []
        if value is True:
            return [self.flag]
        if isinstance(value, list):
            return [part for item in value for part in (self.flag, str(item))]
        return [self.flag, str(value)]


def _port_or_zero(value: int) -> None:
    if not 0 <= value < 65536:
        raise ValueError("must be a port number, or 0 for none")


def _at_least_one(value: int) -> None:
    if value < 1:
        raise ValueError("must be 1 or more")


def _a_second_or_more(value: int) -> None:
    if value < 1:
        raise ValueError("must be 1 second or more")


def _size_or_empty(value: str) -> None:
    if value:
        parse_size(value)


def _log_format(value: str) -> None:
    if value not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}, got {value!r}")


def _sqlite_or_postgres(value: str) -> None:
    if locations.is_postgres(value):
        locations.check_postgres(value)


def _bodies_or_empty(value: str) -> None:
    if value:
        locations.parse_bodies(value)


def _web_url_or_empty(value: str) -> None:
    parts = urllib.parse.urlsplit(value)
    if value and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise ValueError(f"must be an http or https URL, got {value!r}")


OPTIONS = (
    Option("bgfetch_db", str, "", "The SQLite store (empty: bgfetch.sqlite3 in mitmproxy's confdir), or for a fleet"
           " `postgresql://user@host:5432/dbname` (a password in it reaches the store on its standard input).",
           flag="--db", required=True, check=_sqlite_or_postgres),
    Option("bgfetch_bodies", str, "", "For a fleet (with a PostgreSQL `bgfetch_db`): where bodies go,"
           " `s3://bucket/prefix?endpoint=http://host:port` (`&region=` too).", flag="--bodies",
           check=_bodies_or_empty),
    Option("bgfetch_s3_access_key", str, "", "The object storage's access key (empty: AWS_ACCESS_KEY_ID, or the"
           " other ways of AWS's SDK).", secret="s3_access_key"),
    Option("bgfetch_s3_secret_key", str, "", "The object storage's secret key (empty: AWS_SECRET_ACCESS_KEY, or the"
           " other ways of AWS's SDK).", secret="s3_secret_key"),
    Option("bgfetch_lease", int, 10, "For a fleet: seconds a node's claim on a transfer lasts unrenewed; then another"
           " node takes the transfer over, from the bytes committed.", flag="--lease", kind=float,
           check=_a_second_or_more),
    Option("bgfetch_rules", str, "", "YAML file of rules that make requests background fetches; read again when"
           " it changes."),
    Option("bgfetch_host", str, "bgfetch.internal", "Host name that serves the dashboard and the API through the"
           " proxy.", flag="--public-host"),
    Option("bgfetch_listen_port", int, 0, "Also serve the dashboard and the API on 127.0.0.1 at this port (0: only"
           " through the proxy).", flag="--listen-port", check=_port_or_zero),
    Option("bgfetch_concurrency", int, 4, "Background fetches transferring at once; the rest wait as `pending`.",
           flag="--concurrency", check=_at_least_one),
    Option("bgfetch_quota", str, "", "Most bytes the store may hold, e.g. `20GB` (empty: no limit); beyond it:"
           " `quota-exceeded`.", flag="--quota", kind=int, check=_size_or_empty),
    Option("bgfetch_webhook", str, "", "URL that receives each background fetch event as a JSON POST.",
           secret="webhook", check=_web_url_or_empty),
    Option("bgfetch_token", str, "", "When set, the API requires `Authorization: Bearer <token>`.", secret="token"),
    Option("bgfetch_retry_cap", int, 30, "Longest wait, in seconds, between retries of a paused fetch.",
           flag="--retry-cap", kind=float, check=_a_second_or_more),
    Option("bgfetch_paused_read_timeout", int, 30, "Seconds a client reading a background fetch that has paused"
           " gets no new bytes before its response ends short, so that it can resume with `Range`"
           " (curl -C -, wget -c); the fetch goes on.", flag="--paused-read-timeout", kind=float,
           check=_a_second_or_more),
    Option("bgfetch_revalidate", str, "cache-control", "When a stored response is checked with its origin (when it"
           " is reachable) before it is served: `never`, when RFC 9111 says it is stale (`cache-control`; a client's"
           " `no-cache`/`max-age=0` too) or `always`; also a rule key.", flag="--revalidate", check=check_revalidate,
           choices=REVALIDATE),
    Option("bgfetch_segments", int, 4, "Most connections one body is fetched over, each with `Range` (1: one), when"
           " its origin allows it (`Accept-Ranges: bytes`, a strong ETag or Last-Modified, a known size) and it is"
           " 32 MB or more; also a rule and a header key.", flag="--segments", check=check_segments),
    Option("bgfetch_refuse_private", bool, False, "Refuse background fetches of loopback, private, link-local and"
           " other non-global addresses, checked after DNS, redirects too (not with mode upstream; see SECURITY.md).",
           flag="--refuse-private"),
    Option("bgfetch_log_format", str, "text", "How the store's lines reach mitmproxy's log: `text` (a line per"
           " state change of a background fetch as `key=value` pairs) or `json` (each line one JSON object, for"
           " log shippers).", flag="--log-format", check=_log_format, choices=LOG_FORMATS),
    # mitmproxy's own options that reach the store
    Option("mode", None, None, "With `upstream:URL`, the store's transfers go through that proxy too.",
           flag="--upstream-proxy", kind=str),
    Option("listen_port", None, None, "The proxy's ports (of every mode too), which the store never fetches on loopback.",
           flag="--proxy-port", kind=list),
    Option("upstream_auth", None, None, "The upstream proxy's credentials, for the store's transfers too.",
           secret="upstream_auth"),
    Option("ssl_insecure", None, None, "The store's transfers do not verify certificates either.",
           flag="--insecure", kind=bool),
    Option("ssl_verify_upstream_trusted_ca", None, None, "The store's transfers trust this CA file too.",
           flag="--ca-file", kind=str),
    Option("ssl_verify_upstream_trusted_confdir", None, None, "The store's transfers trust the CAs of this"
           " directory too.", flag="--ca-dir", kind=str),
    Option("confdir", None, None, "Where the store is when `bgfetch_db` is empty.", flag="--db", kind=str),
)
BY_NAME = {option.name: option for option in OPTIONS}
RESTARTS = frozenset(option.name for option in OPTIONS if option.restarts)


def check(opts, updated: set[str]) -> None:
    """Check the options named in `updated` (read by name from `opts`); ValueError naming the
    first one that is wrong."""
    for option in OPTIONS:
        if option.check and option.name in updated:
            try:
                option.check(getattr(opts, option.name))
            except ValueError as exc:
                raise ValueError(f"{option.name} {exc}") from None
    if updated & {"bgfetch_db", "bgfetch_bodies"}:
        locations.check_pair(opts.bgfetch_db, opts.bgfetch_bodies)
    if updated & {"bgfetch_refuse_private", "mode"} and opts.bgfetch_refuse_private and upstream_proxy(opts.mode):
        raise ValueError("bgfetch_refuse_private cannot be enforced in mode upstream: the upstream proxy resolves"
                         " names and connects; refuse private addresses there instead")


def upstream_proxy(modes: list[str]) -> str | None:
    """The upstream proxy of mitmproxy's `mode`s (upstream:URL), if any."""
    return next((mode.split(":", 1)[1] for mode in modes if mode.startswith("upstream:")), None)


def store_arguments(parser) -> None:
    """Add the flags of the table to the store's argparse `parser` (one for each flag)."""
    added = set()
    for option in OPTIONS:
        if option.flag and option.flag not in added:
            added.add(option.flag)
            parser.add_argument(option.flag, **option.argument())


def store_start(value: Callable[[str], object]) -> tuple[list[str], dict[str, object]]:
    """The store's command line and secrets, `value(name)` giving the value of each option that
    reaches it (of two options that share a flag, the first gives its value)."""
    args, hidden, flags = [], {}, set()
    for option in OPTIONS:
        if option.secret:
            hidden[option.secret] = value(option.name)
        elif option.flag and option.flag not in flags:
            flags.add(option.flag)
            args += option.command_line(value(option.name))
    return args, hidden


def readme_table() -> str:
    """The README's table of the options, in Markdown."""
    lines = ["| option | default | meaning | a change restarts the store |", "|---|---|---|---|"]
    for option in OPTIONS:
        if option.type is None:
            default = "mitmproxy's"
        elif option.default == "":
            default = "empty"
        else:
            default = f"`{str(option.default).lower() if option.type is bool else option.default}`"
        lines.append(f"| `{option.name}` | {default} | {option.help} | {'yes' if option.restarts else 'no'} |")
    return "\n".join(lines) + "\n"
