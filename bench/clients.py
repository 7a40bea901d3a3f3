"""`python -m bench.clients`: load made in a process of its own, so the bench's timing thread never waits on it.

    python -m bench.clients register PROXY URL_PREFIX ID_PREFIX COUNT [CONNECTIONS]

creates COUNT background fetches through the proxy, `GET URL_PREFIX<n>` with
`Background-Fetch: id="ID_PREFIX<n>", respond=accepted`, over CONNECTIONS keep-alive connections
(httpx), and prints one JSON line: {"statuses": {status: count}, "seconds": wall time, "errors": [...]}.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time

import httpx


async def register(proxy: str, url_prefix: str, id_prefix: str, count: int, connections: int) -> dict:
    statuses: collections.Counter = collections.Counter()
    errors: list[str] = []
    todo = iter(range(count))
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async with httpx.AsyncClient(proxy=proxy, limits=limits, timeout=60, trust_env=False) as client:
        async def worker() -> None:
            for n in todo:  # the workers share one iterator: each number is taken once
                try:
                    r = await client.get(f"{url_prefix}{n}",
                                         headers={"Background-Fetch": f'id="{id_prefix}{n}", respond=accepted'})
                    statuses[r.status_code] += 1
                except httpx.HTTPError as e:
                    errors.append(f"{n}: {type(e).__name__}: {e}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        seconds = time.perf_counter() - t0
    return {"statuses": dict(statuses), "seconds": seconds, "errors": errors[:10]}


def main(argv: list[str]) -> int:
    if len(argv) not in (5, 6) or argv[0] != "register":
        print(__doc__, file=sys.stderr)
        return 2
    _, proxy, url_prefix, id_prefix, count, *rest = argv
    result = asyncio.run(register(proxy, url_prefix, id_prefix, int(count), int(rest[0]) if rest else 4))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
