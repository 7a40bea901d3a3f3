"""`python -m bench.soak`: many background fetches through a real proxy while the origin cuts a third of them.

Starts the misbehaving test origin (harness/origin.py) and `mitmdump -s addon.py` (harness/proxy.py)
on loopback, registers `--count` fetches of assorted sizes (log-uniform between `--min` and
`--max`) with `respond=accepted`, and lets the origin cut a random third of the responses once
each, somewhere in the body. When every registration is done it stops the origin, reads every
body back through the proxy and checks its SHA-256. It prints what succeeded, what was corrupt,
and the bytes the origin sent beyond the bodies' sizes (re-downloaded after cuts) as a ratio of
the total; exit status 1 when any fetch failed or was corrupt, or the ratio is above `--target`.
With `--kills N`, mitmproxy is also killed with SIGKILL N times during the run (a second apart)
and started again on the same database.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness.origin import Origin, parse_size
from harness.proxy import Proxy

KiB = 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="registrations (default 200)")
    parser.add_argument("--concurrency", type=int, default=4, help="bgfetch_concurrency (default 4)")
    parser.add_argument("--min", type=parse_size, default=10 * KiB, help="smallest body (default 10KiB)")
    parser.add_argument("--max", type=parse_size, default=8 << 20, help="largest body (default 8MiB)")
    parser.add_argument("--cut", type=float, default=1 / 3, help="share of responses cut once (default 1/3)")
    parser.add_argument("--seed", type=int, default=4, help="random seed, for a repeatable run")
    parser.add_argument("--target", type=float, default=0.01, help="most re-downloaded share allowed (default 0.01)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed for every fetch to finish")
    parser.add_argument("--kills", type=int, default=0, help="kill -9 mitmproxy this many times, a second apart")
    parser.add_argument("--throttle", type=parse_size, default=None, help="origin bytes per second per response")
    args = parser.parse_args(argv)
    if args.count < 1 or args.concurrency < 1 or not 0 < args.min <= args.max or not 0 <= args.cut <= 1:
        parser.error("need count >= 1, concurrency >= 1, 0 < min <= max and 0 <= cut <= 1")
    return args


def plan(args: argparse.Namespace, origin: Origin) -> dict[str, int]:
    """Add the files to the origin and arm the cuts; returns {path: size}."""
    rng = random.Random(args.seed)
    cut = set(rng.sample(range(args.count), round(args.count * args.cut)))
    sizes = {}
    for n in range(args.count):
        path = f"/soak/{n:04d}.bin"
        size = int(math.exp(rng.uniform(math.log(args.min), math.log(args.max))))
        origin.add(path, size=size)
        origin.behave(path, throttle=args.throttle)
        if n in cut:
            origin.behave(path, cut_after=rng.randint(size // 10, size * 9 // 10), cuts=1)
        sizes[path] = size
    return sizes


def register(proxy: Proxy, origin: Origin, sizes: dict[str, int]) -> None:
    with proxy.client() as client:
        for n, path in enumerate(sizes):
            response = client.get(origin.url(path), headers={"Background-Fetch": f'id="soak-{n}", respond=accepted'})
            if response.status_code != 202:
                raise SystemExit(f"registering {path}: {response.status_code} {response.text}")


def wait_all_done(proxy: Proxy, timeout: float, kills: int) -> int:
    """Wait for every fetch to finish, killing mitmproxy (and restarting it) up to `kills`
    times on the way, a second apart; returns how many kills there were."""
    deadline = time.monotonic() + timeout
    next_kill, killed = time.monotonic() + 1, 0
    while active := proxy.api("GET", "/api/fetches").json()["ids"]:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(active)} fetches still active after {timeout:.0f} s: {active[:5]} ...")
        if killed < kills and time.monotonic() > next_kill:
            proxy.kill()
            proxy.start()
            next_kill, killed = time.monotonic() + 1, killed + 1
        time.sleep(0.2)
    return killed


def served_sha256(client: httpx.Client, url: str) -> str:
    digest = hashlib.sha256()
    with client.stream("GET", url) as response:
        for data in response.iter_raw():
            digest.update(data)
    return digest.hexdigest()


def check(proxy: Proxy, origin: Origin, sizes: dict[str, int]) -> tuple[list[str], list[str]]:
    """(failed registrations, corrupt bodies), read back with the origin down."""
    failed = [
        f"soak-{n}" for n in range(len(sizes))
        if proxy.registration(f"soak-{n}")["result"] != "success"
    ]
    expected = {path: origin.sha256(path) for path in sizes}
    urls = {path: origin.url(path) for path in sizes}
    origin.stop()
    with proxy.client() as client:
        corrupt = [path for path in sizes if served_sha256(client, urls[path]) != expected[path]]
    return failed, corrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bgfetch-soak-") as workdir:
        origin = Origin().start()
        proxy = Proxy(Path(workdir), f"bgfetch_concurrency={args.concurrency}")
        try:
            sizes = plan(args, origin)
            armed = sum(1 for path in sizes if origin.behaviour(path).cut_after is not None)
            proxy.start()
            began = time.monotonic()
            register(proxy, origin, sizes)
            killed = wait_all_done(proxy, args.timeout, args.kills)
            elapsed = time.monotonic() - began
            total, sent = sum(sizes.values()), origin.body_bytes_sent()
            resumes = sum(1 for r in origin.requests if r.headers.get("Range"))
            failed, corrupt = check(proxy, origin, sizes)
        finally:
            proxy.stop()
            origin.stop()
    ratio = (sent - total) / total
    print(f"registrations        {len(sizes)} ({min(sizes.values()):,} to {max(sizes.values()):,} bytes), concurrency {args.concurrency}")
    print(f"responses cut        {armed} armed; mitmproxy killed {killed} times; {resumes} resumes with Range")
    print(f"succeeded            {len(sizes) - len(failed)} / {len(sizes)}   corrupt: {len(corrupt)}")
    print(f"body bytes           {total:,}; the origin sent {sent:,}")
    print(f"re-downloaded        {sent - total:,} bytes = {ratio:.4%} of the total (target <= {args.target:.2%})")
    print(f"time                 {elapsed:.1f} s, {total / elapsed / 1e6:.1f} MB/s")
    for name in failed + corrupt:
        print("  problem:", name)
    return 0 if not failed and not corrupt and ratio <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
