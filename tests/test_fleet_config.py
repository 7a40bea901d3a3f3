"""A fleet's configuration: bgfetch_db=postgresql://..., bgfetch_bodies=s3://...; what cannot be opened stops
start-up with one line naming it; migrations when several nodes start at once (store/db/locations.py,
store/db/postgres/schema.py, store/__main__.py, real PostgreSQL and SeaweedFS)."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addon import BackgroundFetch
from harness.proxy import Proxy, free_port
from store.db import locations
from store.db.postgres import schema

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("changed, message", [
    ({"bgfetch_bodies": "http://bucket/x"}, "bgfetch_bodies must be s3://bucket/prefix"),
    ({"bgfetch_bodies": "s3://UPPER/x"}, "bgfetch_bodies names a bucket S3 does not allow: 'UPPER'"),
    ({"bgfetch_bodies": "s3://bucket/x?endpoint=ftp://h"}, "endpoint must be an http or https URL"),
    ({"bgfetch_bodies": "s3://bucket/x?color=red"}, "has unknown parameters color"),
    ({"bgfetch_bodies": "s3://bucket/x"}, "bgfetch_bodies needs bgfetch_db=postgresql://"),
    ({"bgfetch_db": "postgresql://u@h:5432/db"}, "needs bgfetch_bodies=s3://"),
    ({"bgfetch_db": "postgresql://u:secret@h:5432/"}, "bgfetch_db must name a host and a database"),
])
def test_a_bad_fleet_option_is_refused_naming_it(changed, message):
    fetch = BackgroundFetch()
    with taddons.context(fetch) as tctx:
        with pytest.raises(exceptions.OptionsError) as refused:
            tctx.configure(fetch, **changed)
    assert message in str(refused.value)
    assert "secret" not in str(refused.value)


def test_a_fleet_is_configured_with_both_urls():
    fetch = BackgroundFetch()
    with taddons.context(fetch) as tctx:
        tctx.configure(fetch, bgfetch_db="postgresql://bgfetch@db.example:5432/bgfetch",
                       bgfetch_bodies="s3://bodies/fleet?endpoint=http://objects.example:8333&region=eu-west-1")
    parsed = locations.parse_bodies("s3://bodies/fleet/a?endpoint=http://objects.example:8333&region=eu-west-1")
    assert parsed == locations.Bodies("bodies", "fleet/a", "http://objects.example:8333", "eu-west-1")
    assert parsed.key("1/0/x") == "fleet/a/1/0/x"
    assert locations.without_password("postgresql://u:p%40ss@h:1/d") == ("postgresql://u@h:1/d", "p@ss")


def store_start(db: str, bodies: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "store", "--db", db, "--bodies", bodies], input=b'{"secret": "s"}\n',
        capture_output=True, cwd=ROOT, timeout=90, env={**os.environ, **env},
    )


def the_one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and done.stdout == b"", done.stderr.decode()
    lines = [line for line in done.stderr.decode().splitlines() if not line.startswith("INFO ")]
    assert len(lines) == 1, done.stderr.decode()
    return lines[0]


def test_an_unreachable_database_stops_the_store_with_one_line_naming_it(s3_server, fleet_bodies):
    db = f"postgresql://bgfetch@127.0.0.1:{free_port()}/fleet"
    line = the_one_line(store_start(db, fleet_bodies, s3_server.credentials))
    assert line.startswith(f"bgfetch_db {db}: cannot connect: ") and "refused" in line


def test_a_missing_bucket_stops_the_store_with_one_line_naming_it(fleet_db, s3_server):
    bodies = s3_server.bodies_url("no-such-bucket")
    line = the_one_line(store_start(fleet_db, bodies, s3_server.credentials))
    assert line == f"bgfetch_bodies s3://no-such-bucket/bodies at {s3_server.endpoint}: no such bucket"


def test_wrong_keys_stop_the_store_with_one_line_naming_the_bucket(fleet_db, s3_server, fleet_bodies):
    keys = {**s3_server.credentials, "AWS_SECRET_ACCESS_KEY": "wrong"}
    line = the_one_line(store_start(fleet_db, fleet_bodies, keys))
    assert line.startswith(f"bgfetch_bodies {locations.parse_bodies(fleet_bodies)}: access denied")


def test_an_unreachable_object_store_stops_the_store_with_one_line_naming_it(fleet_db):
    bodies = f"s3://bucket/bodies?endpoint=http://127.0.0.1:{free_port()}"
    line = the_one_line(store_start(fleet_db, bodies, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}))
    assert line.startswith(f"bgfetch_bodies {locations.parse_bodies(bodies)}: cannot reach it: ")


def test_a_bgfetch_schema_of_another_program_is_refused_and_left_alone(fleet_db, s3_server, fleet_bodies):
    with psycopg.connect(fleet_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bgfetch; CREATE TABLE bgfetch.theirs (n int)")
    line = the_one_line(store_start(fleet_db, fleet_bodies, s3_server.credentials))
    assert line == (f"{fleet_db} is not a bgfetch database: it has a schema 'bgfetch' that bgfetch did not make;"
                    " bgfetch left it unchanged")
    with psycopg.connect(fleet_db) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'bgfetch'")
        assert [name for (name,) in tables] == ["theirs"]


def test_nodes_that_start_at_once_migrate_once(fleet_db):
    async def one_node() -> list[str]:
        async with await psycopg.AsyncConnection.connect(fleet_db) as conn:
            return await schema.migrate(conn, fleet_db)

    async def three_at_once():
        return await asyncio.gather(one_node(), one_node(), one_node())

    applied = asyncio.run(three_at_once())
    assert sorted(applied, key=len) == [[], [], [name for name, _ in schema.MIGRATIONS]]
    assert asyncio.run(one_node()) == []
    with psycopg.connect(fleet_db) as conn:
        assert conn.execute("SELECT count(*) FROM bgfetch.migrations").fetchone() == (len(schema.MIGRATIONS),)


def test_mitmdump_stops_at_start_up_naming_the_database_it_cannot_reach(tmp_path, s3_server, fleet_bodies):
    db = f"postgresql://bgfetch:hidden-password@127.0.0.1:{free_port()}/fleet"
    proxy = Proxy(tmp_path, f"bgfetch_bodies={fleet_bodies}", db=db, env=s3_server.credentials)
    with pytest.raises(RuntimeError, match="mitmdump exited"):
        proxy.start()
    log = proxy.log.read_text()
    assert f"bgfetch_db {locations.redacted(db)}: cannot connect" in log
    assert "hidden-password" not in log
