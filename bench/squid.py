"""Squid as a caching proxy beside bgfetch: its own config, cache directory and logs in the bench's temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from .servers import LOOPBACK, BenchError, free_port, stop_process, tail, wait_listening

# Every object is cached on disk (a `ufs` cache_dir, as a Squid in front of big downloads would be
# set up), memory holds only small ones; `override-lastmod` keeps a body the bench has just
# written fresh, else Squid revalidates it with the origin instead of answering a hit.
SQUID_CONF = """\
http_port {host}:{port}
pid_filename {dir}/squid.pid
cache_effective_user {user}
cache_dir ufs {dir}/cache {cache_mb} 16 256
maximum_object_size 16 GB
cache_mem 16 MB
maximum_object_size_in_memory 1 MB
cache_log {dir}/cache.log
access_log stdio:{dir}/access.log squid
strip_query_terms off
cache_store_log none
netdb_filename none
coredump_dir {dir}
http_access allow localhost
http_access deny all
refresh_pattern . 1440 100% 10080 override-lastmod
shutdown_lifetime 0 seconds
visible_hostname bgfetch-bench
"""

HITS = ("TCP_HIT", "TCP_MEM_HIT", "TCP_OFFLINE_HIT")


class Squid:
    """A private Squid (`-N`, in the foreground) on a free 127.0.0.1 port with a disk cache of `cache_mb` MB."""

    def __init__(self, binary: str, workdir: Path, cache_mb: int):
        self.binary, self.dir, self.cache_mb = binary, workdir, cache_mb
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.access_log = self.dir / "access.log"
        self.conf = self.dir / "squid.conf"

    @property
    def proxy(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __str__(self) -> str:
        return f"squid on {LOOPBACK}:{self.port}"

    def start(self) -> "Squid":
        self.dir.mkdir(parents=True, exist_ok=True)
        # as root, Squid drops to cache_effective_user, which must own its directory
        user = "proxy" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
        self.conf.write_text(SQUID_CONF.format(host=LOOPBACK, port=self.port, dir=self.dir, user=user,
                                               cache_mb=self.cache_mb))
        if os.geteuid() == 0:
            try:
                shutil.chown(self.dir, user)
            except (LookupError, OSError) as e:
                raise BenchError(f"cannot give {self.dir} to Squid's user {user!r}: {e}") from None
            self.dir.chmod(0o755)
        stderr = self.dir / "stderr.log"
        init = subprocess.run([self.binary, "-N", "-z", "-f", str(self.conf)], capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise BenchError(f"`squid -z` failed with exit code {init.returncode}: {init.stderr.strip()}\n"
                             f"{tail(self.dir / 'cache.log')}")
        with open(stderr, "wb") as err:
            self.proc = subprocess.Popen([self.binary, "-N", "-f", str(self.conf)], stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, start_new_session=True)
        wait_listening("squid", self.proc, self.port, [stderr, self.dir / "cache.log"])
        return self

    def last_status(self, url: str) -> str | None:
        """Squid's result code (TCP_MISS, TCP_HIT, ...) of the last request for `url` in its access log."""
        found = None
        try:
            lines = self.access_log.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if len(fields) > 6 and fields[6] == url:
                found = fields[3].split("/", 1)[0]
        return found

    def newest_object(self) -> Path | None:
        """The file Squid wrote last in its cache: the object a hit is read from."""
        files = [p for p in (self.dir / "cache").rglob("*") if p.is_file() and p.name != "swap.state"]
        return max(files, key=lambda p: p.stat().st_mtime, default=None)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, "squid")
            try:  # its helpers (unlinkd) share its process group
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
