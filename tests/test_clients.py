"""Real clients through a real mitmdump with the addon: curl over HTTP/1.1 and HTTP/2 on intercepted
HTTPS (trusting mitmproxy's CA from the test's confdir), wget -c, aria2c -x4 and Chromium (playwright,
Debian's chromium, `--proxy-bypass-list=<-loopback>`) downloading a file. Each gets the origin's
bytes exactly, the origin sees one transfer, and what is stored is served with the origin down."""

import hashlib
import os
import subprocess

import pytest
from playwright.sync_api import sync_playwright

from harness.origin import Origin
from tests import browser

MiB = 1 << 20
NO_PROXY_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """A client's command line, without proxy variables of the environment; it must succeed."""
    done = subprocess.run(command, capture_output=True, timeout=timeout, env=NO_PROXY_ENV)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    return done


@pytest.fixture
def tls_origin():
    with Origin(tls=True) as server:
        yield server


@pytest.mark.parametrize("version, shown", [("--http1.1", "1.1"), ("--http2", "2")])
def test_curl_over_intercepted_https_http1_and_http2(tls_origin, make_proxy, tmp_path, version, shown):
    tls_origin.add("/s.bin", size=3 * MiB)
    proxy = make_proxy(f"ssl_verify_upstream_trusted_ca={tls_origin.cert_path}").start()
    url, out = tls_origin.url("/s.bin"), tmp_path / "s.bin"
    curl = ["curl", "-sS", version, "--cacert", str(proxy.confdir / "mitmproxy-ca-cert.pem"), "-x", proxy.url,
            "-w", "%{http_version} %{http_code}", "-o", str(out)]
    assert run(*curl, "-H", 'Background-Fetch: id="s"', url).stdout.decode() == f"{shown} 200"
    assert sha256(out.read_bytes()) == tls_origin.sha256("/s.bin")
    proxy.wait_for("s", result="success")
    tls_origin.stop()  # served from the store over the same intercepted HTTPS, Range too
    assert run(*curl, url).stdout.decode() == f"{shown} 200"
    assert sha256(out.read_bytes()) == tls_origin.sha256("/s.bin")
    assert run(*curl, "-r", "1000-1999", url).stdout.decode() == f"{shown} 206"
    assert out.read_bytes() == tls_origin.data("/s.bin")[1000:2000]
    assert tls_origin.count("/s.bin") == 1


def test_wget_c_completes_a_partial_file_from_the_store(origin, proxy, tmp_path):
    origin.add("/w.iso", size=4 * MiB)
    proxy.background(origin.url("/w.iso"), 'id="w"')
    proxy.wait_for("w", result="success")
    origin.stop()
    out = tmp_path / "w.iso"
    out.write_bytes(origin.data("/w.iso")[: MiB + 123])  # what an interrupted download left
    said = run("wget", "-c", "-e", "use_proxy=yes", "-e", f"http_proxy={proxy.url}", "-O", str(out),
               origin.url("/w.iso")).stderr.decode()
    assert "206 Partial Content" in said, said
    assert sha256(out.read_bytes()) == origin.sha256("/w.iso")
    assert origin.count("/w.iso") == 1


def test_aria2c_x4_reads_a_fetch_in_four_ranges_while_it_downloads(origin, proxy, tmp_path):
    origin.add("/a.bin", size=8 * MiB)
    origin.behave("/a.bin", throttle=8 * MiB)
    proxy.background(origin.url("/a.bin"), 'id="a"')
    run("aria2c", "-x4", "-s4", "-k1M", "--file-allocation=none", "--all-proxy", proxy.url, "-d", str(tmp_path),
        "-o", "a.bin", origin.url("/a.bin"))
    assert sha256((tmp_path / "a.bin").read_bytes()) == origin.sha256("/a.bin")
    assert origin.count("/a.bin") == 1  # the store's transfer only: every range came from the store
    log = proxy.wait_for_log(f"GET {origin.url('/a.bin')}")
    assert log.count(f"GET {origin.url('/a.bin')}") >= 3, log  # the accepted request and the ranges
    proxy.wait_for("a", result="success")


def test_chromium_downloads_a_file_that_bgfetch_stores_then_serves_offline(tls_origin, make_proxy, tmp_path):
    tls_origin.add("/page.html", data=b'<a id="get" href="/film.mkv" download>film</a>', content_type="text/html")
    tls_origin.add("/film.mkv", size=3 * MiB)
    rules = tmp_path / "rules.yaml"
    rules.write_text('rules:\n  - name: films\n    url: "*.mkv"\n    id: "film"\n  - name: pages\n    url: "*.html"\n')
    proxy = make_proxy(f"ssl_verify_upstream_trusted_ca={tls_origin.cert_path}", f"bgfetch_rules={rules}").start()
    args = [*browser.ARGS, f"--proxy-server={proxy.url}", "--proxy-bypass-list=<-loopback>"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(browser.CHROMIUM), args=args, headless=True)
        try:
            for turn in ("online", "offline"):  # offline: the page and the film from the store
                context = chromium.new_context(ignore_https_errors=True, accept_downloads=True)
                try:
                    page = context.new_page()
                    page.goto(tls_origin.url("/page.html"))
                    with page.expect_download() as download:
                        page.click("#get")
                    saved = tmp_path / f"{turn}.mkv"
                    download.value.save_as(saved)
                    assert sha256(saved.read_bytes()) == tls_origin.sha256("/film.mkv"), turn
                finally:
                    context.close()
                proxy.wait_for("film", result="success")
                tls_origin.stop()
        finally:
            chromium.close()
    assert tls_origin.count("/film.mkv") == 1
