"""The processes a benchmark run needs: its own nginx origin and mitmdump (plain or with bgfetch)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness.tls import self_signed
from store.proxyside.process import MALLOC_TUNABLES

LOOPBACK = "127.0.0.1"


class BenchError(RuntimeError):
    """A set-up step failed; the message says which and why."""


# --------------------------------------------------------------------------- helpers


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now and that no earlier call gave:
    each server binds its port only when it starts, so two could otherwise be given the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status of a GET to a loopback URL without any proxy, None when it cannot connect."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def wait_listening(name: str, proc: subprocess.Popen, port: int, logs: list[Path], timeout: float = 30.0) -> None:
    """Return once `proc` listens on `port`; BenchError with the tails of its `logs` if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode}:\n" + "\n".join(tail(p) for p in logs))
        if port_open(port):
            return
        time.sleep(0.05)
    raise BenchError(f"{name} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s:\n{tail(logs[-1])}")


def stop_process(proc: subprocess.Popen, name: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; never raises."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  {name} (pid {proc.pid}) ignored SIGTERM for {timeout:.0f} s: SIGKILL", flush=True)
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    except OSError:
        pass


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def descendants(pid: int) -> list[int]:
    """Every descendant of `pid`, read from /proc/*/stat (task/*/children is not in every kernel)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) comes after the ")" that ends the command name
        fields = stat[stat.rfind(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def clean_env() -> dict[str, str]:
    """The environment without proxy variables, so that only `-x` decides where traffic goes."""
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"):
            del env[k]
    return env


# --------------------------------------------------------------------------- Debian packages


def ensure_binary(name: str) -> str:
    """The binary `name` (nginx, squid); installs Debian's package of that name with apt-get when it is missing."""
    return find_binary(name) or apt_install(name)


def apt_install(package: str) -> str:
    """Install Debian's `package` with apt-get (as root) and return the path of its binary of the same name.

    The package would start a system service; policy-rc.d (as in Docker images) stops that.
    It is only made, and removed again, when the machine has none."""
    if not shutil.which("apt-get"):
        raise BenchError(f"{package} is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        raise BenchError(f"{package} is not installed; run as root (or `sudo apt-get install -y {package}`)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists():
        policy.write_text(f"#!/bin/sh\n# made by bgfetch bench during apt-get install {package}\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
        print(f"{package}: wrote {policy} (exit 101) so the package does not start a system service")
    try:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", package]):
            print(f"{package} is missing: $ " + " ".join(cmd), flush=True)
            rc = subprocess.call(cmd, env=env, timeout=900)
            if rc != 0:
                raise BenchError(f"`{' '.join(cmd)}` failed with exit code {rc}")
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
            print(f"{package}: removed {policy} again")
    path = find_binary(package)
    if not path:
        raise BenchError(f"apt-get installed {package} but its binary was not found")
    return path


def find_binary(name: str) -> str | None:
    """`name` on PATH or in the sbin directories (not always on root's PATH in containers)."""
    for cand in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/local/sbin/{name}"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


# --------------------------------------------------------------------------- nginx


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    # one short line per request: the bench counts what reaches the origin
    log_format bench '$request_method $request_uri $status $body_bytes_sent';
    access_log {dir}/access.log bench;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ }}
        # an origin that caps each connection, as many CDNs and mirrors do
        location /limited/ {{ alias {root}/; limit_rate {limit_rate}; }}
    }}
    server {{
        listen {host}:{tls_port} ssl http2;
        ssl_certificate {dir}/origin.pem;
        ssl_certificate_key {dir}/origin.key;
        root {root};
        location / {{ }}
    }}
}}
"""
LIMIT_RATE = "25m"  # nginx's m: MiB per second and connection


class Nginx:
    """A private nginx (one worker, sendfile) serving `root` on a free 127.0.0.1 port, also under
    /limited/ at LIMIT_RATE per connection, and over HTTPS (HTTP/1.1 and HTTP/2, a self-signed
    certificate) on another."""

    def __init__(self, binary: str, workdir: Path, root: Path):
        self.binary, self.dir, self.root = binary, workdir, root
        self.port = free_port()
        self.tls_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.access_log = self.dir / "access.log"

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{name}"

    def https_url(self, name: str) -> str:
        return f"https://{LOOPBACK}:{self.tls_port}/{name}"

    def limited_url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/limited/{name}"

    def requests_seen(self) -> int:
        try:
            with open(self.access_log, "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def start(self) -> "Nginx":
        self.dir.mkdir(parents=True, exist_ok=True)
        # workers run as an unprivileged user when started as root: let them read the bodies
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.dir / "nginx.conf"
        self_signed(self.dir / "origin.pem", self.dir / "origin.key")
        conf.write_text(NGINX_CONF.format(dir=self.dir, host=LOOPBACK, port=self.port, tls_port=self.tls_port,
                                          root=self.root, user=user, limit_rate=LIMIT_RATE))
        self.stderr = self.dir / "stderr.log"
        cmd = [self.binary, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")]
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        wait_listening("nginx", self.proc, self.port, [self.stderr, self.dir / "error.log"])
        wait_listening("nginx (https)", self.proc, self.tls_port, [self.stderr, self.dir / "error.log"])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, "nginx")  # SIGTERM = fast shutdown of master and worker
            # a worker whose master was SIGKILLed would linger: end it by the pid file's group
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass


# --------------------------------------------------------------------------- mitmdump


def mitmdump_binary() -> str:
    here = Path(sys.executable).parent / "mitmdump"
    if here.exists():
        return str(here)
    found = shutil.which("mitmdump")
    if not found:
        raise BenchError("mitmdump not found beside this Python nor on PATH (run `make bench`)")
    return found


class Mitmdump:
    """A mitmdump process on a free 127.0.0.1 port with its own confdir and logs, and the malloc
    settings that `make run` gives it (each mitmdump of a run the same, plain ones included)."""

    def __init__(self, name: str, workdir: Path, extra_args: list[str], api_port: int | None = None):
        self.name, self.dir, self.extra = name, workdir, extra_args
        self.port = free_port()
        self.api_port = api_port
        self.proc: subprocess.Popen | None = None
        self.store_pid: int | None = None
        self.stdout_log = self.dir / "stdout.log"
        self.stderr_log = self.dir / "stderr.log"

    @property
    def ca(self) -> Path:
        """mitmproxy's CA certificate of this mitmdump, for clients of intercepted HTTPS."""
        return self.dir / "confdir" / "mitmproxy-ca-cert.pem"

    @property
    def proxy(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def cmd(self) -> list[str]:
        return [
            mitmdump_binary(),
            "--listen-host", LOOPBACK,
            "-p", str(self.port),
            "--set", f"confdir={self.dir / 'confdir'}",
            "--set", "stream_large_bodies=1m",
            "--set", "ssl_insecure=true",  # the HTTPS origin's certificate is self-signed
            *self.extra,
        ]

    def logs(self) -> str:
        return f"--- {self.name} stderr (tail) ---\n{tail(self.stderr_log)}\n--- {self.name} stdout (tail) ---\n{tail(self.stdout_log)}"

    def start(self, timeout: float = 30.0) -> "Mitmdump":
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_log, "wb") as out, open(self.stderr_log, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env={"GLIBC_TUNABLES": MALLOC_TUNABLES, **clean_env()})
        deadline = time.monotonic() + timeout
        api = f"http://{LOOPBACK}:{self.api_port}/api/fetches" if self.api_port else None
        listening, listening_since = False, 0.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name}: mitmdump exited with code {self.proc.returncode}\n{self.logs()}")
            if not listening:
                listening = port_open(self.port)
            elif api is None:
                return self
            elif http_status(api) == 200:
                self.store_pid = self.find_store()
                return self
            elif time.monotonic() - listening_since > 5 and self._logged_error():
                raise BenchError(f"{self.name}: the addon logged an error and {api} does not answer\n{self.logs()}")
            if listening and not listening_since:
                listening_since = time.monotonic()
            time.sleep(0.1)
        what = f"the proxy port {self.port}" if not listening else f"GET {api} answering 200"
        raise BenchError(f"{self.name}: no {what} within {timeout:.0f} s\n{self.logs()}")

    def _logged_error(self) -> bool:
        for log in (self.stdout_log, self.stderr_log):
            try:
                text = log.read_text(errors="replace")
            except OSError:
                continue
            if "Addon error" in text or "error in script" in text or "Traceback" in text:
                return True
        return False

    def find_store(self) -> int | None:
        """The store process (`python -m store ...`) among mitmdump's descendants."""
        if self.proc is None:
            return None
        kids = descendants(self.proc.pid)
        for pid in kids:
            args = proc_cmdline(pid)
            if "store" in args or any(a.startswith("store") or a.endswith("/store") for a in args):
                return pid
        return kids[0] if len(kids) == 1 else None

    def pids(self) -> dict[str, int | None]:
        if self.store_pid is None and self.api_port:
            self.store_pid = self.find_store()
        return {"mitmdump": self.proc.pid if self.proc else None, "store": self.store_pid}

    def stop(self) -> None:
        if self.proc is None:
            return
        store = self.store_pid or (self.find_store() if self.api_port else None)
        store_cmd = proc_cmdline(store) if store else []
        stop_process(self.proc, self.name)
        if store and store_cmd:
            # the store should leave with mitmproxy; end it ourselves if it did not within 10 s
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc_cmdline(store) == store_cmd:
                time.sleep(0.1)
            if proc_cmdline(store) == store_cmd:
                print(f"  {self.name}: store process {store} outlived mitmdump by 10 s: SIGTERM/SIGKILL", flush=True)
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    if proc_cmdline(store) != store_cmd:
                        break
                    try:
                        os.kill(store, sig)
                    except OSError:
                        break
                    for _ in range(50):
                        if proc_cmdline(store) != store_cmd:
                            break
                        time.sleep(0.1)
