"""Flows as mitmproxy shows them (addon.py's responseheaders): mitmdump's log and mitmweb's flow list,
read through mitmweb's own HTTP API, name the URL the client asked for, never the store's internal
port or the secret it takes; mitmweb marks and comments bgfetch's answer (background, joined,
stored); the commands' calls to the store are no flows and no log lines."""

from harness.poll import eventually
from harness.proxy import WebProxy

MiB = 1 << 20


def shown_url(flow: dict) -> str:
    request = flow["request"]
    return f"{request['scheme']}://{request['pretty_host']}:{request['port']}{request['path']}"


def bgfetch_fields(message: dict) -> list:
    return [name for name, _ in message["headers"] if name.lower().startswith("x-bgfetch-")]


def test_mitmweb_lists_the_clients_url_and_marks_the_background_joined_and_stored_answers(origin, tmp_path):
    origin.add("/ep.mp3", size=2 * MiB)
    origin.behave("/ep.mp3", throttle=2 * MiB)
    url = origin.url("/ep.mp3")
    web = WebProxy(tmp_path).start()
    try:
        with web.client() as client:
            started = client.get(url, headers={"Background-Fetch": 'id="ep", respond=accepted'})
            assert started.status_code == 202
            web.wait_until("ep", lambda r: 0 < r["downloaded"] < 2 * MiB)
            joined = client.get(url)  # while it downloads: read as it is written
            web.wait_for("ep", result="success")
            stored = client.get(url)
            api = client.get("http://bgfetch.internal/api/fetches?all=1")
            assert client.get(url, headers={"Background-Fetch": "id=5"}).status_code == 400  # answered by the addon
        assert joined.content == stored.content == origin.data("/ep.mp3")
        assert api.json() == {"ids": ["ep"]}
        assert web.command("bgfetch.list") == ["ep  success  2.0m  ep.mp3"]
        assert not any(name.lower().startswith("x-bgfetch-") for name in stored.headers)

        flows = web.flows()
        assert [(shown_url(f), f["response"]["status_code"], f["marked"], f["comment"]) for f in flows] == [
            (url, 202, "📥", "bgfetch: started a background fetch (ep)"),
            (url, 200, "🔗", "bgfetch: joined a background fetch (ep)"),
            (url, 200, "💾", "bgfetch: served from the store (ep)"),
            ("http://bgfetch.internal:80/api/fetches?all=1", 200, "", ""),
            (url, 400, "", ""),
        ]  # and no flow of the command's call to the store
        assert all(not bgfetch_fields(f["request"]) and not bgfetch_fields(f["response"]) for f in flows)
        assert ["Background-Fetch", 'id="ep", respond=accepted'] in flows[0]["request"]["headers"]  # as it was sent
        assert ["Background-Fetch", "id=5"] in flows[-1]["request"]["headers"]
        log = web.log.read_text()
        assert "/api/fetches" not in log and "/_bgfetch/" not in log, log
    finally:
        web.stop()


def test_mitmdumps_log_shows_the_clients_url(origin, proxy):
    origin.add("/a.bin", size=64 * 1024)
    url = origin.url("/a.bin")
    with proxy.client() as client:
        assert client.get(url, headers={"Background-Fetch": 'id="a"'}).status_code == 200
        proxy.wait_for("a", result="success")
        assert client.get(url).status_code == 200
    flow_line = f": GET {url}\n"  # mitmdump's line of a flow (the store's own request is logged as httpx's)
    log = eventually(proxy.log.read_text, 20, until=lambda log: log.count(flow_line) >= 2, interval=0.1,
                     what="both flows in mitmdump's log", explain=lambda log: log[-2000:])
    assert log.count(flow_line) == 2 and "/_bgfetch/" not in log, log
