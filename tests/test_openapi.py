"""The OpenAPI document: it names every route, and schemathesis finds no 500 or broken schema."""

import re
import subprocess
import sys
from pathlib import Path

from store.web import api, openapi

ST = Path(sys.executable).parent / "st"
CONFIG = Path(__file__).parent / "schemathesis.toml"


def test_every_route_and_method_is_described():
    document = openapi.document("bgfetch.internal")
    described = set()
    for path, item in document["paths"].items():
        described |= {(path, method.upper()) for method in item if method != "parameters"}
    served = set()
    for pattern, handler in api.ROUTES:
        names = iter(re.findall(r"\{(\w+)\}", next(p for p in document["paths"] if _matches(pattern, p))))
        path = re.sub(r"\([^)]*\)", lambda _: "{" + next(names) + "}", pattern)
        served |= {(path, method) for method in handler.methods()}
    assert served == described


def _matches(pattern: str, path: str) -> bool:
    return re.fullmatch(pattern, re.sub(r"\{\w+\}", "7", path)) is not None


def test_schemathesis_finds_no_server_error_and_no_schema_break(make_proxy, tmp_path):
    # Every fetch it makes goes to a dead upstream proxy: nothing leaves 127.0.0.1.
    proxy = make_proxy("bgfetch_token=st-token", "mode=upstream:http://127.0.0.1:1", "bgfetch_concurrency=64").start()
    run = subprocess.run(
        [str(ST), "--config-file", str(CONFIG), "--no-color", "run", proxy.api_url("/api/openapi.json"),
         "--url", proxy.api_url(""), "-H", "Authorization: Bearer st-token",
         "--exclude-path", "/api/events", "--output-truncate", "true"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,  # its cache stays out of the tree
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", run.stdout), run.stdout[-3000:]
