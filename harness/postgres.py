"""A real PostgreSQL server for the fleet's tests and benchmarks: Debian's packages, a temp dir, a free port.

    with Postgres() as server:
        url = server.create_database()   # postgresql://bgfetch@127.0.0.1:PORT/bgfetch_1
        ...
        server.restart()                 # "the database goes away and comes back" on the same port

`initdb` and `pg_ctl` come from Debian's `postgresql` package (`/usr/lib/postgresql/N/bin`; the
newest N installed). PostgreSQL refuses to run as root, so when we are root it runs as the
`postgres` user, in a directory of its own under the system's temp dir (pytest's are root's
only). It listens on 127.0.0.1 only, without a Unix socket, trusts local connections, and is
kept small (the machine is shared): 16 MB of shared buffers, few connections, and no fsync —
it holds test data only. Every wait is bounded; `stop` leaves no process and no directory.
"""

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from harness.poll import eventually
from harness.proxy import alive, free_port
from harness.tempserver import TempServer

USER = "bgfetch"  # the superuser initdb makes; the tests connect as it
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "shared_buffers": "16MB",
    "max_connections": "60",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}


class PostgresMissing(RuntimeError):
    """Debian's postgresql package is not installed (`.ci/run` installs it)."""


def binaries() -> Path:
    """The bin directory of the newest PostgreSQL that Debian's packages installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[4]))
    if not found:
        raise PostgresMissing("no /usr/lib/postgresql/*/bin/initdb: apt-get install postgresql")
    return Path(found[-1]).parent


class Postgres(TempServer):
    """One PostgreSQL cluster in a temp dir; `create_database` gives each test a database of its own."""

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.bin = binaries()
        super().__init__("bgfetch-pg-", "postgres.log")
        self.data = self.dir / "data"
        self._databases = 0
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """One of PostgreSQL's programs, as the postgres user when we are root."""
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n{self.log_tail()}")
        return done

    def start(self, timeout: float = 30) -> "Postgres":
        """Make the cluster (the first time) and start it; returns once it takes connections."""
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync",
                      "--no-instructions")
        options = " ".join(f"-c {name}={value or repr('')}" for name, value in SETTINGS.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)),
                  "-o", f"-p {self.port} {options}", "start", timeout=timeout + 10)
        eventually(self._answers, timeout, interval=0.1, what=f"PostgreSQL to answer on port {self.port}",
                   explain=lambda _: self.log_tail())
        return self

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, timeout: float = 30) -> None:
        """Stop the server (fast shutdown: connections are cut); the cluster stays for a `start`."""
        if not self.running:
            return
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", str(int(timeout)), "stop",
                      timeout=timeout + 10)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and wait for its processes to go (a crash: it recovers at `start`)."""
        pid = self.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: not alive(pid), 10, what=f"PostgreSQL's postmaster {pid} to go")
        deadline = time.monotonic() + 10  # its children notice the postmaster's death by themselves
        while _children_of(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in _children_of(pid):
            os.kill(child, signal.SIGKILL)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down for `down_for` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def create_database(self, name: str = "") -> str:
        """A new, empty database (named, or numbered); its URL."""
        if not name:
            self._databases += 1
            name = f"bgfetch_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found
