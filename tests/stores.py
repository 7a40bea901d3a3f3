"""Helpers of the tests that build a store's files directly or read them beside a running store."""

import os
import signal
import sqlite3

import httpx

from harness.poll import eventually
from harness.proxy import Proxy
from store.db import chunks, registrations, schema
from store.db.storage import NewRecord
from store.engine import lifecycle

MiB = 1 << 20


def stored(conn: sqlite3.Connection, name: str, size: int) -> None:
    """A successful registration `name` whose one record holds `size` bytes in 1 MiB chunks."""
    registrations.create(conn, {"id": name, "owner": "api"}, [NewRecord(url=f"http://a/{name}")], lambda *_: False)
    record = conn.execute("SELECT id FROM records WHERE registration_id = ?", [name]).fetchone()[0]
    conn.execute("UPDATE records SET status = 200, response_headers = '[]' WHERE id = ?", [record])
    for offset in range(0, size, MiB):
        chunks.append(conn, record, 0, offset, [bytes([offset // MiB % 256]) * min(MiB, size - offset)])
    conn.execute("UPDATE records SET complete = 1, size = stored WHERE id = ?", [record])
    for event in ("start", "succeed"):
        registrations.transition(conn, name, event, lifecycle.step)


def read_only(db, sql: str):
    """The first value of `sql` on a read-only connection beside the store."""
    conn = schema.connect(str(db), readonly=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def kill_store(proxy: Proxy, pid: int | None = None) -> None:
    """`kill -9` the proxy's store process (`pid`, or the one running now); return once the
    keeper has started it again and it answers."""
    os.kill(pid or proxy.store_pid(), signal.SIGKILL)
    eventually(lambda: answers(proxy), 30, what="the store started again")


def answers(proxy: Proxy) -> bool:
    """Whether the store answers on the proxy's listen port (it may be starting again)."""
    try:
        return proxy.api("GET", "/api/fetches").status_code == 200
    except httpx.HTTPError:
        return False
