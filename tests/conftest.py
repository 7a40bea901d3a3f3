"""Fixtures: a misbehaving origin and a real proxy with the addon, both on loopback; for the fleet,
a real PostgreSQL and a real S3-compatible object store."""

import pytest

from harness.origin import Origin
from harness.postgres import Postgres
from harness.proxy import Proxy
from harness.seaweed import SeaweedS3


@pytest.fixture
def origin():
    with Origin() as server:
        yield server


@pytest.fixture
def proxy_backing() -> dict:
    """Where the proxies of a test keep their store: SQLite (nothing to add). A module that runs
    its tests on a fleet's storage gives `db`, `env` and `options` (tests/test_fleet_single_node.py)."""
    return {}


def _backed_proxy(tmp_path, backing: dict, *options: str) -> Proxy:
    return Proxy(tmp_path, *backing.get("options", ()), *options, db=backing.get("db"), env=backing.get("env"))


@pytest.fixture
def proxy(tmp_path, proxy_backing):
    """A running proxy; `proxy.options` may be changed before `proxy.restart`-style use."""
    instance = _backed_proxy(tmp_path, proxy_backing)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def make_proxy(tmp_path, proxy_backing):
    """Build a proxy with extra `--set` options; every one made is stopped at the end."""
    made = []

    def make(*options: str) -> Proxy:
        made.append(_backed_proxy(tmp_path, proxy_backing, *options))
        return made[-1]

    yield make
    for instance in made:
        instance.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL (Debian's packages) for the session, started when a test first asks for it."""
    with Postgres() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server():
    """One SeaweedFS S3 gateway for the session, started when a test first asks for it."""
    with SeaweedS3() as server:
        yield server


@pytest.fixture
def fleet_db(postgres_server) -> str:
    """The URL of a new, empty PostgreSQL database of this test's own."""
    return postgres_server.create_database()


@pytest.fixture
def fleet_bucket(s3_server) -> str:
    """A new, empty bucket of this test's own (each costs the server a volume: most tests take `fleet_bodies`)."""
    return s3_server.create_bucket()


@pytest.fixture
def fleet_bodies(s3_server) -> str:
    """A `bgfetch_bodies` of this test's own: a prefix of the bucket the tests share."""
    return s3_server.new_bodies()
