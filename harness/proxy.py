"""A real `mitmdump -s addon.py` (or mitmweb) on free ports, for end-to-end tests: start, kill -9, restart."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from harness.poll import eventually

ROOT = Path(__file__).resolve().parent.parent
MITMDUMP = Path(sys.executable).parent / "mitmdump"
MITMWEB = Path(sys.executable).parent / "mitmweb"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proxy:
    """mitmdump with the bgfetch addon; its store's API also on a listen port for the tests."""

    def __init__(self, workdir: Path, *options: str, home: Path | None = None, default_db: bool = False) -> None:
        self.workdir = workdir
        self.options = options
        self.home = home  # given: HOME for mitmdump, with its default confdir ~/.mitmproxy, as a user runs it
        self.confdir = home / ".mitmproxy" if home else workdir / "conf"
        self.default_db = default_db  # bgfetch_db not set: the store is bgfetch.sqlite3 in the confdir
        self.db = self.confdir / "bgfetch.sqlite3" if default_db else workdir / "bgfetch.sqlite3"
        self.port = free_port()
        self.listen_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "mitmdump.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "Proxy":
        """Start mitmdump and wait until its store answers on the listen port."""
        self.spawn()

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                return httpx.get(self.api_url("/api/fetches"), timeout=1).status_code in (200, 401)
            except httpx.TransportError:
                return False

        eventually(answers, timeout, interval=0.1, what="mitmdump's store to answer on the listen port",
                   explain=lambda _: f"no answer; mitmdump's log:\n{self.log.read_text()}")
        return self

    def spawn(self) -> "Proxy":
        """Start mitmdump, and return at once."""
        args = [
            *self.program(), "-s", str(ROOT / "addon.py"), "-p", str(self.port),
            "--listen-host", "127.0.0.1",
            "--set", f"bgfetch_listen_port={self.listen_port}", "--set", "bgfetch_retry_cap=1",
        ]
        if not self.default_db:
            args += ["--set", f"bgfetch_db={self.db}"]
        if not self.home:
            args += ["--set", f"confdir={self.confdir}"]
        for option in self.options:
            args += ["--set", option]
        env = {**os.environ, "HOME": str(self.home)} if self.home else None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        return self

    def program(self) -> list[str]:
        """The mitmproxy tool that runs the addon, and its own arguments."""
        return [str(MITMDUMP)]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._wait_store_gone()

    def kill(self) -> None:
        """`kill -9` mitmproxy: the store must notice and go by itself."""
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        self._wait_store_gone()

    def _wait_store_gone(self, timeout: float = 15) -> None:
        eventually(lambda: not store_running_on(self.db), timeout, what=f"the store to let go of {self.db}",
                   explain=lambda _: f"it still holds the lock\n{self.log.read_text()[-3000:]}")

    def store_pid(self) -> int:
        """The pid of the store process this mitmdump started (its child running `-m store`)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.proc.pid and b"store" in cmdline and b"-m" in cmdline:
                return int(entry.name)
        raise AssertionError("no store process under this mitmdump")

    def api_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, self.api_url(path), timeout=10, **kwargs)

    def registration(self, reg_id: str) -> dict:
        return self.api("GET", f"/api/fetches/{reg_id}").json()

    def wait_for(self, reg_id: str, timeout: float = 30, **expected) -> dict:
        """Poll the registration until every `expected` field has its value."""
        return self.wait_until(reg_id, lambda found: all(found.get(k) == v for k, v in expected.items()), timeout, expected)

    def wait_until(self, reg_id: str, test, timeout: float = 30, wanted: object = "") -> dict:
        """Poll the registration until `test(registration)` is true."""

        def read() -> dict:
            response = self.api("GET", f"/api/fetches/{reg_id}")
            return response.json() if response.status_code == 200 else {}

        return eventually(read, timeout, until=lambda found: found and test(found), what=f"{reg_id}: {wanted or test}",
                          explain=lambda found: f"{found}\n{self.log.read_text()[-3000:]}")

    def wait_for_log(self, text: str, timeout: float = 20) -> str:
        """Poll mitmdump's log until it holds `text`; the log."""
        return eventually(self.log.read_text, timeout, until=lambda log: text in log, interval=0.1,
                          what=f"{text!r} in mitmdump's log", explain=lambda log: log[-2000:])

    def background(self, url: str, fields: str = "", headers: dict | None = None) -> dict:
        """Start a background fetch of `url` through the proxy (`respond=accepted`): its registration."""
        value = ", ".join(filter(None, [fields, "respond=accepted"]))
        with self.client() as client:
            response = client.get(url, headers={"Background-Fetch": value, **(headers or {})})
        assert response.status_code == 202, response.text
        return response.json()

    @property
    def store_running(self) -> bool:
        """Whether a store process holds this proxy's database."""
        return store_running_on(self.db)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(proxy=self.url, timeout=30, **kwargs)


class WebProxy(Proxy):
    """mitmweb with the bgfetch addon, and its own HTTP API (flows, commands) on a free port."""

    PASSWORD = "bgfetch-tests"
    XSRF = "bgfetch-tests-xsrf"  # the same value as cookie and header: tornado's double submit

    def __init__(self, workdir: Path, *options: str, **kwargs) -> None:
        super().__init__(workdir, *options, **kwargs)
        self.web_port = free_port()

    def program(self) -> list[str]:
        return [str(MITMWEB), "--no-web-open-browser", "--web-host", "127.0.0.1", "--web-port", str(self.web_port),
                "--set", f"web_password={self.PASSWORD}"]

    def web(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A call of mitmweb's own API."""
        headers = {"Authorization": f"Bearer {self.PASSWORD}", "X-XSRFToken": self.XSRF,
                   "Cookie": f"_mitmproxy_xsrf={self.XSRF}"}
        return httpx.request(method, f"http://127.0.0.1:{self.web_port}{path}", headers=headers, timeout=10, **kwargs)

    def flows(self) -> list[dict]:
        """mitmweb's flow list."""
        response = self.web("GET", "/flows.json")
        response.raise_for_status()
        return response.json()

    def command(self, name: str, *arguments: str) -> object:
        """Run a mitmproxy command as mitmweb's command bar does: its value."""
        answer = self.web("POST", f"/commands/{name}", json={"arguments": list(arguments)}).json()
        assert "error" not in answer, answer
        return answer["value"]


def store_running_on(db: Path) -> bool:
    """Whether a store process still holds the database's lock."""
    import fcntl

    lock = Path(str(db) + ".lock")
    if not lock.exists():
        return False
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def curl(proxy: Proxy, url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "-x", proxy.url, *args, url], capture_output=True, timeout=timeout,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
