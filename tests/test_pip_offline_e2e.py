"""End to end: pip through a real mitmdump with the example rules (rules.example.yaml: wheels and
the index's /simple/ pages) downloads a wheel from a package index on the test origin, has the
index page revalidated when the index is up, and downloads it again with the index down."""

import base64
import hashlib
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

EXAMPLE_RULES = Path(__file__).resolve().parent.parent / "rules.example.yaml"
WHEEL = "tinypkg-1.0-py3-none-any.whl"
MAX_AGE = 8  # seconds the index page is fresh (PyPI's: 600)


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def tiny_wheel() -> bytes:
    """A valid wheel of the project tinypkg 1.0, made here."""
    files = {
        "tinypkg/__init__.py": b"ANSWER = 42\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: bgfetch-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join([*(record_line(n, d) for n, d in files.items()), "tinypkg-1.0.dist-info/RECORD,,"]) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in {**files, "tinypkg-1.0.dist-info/RECORD": record.encode()}.items():
            wheel.writestr(name, data)
    return buffer.getvalue()


def pip_download(proxy, origin, into: Path, *options: str) -> subprocess.CompletedProcess:
    """`pip download tinypkg` from the origin's index through the proxy, pip's own cache off."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("PIP_")}
    return subprocess.run(
        [sys.executable, "-m", "pip", "download", "tinypkg", "--no-deps", "--no-cache-dir", "--isolated",
         "--disable-pip-version-check", "--index-url", origin.url("/simple/"), "--proxy", proxy.url,
         "--retries", "0", "--timeout", "20", "-d", str(into), *options],
        capture_output=True, text=True, timeout=120, env=env,
    )


@pytest.fixture
def index(origin):
    """A PEP 503 simple index of one project on the origin, served as PyPI serves it."""
    wheel = tiny_wheel()
    origin.add(f"/files/{WHEEL}", data=wheel, content_type="application/octet-stream")
    page = f'<!DOCTYPE html><html><body><a href="/files/{WHEEL}#sha256={hashlib.sha256(wheel).hexdigest()}">{WHEEL}</a></body></html>'
    origin.add("/simple/tinypkg/", data=page.encode(), content_type="text/html",
               headers={"Cache-Control": f"max-age={MAX_AGE}, public", "Vary": "Accept-Encoding, Accept"})
    return wheel


def test_pip_downloads_a_wheel_again_with_the_index_down(origin, make_proxy, index, tmp_path):
    proxy = make_proxy(f"bgfetch_rules={EXAMPLE_RULES}").start()
    first = pip_download(proxy, origin, tmp_path / "first")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "first" / WHEEL).read_bytes() == index
    assert origin.count(f"/files/{WHEEL}") == 1 and origin.count("/simple/tinypkg/") == 1

    fresh = pip_download(proxy, origin, tmp_path / "fresh")  # within the page's max-age: from the store
    assert fresh.returncode == 0 and origin.count("/simple/tinypkg/") == 1, fresh.stdout + fresh.stderr
    confirmed = time.monotonic()  # the 304 makes the stored page fresh for MAX_AGE from now
    refreshed = pip_download(proxy, origin, tmp_path / "refreshed", "--refresh-package", "tinypkg")
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
    time.sleep(max(0.0, confirmed + MAX_AGE + 2 - time.monotonic()))  # and now stale by its max-age
    stale = pip_download(proxy, origin, tmp_path / "stale")
    assert stale.returncode == 0, stale.stdout + stale.stderr
    checks = [r for r in origin.requests if r.path == "/simple/tinypkg/"][1:]
    assert [r.headers.get("If-None-Match") for r in checks] == [origin.etag("/simple/tinypkg/")] * 2  # 304s
    assert origin.count(f"/files/{WHEEL}") == 1  # the wheel is fresh: from the store, unasked

    origin.stop()
    offline = pip_download(proxy, origin, tmp_path / "offline")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert (tmp_path / "offline" / WHEEL).read_bytes() == index
