"""Fixtures: a misbehaving origin and a real proxy with the addon, both on loopback."""

import pytest

from harness.origin import Origin
from harness.proxy import Proxy


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
