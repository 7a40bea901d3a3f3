"""Measuring tools: body files, curl timings, background-fetch polling, peak RSS and CPU from /proc, the machine."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .servers import LOOPBACK, clean_env

MB = 1_000_000  # every "MB" the bench prints is 10^6 bytes
CHUNK = 1 << 20

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": MB, "mb": MB, "g": 10**9, "gb": 10**9,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}


def parse_size(text: str) -> int:
    """'1GiB', '256MiB', '500MB', '1048576' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 1GiB, 256MiB, 500MB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human_size(n: int) -> str:
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------- body file


def write_body(path: Path, size: int) -> str:
    """`size` bytes of incompressible data, 1 MiB at a time (a random block with a counter); returns its sha256."""
    block = bytearray(os.urandom(CHUNK))
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written, i = 0, 0
        while written < size:
            block[:8] = i.to_bytes(8, "little")
            n = min(CHUNK, size - written)
            piece = block if n == CHUNK else block[:n]
            f.write(piece)
            digest.update(piece)
            written += n
            i += 1
    path.chmod(0o644)
    return digest.hexdigest()


def warm(*paths: Path) -> None:
    """Read files once so that a timed run starts with them in the page cache, and with no dirty
    pages left by the last run: their writeback would compete with this one (a 1 GiB fetch ran at
    520-910 MB/s right after 1 GiB of another process's writes, 860-1,050 after a sync)."""
    buf = bytearray(8 * CHUNK)
    for p in paths:
        try:
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
        except FileNotFoundError:
            pass
    os.sync()


# --------------------------------------------------------------------------- curl


@dataclass
class CurlResult:
    size: int
    seconds: float
    status: int


def curl(url: str, proxy: str | None = None, headers: list[str] = (), timeout: float = 600,
         extra: list[str] = ()) -> CurlResult:
    """One GET, body to /dev/null; `extra`: more curl arguments (--http2, --cacert ...)."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total} %{http_code}",
           "--max-time", str(int(timeout)), *extra]
    if proxy:
        cmd += ["-x", proxy]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=timeout + 10)
    try:
        size, secs, status = out.stdout.split()
        return CurlResult(int(size), float(secs), int(status))
    except ValueError:
        raise RuntimeError(f"curl {url} failed (exit {out.returncode}): {out.stdout!r} {out.stderr!r}") from None


def curl_sha256(url: str, proxy: str | None = None, timeout: float = 600, extra: list[str] = ()) -> tuple[str, int]:
    """(sha256, length) of a body fetched with curl (untimed: checks what a client gets)."""
    cmd = ["curl", "-s", "-f", "--max-time", str(int(timeout)), *extra, "-o", "-", url] + (["-x", proxy] if proxy else [])
    digest, n = hashlib.sha256(), 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=clean_env()) as p:
        try:
            while chunk := p.stdout.read(CHUNK):
                digest.update(chunk)
                n += len(chunk)
            p.wait(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
    return digest.hexdigest(), n


# --------------------------------------------------------------------------- background fetch


class Api:
    """A keep-alive connection to the store's listen port that times each GET."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)

    def get(self, path: str) -> tuple[float, int, dict | None]:
        """(seconds, status, JSON body or None) of one GET."""
        t0 = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = resp.read()
        seconds = time.perf_counter() - t0
        try:
            return seconds, resp.status, json.loads(body)
        except ValueError:
            return seconds, resp.status, None

    def close(self) -> None:
        self.conn.close()


def background_fetch(proxy: str, api_port: int, url: str, fetch_id: str, size: int, timeout: float,
                     extra: list[str] = ()) -> tuple[float, dict]:
    """Start a `respond=accepted` background fetch through the proxy and poll the store's API
    every 20 ms until `result` is set. Returns (seconds from the curl start to success, registration)."""
    t0 = time.perf_counter()
    r = curl(url, proxy=proxy, headers=[f'Background-Fetch: id="{fetch_id}", respond=accepted'], timeout=60,
             extra=extra)
    if r.status != 202:
        raise RuntimeError(f"the Background-Fetch request got HTTP {r.status}, expected 202 Accepted")
    deadline = t0 + timeout
    path = f"/api/fetches/{fetch_id}"
    reg: dict | None = None
    api = Api(api_port)
    try:
        while True:
            _, status, body = api.get(path)
            now = time.perf_counter()
            if status == 200:
                reg = body
                if reg.get("result"):
                    break
            elif status != 404:  # 404 only in the instant before the store registers it
                raise RuntimeError(f"GET {path} answered {status}: {str(body)[:300]}")
            if now > deadline:
                raise RuntimeError(f"{fetch_id}: no result after {timeout:.0f} s (last: {reg})")
            time.sleep(0.02)
    finally:
        api.close()
    if reg["result"] != "success":
        raise RuntimeError(f"{fetch_id} ended with result={reg['result']!r} failureReason={reg.get('failureReason')!r} "
                           f"lastError={reg.get('lastError')!r}")
    if reg.get("downloaded") not in (None, size):
        raise RuntimeError(f"{fetch_id}: success with downloaded={reg.get('downloaded')}, body is {size} bytes")
    return now - t0, reg


# --------------------------------------------------------------------------- /proc


def reset_peak(pid: int | None) -> bool:
    """Reset VmHWM to the current RSS (write 5 to clear_refs, Linux >= 4.0); False when not allowed."""
    if not pid:
        return False
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def written_bytes(pid: int | None) -> tuple[int, int] | None:
    """(write_bytes, cancelled_write_bytes) of a process so far (/proc/<pid>/io): bytes it made dirty
    for the disk, and those truncated away before they reached it."""
    if not pid:
        return None
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        return int(fields["write_bytes"]), int(fields["cancelled_write_bytes"])
    except (OSError, KeyError, ValueError):
        return None


def peak_rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None, tid: int | None = None) -> float | None:
    """utime + stime of a process (or of its thread `tid`) so far."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}" + (f"/task/{tid}" if tid else "") + "/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of `pid`."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return {}
    return {t: c for t in tids if (c := cpu_seconds(pid, t)) is not None}


class ProcWatch:
    """Peak RSS and CPU share of a set of processes over one timed run."""

    def __init__(self, pids: dict[str, int | None]):
        self.pids = {k: v for k, v in pids.items() if v}
        self.reset_ok = {k: reset_peak(p) for k, p in self.pids.items()}
        self.cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.threads0 = {k: thread_cpu(p) for k, p in self.pids.items()}
        self.t0 = time.perf_counter()

    def finish(self) -> dict[str, dict]:
        wall = time.perf_counter() - self.t0
        out = {}
        for k, p in self.pids.items():
            c1, c0 = cpu_seconds(p), self.cpu0[k]
            used = None if c1 is None or c0 is None else c1 - c0
            # the busiest threads: one near 100 % is the ceiling, whatever the process's total
            busiest = sorted((c - self.threads0[k].get(t, 0.0) for t, c in thread_cpu(p).items()), reverse=True)[:3]
            out[k] = {
                "threads_pct": [100 * b / wall for b in busiest] if wall > 0 else [],
                "peak_rss_mb": peak_rss_mb(p),
                "peak_is_lifetime": not self.reset_ok[k],
                "cpu_seconds": used,
                "cpu_pct": None if used is None or wall <= 0 else 100 * used / wall,
            }
        return out


# --------------------------------------------------------------------------- the machine


def _first_line(cmd: list[str], stderr: bool = False) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (out.stderr if stderr else out.stdout) or out.stdout or out.stderr
    return text.strip().splitlines()[0] if text.strip() else "unknown"


def machine(nginx: str, squid: str | None) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from mitmproxy.version import VERSION as mitm_version
    except ImportError:
        mitm_version = "unknown"
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mitmproxy": mitm_version,
        "sqlite": sqlite3.sqlite_version,
        "nginx": _first_line([nginx, "-v"], stderr=True).replace("nginx version: nginx/", ""),
        "squid": _first_line([squid, "-v"]).replace("Squid Cache: Version ", "Squid ") if squid else "no Squid",
        "curl": _first_line(["curl", "--version"]).split(" (")[0],
        "executable": sys.executable,
    }
