"""The servers of one bench run: nginx, plain mitmdump, the bgfetch mitmdump (restarted on a fresh store) and Squid."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from store.db import schema

from .servers import BenchError, Mitmdump, Nginx, ensure_binary, free_port
from .squid import Squid

# Rules like a user's (a glob, a scheme glob, a filter expression) that no request of the bench
# matches: every request the bgfetch mitmdump passes through pays for trying them.
RULES = """\
rules:
  - name: iso-images
    url: "*://*.iso"
    respond: accepted
  - name: videos
    url: "https://*.mp4"
    download-total: 8GiB
  - name: debian-pool
    filter: '~d deb.debian.org & ~u "/pool/.*\\.deb$"'
"""
# The floor under any addon: mitmproxy calls every hook through each loaded script's layers, also
# for a script with nothing in it. The small requests run through this one too, to show that floor.
EMPTY_SCRIPT = """\
class Empty:
    \"\"\"An addon without hooks.\"\"\"


addons = [Empty()]
"""


class Rig:
    """Start with `start()`, stop everything with `stop()` (call it in a finally)."""

    def __init__(self, tmp: Path, repo: Path, *, bgfetch: bool, squid_cache_mb: int | None):
        self.tmp, self.repo = tmp, repo
        self.want_bgfetch, self.squid_cache_mb = bgfetch, squid_cache_mb
        self.www = tmp / "www"
        self.nginx: Nginx | None = None
        self.plain: Mitmdump | None = None
        self.empty: Mitmdump | None = None  # mitmdump with EMPTY_SCRIPT
        self.bg: Mitmdump | None = None
        self.bg_db: Path | None = None
        self.squid: Squid | None = None
        self.bg_skip: str | None = None  # why there are no bgfetch figures
        self.squid_skip: str | None = None  # why there are no Squid figures
        self.bg_starts = 0

    def start(self) -> None:
        self.nginx_bin = ensure_binary("nginx")
        self.tmp.chmod(0o755)  # nginx's and Squid's workers run as other users
        self.www.mkdir(parents=True)
        self.www.chmod(0o755)
        self.nginx = Nginx(self.nginx_bin, self.tmp / "nginx", self.www).start()
        print(f"nginx: {self.nginx.binary} on port {self.nginx.port} (pid {self.nginx.proc.pid})", flush=True)
        self.plain = Mitmdump("plain mitmdump", self.tmp / "mitm-plain", [])
        self.plain.start()
        print(f"plain mitmdump: port {self.plain.port} (pid {self.plain.proc.pid})\n  $ {shlex.join(self.plain.cmd)}",
              flush=True)
        script = self.tmp / "empty_addon.py"
        script.write_text(EMPTY_SCRIPT)
        self.empty = Mitmdump("mitmdump with an empty script", self.tmp / "mitm-empty", ["-s", str(script)])
        self.empty.start()
        print(f"mitmdump with an empty script: port {self.empty.port} (pid {self.empty.proc.pid})", flush=True)
        self._start_squid()
        if not self.want_bgfetch:
            self.bg_skip = "--no-bgfetch"
        elif not (self.repo / "addon.py").exists():
            self.bg_skip = f"{self.repo / 'addon.py'} does not exist"
        else:
            self.fresh_bgfetch()
        if self.bg_skip:
            print(f"bgfetch scenarios SKIPPED: {self.bg_skip}", flush=True)

    def _start_squid(self) -> None:
        if self.squid_cache_mb is None:
            self.squid_skip = "--no-squid"
        else:
            try:
                self.squid = Squid(ensure_binary("squid"), self.tmp / "squid", self.squid_cache_mb).start()
                print(f"squid: {self.squid.binary} on port {self.squid.port} (pid {self.squid.proc.pid}), "
                      f"{self.squid_cache_mb} MB disk cache", flush=True)
                return
            except BenchError as e:
                self.squid_skip = str(e).splitlines()[0]
                if self.squid is not None:
                    self.squid.stop()
                self.squid = None
        print(f"Squid scenarios SKIPPED: {self.squid_skip}", flush=True)

    def fresh_bgfetch(self) -> bool:
        """(Re)start the bgfetch mitmdump on an empty store: its peak RSS starts from nothing and its
        database holds only what comes next, so warming it reads one body. False when it cannot start."""
        if self.bg_skip:
            return False
        if self.bg is not None:
            self.bg.stop()
            self.bg = None
        self.bg_starts += 1
        work = self.tmp / f"mitm-bgfetch-{self.bg_starts}"
        db = work / "bgfetch.sqlite3"
        for old in self.tmp.glob("mitm-bgfetch-*/bgfetch.sqlite3*"):  # the bodies file too
            old.unlink()  # the last store's bodies: only the disk space matters now
        work.mkdir(parents=True)
        bg = self.bgfetch_mitmdump("bgfetch mitmdump", work, db)
        api_port = bg.api_port
        if self.bg_starts == 1:
            print(f"bgfetch mitmdump:\n  $ {shlex.join(bg.cmd)}", flush=True)
        try:
            bg.start(timeout=60)
        except BenchError as e:
            print(f"the bgfetch mitmdump did not start:\n{e}", flush=True)
            bg.stop()
            self.bg_skip = "addon did not start: " + str(e).splitlines()[0].removeprefix("bgfetch mitmdump: ")
            return False
        self.bg, self.bg_db = bg, db
        if self.bg_starts == 1:
            pids = bg.pids()
            print(f"  proxy port {bg.port}, API port {api_port}, mitmdump pid {pids['mitmdump']}, "
                  f"store pid {pids['store'] or 'NOT FOUND'} (restarted on an empty store before each bgfetch run)",
                  flush=True)
        return True

    def bgfetch_mitmdump(self, name: str, work: Path, db: Path, *options: str) -> Mitmdump:
        """A bgfetch mitmdump (not started yet) on the store `db`, with the rules of a user, its API on
        a listen port, and `options` (NAME=VALUE) besides."""
        rules = self.tmp / "rules.yaml"
        rules.write_text(RULES)
        api_port = free_port()
        # A body the bench has just written looks stale by RFC 9111's heuristic (10 % of its age since
        # Last-Modified): serving it would first ask nginx again. The bench measures stored bodies.
        sets = [f"bgfetch_db={db}", f"bgfetch_listen_port={api_port}", f"bgfetch_rules={rules}",
                "bgfetch_revalidate=never", *options]
        return Mitmdump(name, work, ["-s", str(self.repo / "addon.py"), *(a for o in sets for a in ("--set", o))],
                        api_port=api_port)

    def stored_files(self) -> list[Path]:
        """The bgfetch store's database files, to warm before serving from them."""
        if self.bg is None:
            return []
        return [p for p in (self.bg_db, Path(f"{self.bg_db}-wal"), Path(schema.bodies_path(str(self.bg_db))))
                if p.exists()]

    def settle(self, timeout: float = 120.0) -> float | None:
        """Wait until the store has copied its WAL into the database (it does so once its writer
        rests): a timed scenario then starts on a quiet store, not beside the last one's copy.
        Returns the seconds waited, None if the WAL was still there after `timeout`."""
        if self.bg is None:
            return 0.0
        wal, t0 = Path(f"{self.bg_db}-wal"), time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if not wal.exists() or wal.stat().st_size == 0:
                waited = time.perf_counter() - t0
                os.sync()  # and nothing of it left to write back
                return waited
            time.sleep(0.05)
        return None

    def bg_alive(self) -> bool:
        return self.bg is not None and self.bg.proc.poll() is None

    def stop(self) -> None:
        for server in (self.bg, self.squid, self.empty, self.plain, self.nginx):
            if server is not None:
                try:
                    server.stop()
                except Exception as e:  # keep stopping the others
                    print(f"stopping {server}: {e}", file=sys.stderr)
