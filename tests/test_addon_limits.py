"""The addon's bounds on what a proxy client sends, through a real mitmdump: a huge Background-Fetch
header is refused at once (431) without holding up anyone else, and a background fetch of a URL longer
than the API takes is refused (414), by header or by rule; plain requests are not bounded by either."""

import threading
import time

import httpx

from harness.poll import eventually

LONG = "/" + "u" * 9000  # over the 8192 characters a background fetch takes


def test_a_1_mb_header_gets_431_at_once_and_holds_up_no_other_client(origin, proxy):
    origin.add("/plain.txt", data=b"plain")
    origin.add("/x.bin", size=10)
    answers, latencies = [], []
    done = threading.Event()

    def huge_headers() -> None:
        with proxy.client() as client:
            for _ in range(5):
                started = time.monotonic()
                response = client.get(origin.url("/x.bin"), headers={"Background-Fetch": 'id="' + "x" * 1_000_000 + '"'})
                answers.append((response, time.monotonic() - started))
        done.set()

    def plain_request(client: httpx.Client) -> bool:
        """One plain request beside the attacker's; whether the attacker is done and five were made."""
        started = time.monotonic()
        assert client.get(origin.url("/plain.txt")).content == b"plain"
        latencies.append(time.monotonic() - started)
        return done.is_set() and len(latencies) >= 5

    attacker = threading.Thread(target=huge_headers)
    with proxy.client() as client:
        attacker.start()
        eventually(lambda: plain_request(client), 60, interval=0, what="the attacker's five requests answered",
                   explain=lambda _: f"{len(answers)} answered, {len(latencies)} plain requests made")
    attacker.join(30)
    assert len(answers) == 5
    for response, elapsed in answers:
        assert response.status_code == 431 and elapsed < 2.0
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["header"], problem["limit"]) == ("Background-Fetch", 4096)
    assert max(latencies) < 1.0, latencies
    assert origin.count("/x.bin") == 0


def test_a_background_fetch_of_a_url_over_8192_characters_gets_414_by_header_or_rule(origin, make_proxy, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text('rules:\n  - name: long\n    url: "http://127.0.0.1:*/uuu*"\n')
    proxy = make_proxy(f"bgfetch_rules={rules}").start()
    origin.add(LONG, data=b"long")
    origin.add("/fits" + LONG[:8000], data=b"fits")
    with proxy.client() as client:
        for headers in ({"Background-Fetch": "?1"}, {}):  # the header, then the rule
            refused = client.get(origin.url(LONG), headers=headers)
            assert refused.status_code == 414 and refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["limit"] == 8192 and str(len(origin.url(LONG))) in problem["detail"]
        assert origin.count(LONG) == 0
        accepted = client.get(origin.url("/fits" + LONG[:8000]), headers={"Background-Fetch": "respond=accepted"})
        assert accepted.status_code == 202
        rules.write_text("rules: []\n")
        plain = eventually(lambda: client.get(origin.url(LONG)), 15, until=lambda r: r.status_code == 200, interval=0.2,
                           what="the rule to be gone and the request passed through", explain=lambda r: r.text)
        assert plain.content == b"long"
    assert proxy.wait_for(accepted.json()["id"], result="success")
    assert httpx.get(proxy.api_url("/api/fetches?all=1")).json()["ids"] == [accepted.json()["id"]]
