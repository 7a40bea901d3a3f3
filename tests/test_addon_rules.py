"""Rules through the addon: OptionsError on a bad file (one line from a real mitmdump, which stops
before it listens), a matched request stored and served offline by a real proxy, and hot reload
of the file (a bad edit keeps the rules in force)."""


import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

import addon

GOOD = """rules:
  - name: isos
    url: "http://127.0.0.1:*/*.iso"
    respond: accepted
"""


def test_bad_rules_file_stops_start_up_naming_file_rule_and_field(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text('rules:\n  - name: big\n    url: "http://x/*"\n    download-total: 2XB\n')
    fetch = addon.BackgroundFetch()
    with taddons.context(fetch) as tctx:
        with pytest.raises(exceptions.OptionsError) as raised:
            tctx.configure(fetch, bgfetch_rules=str(path))
        message = str(raised.value)
        assert str(path) in message and '"big"' in message and "download-total" in message


def test_a_bad_rules_file_stops_mitmdump_with_one_line_and_no_traceback(make_proxy, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text('rules:\n  - name: isos\n    url: "*://*.iso"\n  - name: wheels\n    url: "python/*.whl"\n')
    proxy = make_proxy(f"bgfetch_rules={path}").spawn()
    assert proxy.proc.wait(30) == 1
    said = [line for line in proxy.log.read_text().splitlines() if "Loading script" not in line]
    assert said == [f'bgfetch: {path}, rule "wheels", field "url" (line 5): a glob without a scheme matches the path,'
                    ' which starts with /: write "/python/*.whl", "*/python/*.whl", or one on the full URL such as'
                    ' "*://python/*.whl"'], said  # no traceback, and it never listened


def test_a_failed_reload_keeps_the_rules_in_force(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    fetch = addon.BackgroundFetch()
    with taddons.context(fetch) as tctx:
        tctx.configure(fetch, bgfetch_rules=str(path))
        assert fetch.rules.names == ["isos"]
        bad = tmp_path / "bad.yaml"
        bad.write_text("rules:\n  - name: x\n    flter: '~d a'\n")
        with pytest.raises(exceptions.OptionsError):
            tctx.configure(fetch, bgfetch_rules=str(bad))
        assert fetch.rules.names == ["isos"]


def test_a_rule_match_is_stored_and_served_offline(origin, make_proxy, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    proxy = make_proxy(f"bgfetch_rules={path}").start()
    origin.add("/disc.iso", size=512 * 1024)
    with proxy.client() as client:
        accepted = client.get(origin.url("/disc.iso"))
        assert accepted.status_code == 202
        reg_id = accepted.json()["id"]
        proxy.wait_for(reg_id, result="success")
        again = client.get(origin.url("/disc.iso"))  # the same stable id: served, not fetched again
        assert again.status_code == 200 and again.content == origin.data("/disc.iso")
        assert origin.count("/disc.iso") == 1
        origin.stop()
        offline = client.get(origin.url("/disc.iso"))
        assert offline.content == origin.data("/disc.iso")
        plain = client.get(origin.url("/other.bin"))  # no rule, nothing stored: to the origin (down)
        assert plain.status_code == 502


def test_rules_file_reloads_on_edit_and_survives_a_bad_edit(origin, make_proxy, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    proxy = make_proxy(f"bgfetch_rules={path}").start()
    origin.add("/film.mp4", size=1000)
    with proxy.client() as client:
        assert client.get(origin.url("/film.mp4")).status_code == 200
        assert proxy.api("GET", "/api/fetches?all=1").json()["ids"] == []

        path.write_text(GOOD + '  - name: films\n    url: "*://*.mp4"\n    id: "film"\n')
        proxy.wait_for_log("isos, films", 15)
        assert client.get(origin.url("/film.mp4")).status_code == 200
        proxy.wait_for("film", result="success")

        path.write_text("rules:\n  - name: broken\n    url: 5\n")
        proxy.wait_for_log("previous rules stay in force", 15)
        origin.add("/disc.iso", size=100)
        assert client.get(origin.url("/disc.iso")).status_code == 202


def test_a_url_stored_under_a_header_id_is_served_not_fetched_again_for_a_rule(origin, make_proxy, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text('rules:\n  - name: bins\n    url: "*.bin"\n    id: "rule:{path}"\n')
    proxy = make_proxy(f"bgfetch_rules={path}").start()
    origin.add("/pkg.bin", size=300 * 1024)
    with proxy.client() as client:
        assert client.get(origin.url("/pkg.bin"), headers={"Background-Fetch": 'id="mine"'}).status_code == 200
        proxy.wait_for("mine", result="success")
        origin.stop()
        for asked in ({}, {"Background-Fetch": "?1"}):  # the rule matches; a bare header names no id
            served = client.get(origin.url("/pkg.bin"), headers=asked)
            assert served.status_code == 200 and served.content == origin.data("/pkg.bin"), served.text
        assert origin.count("/pkg.bin") == 1
        assert proxy.api("GET", "/api/fetches?all=1").json()["ids"] == ["mine"]  # no second fetch, no rule:/pkg.bin
        named = client.get(origin.url("/pkg.bin"), headers={"Background-Fetch": 'id="other"'})
        assert named.status_code == 503 and named.json()["registration"]["id"] == "other"  # it asks for what it names
