"""`python -m bench`: one run of every scenario side by side (nginx, curl, plain mitmdump, bgfetch) with ratios."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import report
from .measure import (MB, ProcWatch, background_fetch, curl, curl_sha256, human_size, machine, median, parse_size,
                      warm, write_body)
from .servers import LOOPBACK, BenchError, Mitmdump, Nginx, ensure_nginx, free_port

REPO = Path(__file__).resolve().parent.parent

SCENARIOS = [
    ("direct", "1 direct curl from nginx"),
    ("plain", "2 plain mitmdump (stream_large_bodies=1m)"),
    ("bgfetch_fetch", "3 bgfetch background fetch (to success)"),
    ("bgfetch_serve_proxy", "4 bgfetch stored body via proxy"),
    ("bgfetch_serve_direct", "5 bgfetch stored body from listen port"),
]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--size", type=_size, default=1 << 30, help="body size, e.g. 1GiB (default), 256MiB, 500MB")
    p.add_argument("--runs", type=int, default=3, help="timed runs per scenario; medians are reported (default 3)")
    p.add_argument("--no-bgfetch", action="store_true", help="only direct curl and plain mitmdump")
    p.add_argument("--repo", type=Path, default=REPO, help="the bgfetch checkout whose addon.py is measured")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results",
                   help="where the JSON and Markdown results go (default bench/results/)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds allowed per transfer (default 120 + 1 s per 10 MB of body)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, nginx conf, database)")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error("--runs must be at least 1")
    if a.size < 1:
        p.error("--size must be positive")
    if a.timeout is None:
        a.timeout = 120 + a.size / (10 * MB)
    return a


def _sigterm(signum, frame):  # turn SIGTERM into an exception so that every finally runs
    raise KeyboardInterrupt(f"signal {signum}")


class Runner:
    """Holds the servers of one run and the measurements per scenario."""

    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args, self.tmp = args, tmp
        self.size = args.size
        self.data: dict[str, dict] = {k: {"key": k, "name": n, "runs": [], "errors": []} for k, n in SCENARIOS}
        self.nginx: Nginx | None = None
        self.plain: Mitmdump | None = None
        self.bg: Mitmdump | None = None
        self.body = tmp / "www" / "body.bin"
        self.db = tmp / "bgfetch" / "bgfetch.sqlite3"

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        nginx_bin = ensure_nginx()
        self.machine = machine(nginx_bin)
        self.body.parent.mkdir(parents=True)
        self.body.parent.chmod(0o755)
        self.tmp.chmod(0o755)
        t = time.perf_counter()
        self.sha256 = write_body(self.body, self.size)
        print(f"body: {human_size(self.size)} written to {self.body} in {time.perf_counter() - t:.1f} s", flush=True)
        self.nginx = Nginx(nginx_bin, self.tmp / "nginx", self.body.parent).start()
        print(f"nginx: {self.nginx.binary} on {LOOPBACK}:{self.nginx.port} (pid {self.nginx.proc.pid})", flush=True)
        self.plain = Mitmdump("plain mitmdump", self.tmp / "mitm-plain", [])
        self.plain.start()
        print(f"plain mitmdump: port {self.plain.port} (pid {self.plain.proc.pid})\n  $ {shlex.join(self.plain.cmd)}",
              flush=True)
        self.bg_skip = self._start_bgfetch()

    def _start_bgfetch(self) -> str | None:
        if self.args.no_bgfetch:
            return "--no-bgfetch"
        addon = self.args.repo / "addon.py"
        if not addon.exists():
            msg = f"{addon} does not exist yet"
            print(f"bgfetch scenarios SKIPPED: {msg}", flush=True)
            return msg
        self.db.parent.mkdir(parents=True)
        api_port = free_port()
        self.bg = Mitmdump("bgfetch mitmdump", self.tmp / "mitm-bgfetch",
                           ["-s", str(addon), "--set", f"bgfetch_db={self.db}", "--set", f"bgfetch_listen_port={api_port}"],
                           api_port=api_port)
        print(f"bgfetch mitmdump:\n  $ {shlex.join(self.bg.cmd)}", flush=True)
        try:
            self.bg.start(timeout=60)
        except BenchError as e:
            print(f"bgfetch scenarios SKIPPED: the addon did not start.\n{e}", flush=True)
            self.bg.stop()
            self.bg = None
            return "addon did not start: " + str(e).splitlines()[0].removeprefix("bgfetch mitmdump: ")
        pids = self.bg.pids()
        print(f"  proxy port {self.bg.port}, API port {api_port}, mitmdump pid {pids['mitmdump']}, "
              f"store pid {pids['store'] or 'NOT FOUND'}", flush=True)
        return None

    def teardown(self) -> None:
        for server in (self.bg, self.plain, self.nginx):
            if server is not None:
                try:
                    server.stop()
                except Exception as e:  # keep stopping the others
                    print(f"stopping {server}: {e}", file=sys.stderr)

    # ------------------------------------------------------------------ runs

    def _record(self, key: str, run: int, seconds: float, nbytes: int, watch: ProcWatch | None, **extra) -> None:
        procs = watch.finish() if watch else {}
        rec = {"run": run, "seconds": seconds, "bytes": nbytes, "mbps": nbytes / seconds / MB if seconds > 0 else None,
               "procs": procs, **extra}
        self.data[key]["runs"].append(rec)
        cpu = "  ".join(f"{k} {v['peak_rss_mb']:.0f} MB {v['cpu_pct']:.0f}% CPU" for k, v in procs.items()
                        if v["peak_rss_mb"] is not None and v["cpu_pct"] is not None)
        print(f"  {self.data[key]['name']:<42} {rec['mbps']:8.0f} MB/s  {seconds:7.3f} s  {cpu}", flush=True)

    def _fail(self, key: str, run: int, err: BaseException) -> None:
        text = f"run {run}: {err}"
        self.data[key]["errors"].append(text)
        print(f"  {self.data[key]['name']:<42} FAILED: {err}", flush=True)

    def _check_size(self, r, what: str) -> None:
        if r.status != 200 or r.size != self.size:
            raise RuntimeError(f"{what}: HTTP {r.status}, {r.size} bytes, expected 200 and {self.size}")

    def run(self, run: int) -> None:
        url = self.nginx.url(self.body.name)
        t = self.args.timeout
        print(f"run {run}/{self.args.runs}", flush=True)

        warm(self.body)
        try:
            r = curl(url, timeout=t)
            self._check_size(r, "direct curl")
            self._record("direct", run, r.seconds, r.size, None)
        except Exception as e:
            self._fail("direct", run, e)

        warm(self.body)
        try:
            w = ProcWatch({"mitmdump": self.plain.proc.pid})
            r = curl(url, proxy=self.plain.proxy, timeout=t)
            self._check_size(r, "plain mitmdump")
            self._record("plain", run, r.seconds, r.size, w)
        except Exception as e:
            self._fail("plain", run, e)

        if self.bg is None:
            return
        if self.bg.proc.poll() is not None:
            print(f"  bgfetch mitmdump has died (exit {self.bg.proc.returncode})\n{self.bg.logs()}", flush=True)
            for key in ("bgfetch_fetch", "bgfetch_serve_proxy", "bgfetch_serve_direct"):
                self.data[key]["errors"].append(f"run {run}: bgfetch mitmdump died (exit {self.bg.proc.returncode})")
            return
        fetch_id = f"bench-{run}"
        run_url = f"{url}?run={run}"
        warm(self.body)
        try:
            before = self.nginx.requests_seen()
            w = ProcWatch(self.bg.pids())
            secs, reg = background_fetch(self.bg.proxy, self.bg.api_port, run_url, fetch_id, self.size, timeout=t)
            self._record("bgfetch_fetch", run, secs, self.size, w, origin_requests=self.nginx.requests_seen() - before)
        except Exception as e:
            self._fail("bgfetch_fetch", run, e)
            for key in ("bgfetch_serve_proxy", "bgfetch_serve_direct"):
                self.data[key]["errors"].append(f"run {run}: not measured, the background fetch failed")
            return

        stored = [p for p in (self.db, Path(f"{self.db}-wal")) if p.exists()]
        self.last_stored = []
        for key, proxy, target in (
            ("bgfetch_serve_proxy", self.bg.proxy, run_url),
            ("bgfetch_serve_direct", None, f"http://{LOOPBACK}:{self.bg.api_port}/api/fetches/{fetch_id}/records/0/body"),
        ):
            warm(*stored)
            try:
                before = self.nginx.requests_seen()
                w = ProcWatch(self.bg.pids())
                r = curl(target, proxy=proxy, timeout=t)
                self._check_size(r, self.data[key]["name"])
                self._record(key, run, r.seconds, r.size, w, origin_requests=self.nginx.requests_seen() - before)
                self.last_stored.append((key, proxy, target))
            except Exception as e:
                self._fail(key, run, e)

    def verify(self) -> None:
        """Untimed: the stored body a client gets (last run) is byte-identical to the origin's file."""
        for key, proxy, target in getattr(self, "last_stored", []):
            digest, n = curl_sha256(target, proxy=proxy, timeout=self.args.timeout)
            ok = digest == self.sha256 and n == self.size
            self.data[key]["sha256_ok"] = ok
            print(f"  {self.data[key]['name']:<42} sha256 {'matches' if ok else f'DIFFERS ({n} bytes)'}", flush=True)

    # ------------------------------------------------------------------ results

    def summary(self) -> dict:
        plain_mbps = median([r["mbps"] for r in self.data["plain"]["runs"]])
        scenarios = []
        for key, _ in SCENARIOS:
            sc = self.data[key]
            if key.startswith("bgfetch") and self.bg_skip:
                sc["skipped"] = self.bg_skip
            elif not sc["runs"]:
                sc["skipped"] = "no run succeeded: " + (sc["errors"][-1] if sc["errors"] else "?")
            else:
                sc["mbps"] = median([r["mbps"] for r in sc["runs"]])
                sc["seconds"] = median([r["seconds"] for r in sc["runs"]])
                sc["ratio"] = sc["mbps"] / plain_mbps if plain_mbps else None
                for proc in ("mitmdump", "store"):
                    vals = [r["procs"][proc] for r in sc["runs"] if proc in r["procs"]]
                    rss = [v["peak_rss_mb"] for v in vals if v["peak_rss_mb"] is not None]
                    sc[f"rss_{proc}_mb"] = max(rss) if rss else None  # worst run, not median
                    sc[f"cpu_{proc}_pct"] = median([v["cpu_pct"] for v in vals])
                origin = [r["origin_requests"] for r in sc["runs"] if "origin_requests" in r]
                sc["origin_requests"] = sum(origin) if origin else None
                if len(sc["runs"]) < self.args.runs:
                    sc["note"] = f"only {len(sc['runs'])} of {self.args.runs} runs succeeded"
            sc["targets"] = report.evaluate(sc)
            scenarios.append(sc)
        return {
            "started": self.started,
            "size": self.size,
            "runs": self.args.runs,
            "machine": self.machine,
            "commands": {
                "plain": shlex.join(self.plain.cmd) if self.plain else None,
                "bgfetch": shlex.join(self.bg.cmd) if self.bg else None,
                "curl": "curl -s -o /dev/null -w '%{size_download} %{time_total} %{http_code}' [-x PROXY] URL",
            },
            "scenarios": scenarios,
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="bgfetch-bench-"))
    runner = Runner(args, tmp)
    runner.started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    print(f"bgfetch bench: body {human_size(args.size)}, {args.runs} runs, temp dir {tmp}", flush=True)
    try:
        runner.setup()
        print("machine: " + report.machine_line(runner.machine), flush=True)
        for run in range(1, args.runs + 1):
            runner.run(run)
        if runner.bg is not None:
            print("checking the stored body (untimed)", flush=True)
            runner.verify()
        result = runner.summary()
    except BenchError as e:
        print(f"\nbench stopped: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\nbench interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        runner.teardown()
        if args.keep_temp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("machine: " + report.machine_line(result["machine"]))
    print(report.header_line(result))
    print()
    print(report.text_table(result))
    verdicts = report.verdict_lines(result)
    if verdicts:
        print("\ntargets (issue 3: background fetch ≥ 0.7× plain, serving stored ≥ 0.9× plain, RSS < 150 MB):")
        for v in verdicts:
            print("  " + v)
    for sc in result["scenarios"]:
        for err in sc.get("errors", []):
            print(f"  error in {sc['name']}: {err}")
        if sc.get("note"):
            print(f"  note on {sc['name']}: {sc['note']}")
    paths = report.write(result, args.results)
    print("\nwritten: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
