"""The fleet's test servers (harness/postgres.py, harness/seaweed.py): they start, serve, restart, and leave nothing."""

import os
import tempfile
from pathlib import Path

import botocore.exceptions
import psycopg
import pytest

from harness.postgres import Postgres
from harness.seaweed import SeaweedS3


def test_each_test_gets_a_database_of_its_own(postgres_server):
    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE mine (n int)")
    with psycopg.connect(second) as conn:
        assert conn.execute("SELECT to_regclass('mine')").fetchone() == (None,)


def test_postgres_restarts_and_recovers_from_a_kill_on_its_port():
    server = Postgres()
    with server:
        url = server.create_database("kept")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE rows (n int)")
            conn.execute("INSERT INTO rows VALUES (1)")
        server.restart()
        server.kill()
        assert not server.running
        server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT n FROM rows").fetchall() == [(1,)]
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as postgres, in a directory it owns
            assert server.dir.stat().st_uid != 0
    assert not server.running
    assert not server.dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url(), connect_timeout=2)


def test_s3_serves_ranges_and_knows_its_keys(s3_server, fleet_bucket):
    client = s3_server.client()
    client.put_object(Bucket=fleet_bucket, Key="bodies/a", Body=b"0123456789")
    assert client.get_object(Bucket=fleet_bucket, Key="bodies/a", Range="bytes=2-4")["Body"].read() == b"234"
    assert s3_server.keys(fleet_bucket) == ["bodies/a"]
    assert s3_server.bodies_url(fleet_bucket) == f"s3://{fleet_bucket}/bodies?endpoint={s3_server.endpoint}"


def test_s3_refuses_other_keys(s3_server):
    client = s3_server.client()
    s3_server.secret_key, kept = "wrong", s3_server.secret_key
    try:
        with pytest.raises(botocore.exceptions.ClientError):
            s3_server.client().head_bucket(Bucket=s3_server.bucket)
    finally:
        s3_server.secret_key = kept
    client.head_bucket(Bucket=s3_server.bucket)
    assert s3_server.new_bodies() != s3_server.new_bodies()  # each test its own prefix of the shared bucket


def test_seaweed_stops_and_leaves_nothing():
    server = SeaweedS3()
    with server:
        pid = server.proc.pid
        ports = server.ports
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not server.dir.exists()
    left = [path.name for port in ports for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock")]
    assert left == []
