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
def proxy(tmp_path):
    """A running proxy; `proxy.options` may be changed before `proxy.restart`-style use."""
    instance = Proxy(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def make_proxy(tmp_path):
    """Build a proxy with extra `--set` options; every one made is stopped at the end."""
    made = []

    def make(*options: str) -> Proxy:
        made.append(Proxy(tmp_path, *options))
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
    """A new, empty bucket of this test's own."""
    return s3_server.create_bucket()
