"""`python -m bench`: one run of every scenario of issue 8 side by side (nginx, curl, plain mitmdump, Squid,
bgfetch), medians of several runs, ratios taken in the same run, PASS/MISS per target, a table and a plot."""

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

from . import fleet, report, targets
from .deletion import Deletion
from .load import Load
from .scale import Scale
from .segments import Segmented
from .sustained import Sustained
from .tls import Tls
from .measure import MB, human_size, machine, parse_size
from .plot import plot
from .rig import Rig
from .servers import BenchError, find_binary
from .sweep import SizeRuns

REPO = Path(__file__).resolve().parent.parent
PROFILES = {  # --quick: the same scenarios on smaller bodies and fewer registrations (~2 minutes)
    "full": {"sizes": "64MiB,256MiB,1GiB,4GiB", "size": "1GiB", "small_requests": 2000, "clients": 100,
             "readers_size": "100MiB", "registrations": 1000, "lag_size": "256MiB", "scale": 100_000,
             "delete_size": "4GiB", "sustained_size": "1GiB", "segmented_size": "1GiB"},
    "quick": {"sizes": "16MiB,64MiB,256MiB", "size": "256MiB", "small_requests": 2000, "clients": 100,
              "readers_size": "16MiB", "registrations": 200, "lag_size": "64MiB", "scale": 20_000,
             "delete_size": "1GiB", "sustained_size": "256MiB", "segmented_size": "256MiB"},
}
PARTS = ("sweep", "load", "scale", "delete", "sustained", "tls", "segmented", "fleet")
ROUNDS = 5  # of the sustained part


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sizes(text: str) -> list[int]:
    return sorted({_size(t) for t in text.split(",") if t.strip()})


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller bodies (16, 64, 256 MiB; targets at 256 MiB), 16 MiB for the 100 readers, "
                        "200 registrations: about 2 minutes")
    p.add_argument("--sizes", type=_sizes, help="body sizes of the sweep (default 64MiB,256MiB,1GiB,4GiB)")
    p.add_argument("--size", type=_size, help="body size of the targets' rows and of Squid (default 1GiB; "
                                              "added to --sizes)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per scenario; medians are reported (default 3)")
    p.add_argument("--only", choices=PARTS, help="only the throughput sweep, only the load on one store, or only "
                                                 "a fleet of two nodes on PostgreSQL and SeaweedFS (bench/fleet.py)")
    p.add_argument("--clients", type=int, help="readers of one stored body at once (default 100)")
    p.add_argument("--registrations", type=int, help="registrations queued at once (default 1000, quick 200)")
    p.add_argument("--delete-size", type=_size, help="the body deleted in the delete part (default 4GiB, quick 1GiB)")
    p.add_argument("--scale", type=int, help="registrations in the store of the scale part (default 100000, quick 20000)")
    p.add_argument("--no-bgfetch", action="store_true", help="only direct curl, plain mitmdump and Squid")
    p.add_argument("--no-squid", action="store_true", help="without Squid (its targets are then n/a)")
    p.add_argument("--repo", type=Path, default=REPO, help="the bgfetch checkout whose addon.py is measured")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results",
                   help="where the JSON and Markdown results go (default bench/results/)")
    p.add_argument("--plot", type=Path, help="the PNG (default docs/bench.png; with --quick bench/results/latest.png)")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, configs)")
    a = p.parse_args(argv)
    a.profile = "quick" if a.quick else "full"
    preset = PROFILES[a.profile]
    a.sizes = a.sizes or _sizes(preset["sizes"])
    a.size = a.size or _size(preset["size"])
    a.sizes = sorted(set(a.sizes) | {a.size})
    a.clients = a.clients or preset["clients"]
    a.registrations = a.registrations or preset["registrations"]
    a.scale = a.scale or preset["scale"]
    a.delete_size = a.delete_size or _size(preset["delete_size"])
    a.sustained_size, a.segmented_size = _size(preset["sustained_size"]), _size(preset["segmented_size"])
    a.plot = a.plot or (a.results / "latest.png" if a.quick else REPO / "docs" / "bench.png")
    a.load = {"small_requests": preset["small_requests"], "clients": a.clients,
              "readers_size": _size(preset["readers_size"]), "registrations": a.registrations,
              "lag_size": _size(preset["lag_size"])}
    if a.runs < 1 or a.clients < 1 or a.registrations < 1 or a.scale < 1:
        p.error("--runs, --clients, --registrations and --scale must be at least 1")
    return a


def disk_needed(a: argparse.Namespace) -> int:
    """Bytes the run writes at most at once: the largest body and its store, Squid's cache, the load's store."""
    if a.only == "fleet":  # the body, and the fetches of it in the object store
        return (a.runs + 2) * a.size + 1_000_000_000
    sweep = 2 * max(a.sizes) + int(1.3 * a.runs * a.size) if a.only in (None, "sweep") else 0
    load = a.load["readers_size"] * 2 + 4 * a.runs * a.load["lag_size"] * 2 if a.only in (None, "load") else 0
    delete = 3 * a.delete_size if a.only in (None, "delete") else 0
    sustained = 3 * ROUNDS * a.sustained_size if a.only in (None, "sustained") else 0
    return max(sweep, load, delete, sustained, 3 * a.size) + 1_000_000_000


def _sigterm(signum, frame):  # turn SIGTERM into an exception so that every finally runs
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, tmp: Path, result: dict) -> None:
    squid_mb = None if args.no_squid else int(1.3 * args.runs * args.size / MB) + 512
    rig = Rig(tmp, args.repo, bgfetch=not args.no_bgfetch, squid_cache_mb=squid_mb)
    try:
        rig.start()
        result["machine"] = machine(rig.nginx_bin, rig.squid.binary if rig.squid else find_binary("squid"))
        result["skipped"] = {"bgfetch": rig.bg_skip, "squid": rig.squid_skip}
        print("machine: " + report.machine_line(result["machine"]), flush=True)
        if args.only in (None, "sweep"):
            for size in args.sizes:
                target = size == args.size
                result["throughput"].append(SizeRuns(rig, size, args.runs, with_squid=target, verify=target).measure())
        if args.only in (None, "load"):
            print("load on one store", flush=True)
            result["load"] = Load(rig, args.runs, **args.load).measure()
        if args.only in (None, "scale"):
            print(f"a store of {args.scale:,} registrations", flush=True)
            result["scale"] = Scale(rig, args.runs, count=args.scale, small_requests=args.load["small_requests"]).measure()
        if args.only in (None, "delete"):
            print(f"DELETE of a stored {human_size(args.delete_size)} body", flush=True)
            result["delete"] = Deletion(rig, args.runs, args.delete_size).measure()
        if args.only in (None, "sustained"):
            print(f"{ROUNDS} rounds of: background fetch of {human_size(args.sustained_size)}, then served", flush=True)
            result["sustained"] = Sustained(rig, args.runs, args.sustained_size, ROUNDS).measure()
        if args.only in (None, "tls"):
            print(f"HTTPS, {human_size(args.size)}", flush=True)
            result["tls"] = Tls(rig, args.runs, args.size).measure()
        if args.only in (None, "segmented"):
            print(f"an origin with limit_rate per connection, {human_size(args.segmented_size)}", flush=True)
            result["segmented"] = Segmented(rig, args.runs, args.segmented_size).measure()
        if rig.bg is not None:
            result["commands"]["bgfetch"] = shlex.join(rig.bg.cmd)
        result["commands"]["plain"] = shlex.join(rig.plain.cmd)
    finally:
        rig.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="bgfetch-bench-"))
    free, need = shutil.disk_usage(tmp).free, disk_needed(args)
    print(f"bgfetch bench ({args.profile}): bodies {', '.join(human_size(s) for s in args.sizes)}, targets at "
          f"{human_size(args.size)}, {args.runs} runs; temp dir {tmp} ({free / 1e9:.0f} GB free, needs ~{need / 1e9:.0f})",
          flush=True)
    started = time.monotonic()
    result = {"started": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(), "profile": args.profile,
              "runs": args.runs, "sizes": args.sizes, "target_size": args.size,
              "counts": {**args.load, "scale": args.scale, "delete_size": args.delete_size,
                         "sustained_size": args.sustained_size, "rounds": ROUNDS, "segmented_size": args.segmented_size},
              "throughput": [], "load": {}, "scale": {}, "delete": {}, "sustained": {}, "tls": {}, "segmented": {},
              "commands": {
                  "curl": "curl -s -o /dev/null -w '%{size_download} %{time_total} %{http_code}' [-x PROXY] URL"}}
    try:
        if free < need:
            raise BenchError(f"{tmp} has {free / 1e9:.1f} GB free, the run needs about {need / 1e9:.1f} GB "
                             "(smaller --sizes, or TMPDIR elsewhere)")
        if args.only == "fleet":
            return _fleet(args, tmp)
        run(args, tmp, result)
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
        if args.keep_temp:
            print(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    result["seconds"] = round(time.monotonic() - started)
    result["targets"] = targets.evaluate(result)
    print(f"\n{report.markdown(result)}")
    print("targets:")
    for line in report.verdict_lines(result):
        print("  " + line)
    paths = report.write(result, args.results)
    picture = plot(result, args.plot)
    print(f"\nwritten in {result['seconds']} s: " + ", ".join(str(p) for p in [*paths, *([picture] if picture else [])]))
    return 0


def _fleet(args: argparse.Namespace, tmp: Path) -> int:
    """`--only fleet`: its own table and verdicts, written to fleet.{json,md} beside the others."""
    result = fleet.FleetRuns(tmp, args.size, args.runs).measure()
    print(f"\n{fleet.markdown(result)}")
    paths = fleet.write(result, args.results)
    print("written: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
