"""Tests of rules.config and rules.spec: the YAML rules file, matching, and the fetch spec."""

import base64
import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from rules import FetchSpec, RulesError, RuleSet, load_file, make_spec, parse_size
from store.web.problems import Problem
from store.web.proxied import parse_spec

EXAMPLE = Path(__file__).parent.parent / "rules.example.yaml"
DIGEST = "sha256-" + base64.b64encode(hashlib.sha256(b"body").digest()).decode()


def load(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    return load_file(str(path))


def error(tmp_path: Path, text: str) -> str:
    """The RulesError message for text, with the file called rules.yaml."""
    with pytest.raises(RulesError) as info:
        load(tmp_path, text)
    return str(info.value).replace(str(tmp_path / "rules.yaml"), "rules.yaml")


def flow(url: str):
    made = tflow.tflow()
    made.request.url = url
    return made


# loading


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "rules: []\n", "rules:\n"])
def test_empty_files_are_empty_rule_sets(tmp_path, text):
    rules = load(tmp_path, text)
    assert len(rules) == 0
    assert rules.names == []
    assert rules.match("GET", "https://example.com/a.iso") is None


def test_every_field(tmp_path):
    rules = load(
        tmp_path,
        f"""\
        rules:
          - name: podcasts
            url: "https://cdn.example.com/podcasts/*.mp3"
            methods: [get, Head]
            id: "{{host}}{{path}}"
            title: "{{filename}}"
            download-total: 2GB
            respond: accepted
            integrity: "{DIGEST}"
            revalidate: always
        """,
    )
    assert len(rules) == 1
    assert rules.names == ["podcasts"]
    assert rules.match("HEAD", "https://cdn.example.com/podcasts/ep%205.mp3?t=1") is None
    assert rules.match("head", "https://cdn.example.com/podcasts/ep%205.mp3") == {
        "id": "cdn.example.com/podcasts/ep%205.mp3",
        "title": "ep 5.mp3",
        "download_total": 2_000_000_000,
        "respond": "accepted",
        "integrity": DIGEST,
        "revalidate": "always",
        "rule": "podcasts",
    }


def test_the_example_file_loads_and_matches():
    rules = load_file(str(EXAMPLE))
    assert rules.names == ["iso-images", "wheels", "python-index", "videos", "debian-pool"]
    iso = "https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/debian-13.0.0-amd64-netinst.iso"
    assert rules.match("GET", iso)["rule"] == "iso-images"
    assert rules.match("GET", "https://videos.example.com/talk.mp4")["rule"] == "videos"
    wheel = "https://files.pythonhosted.org/packages/b7/ce/six-1.17.0-py2.py3-none-any.whl"
    assert rules.match("GET", wheel)["rule"] == "wheels"
    for page in ("https://pypi.org/simple/six/", "http://127.0.0.1:3141/simple/", "https://h/simple/six/?format=json"):
        assert rules.match("GET", page)["rule"] == "python-index", page
    assert rules.match("GET", "https://pypi.org/project/six/") is None
    deb = "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"
    assert rules.match("GET", deb, flow(deb))["title"] == "hello_2.10-3_amd64.deb"
    release = "http://deb.debian.org/debian/dists/trixie/Release"
    assert rules.match("GET", release, flow(release)) is None


# matching


def test_glob_matches_the_full_url(tmp_path):
    rules = load(tmp_path, 'rules: [{name: iso, url: "https://*/*.iso"}]')
    assert rules.match("GET", "https://example.com/images/a.iso") == {"rule": "iso"}
    assert rules.match("GET", "http://example.com/images/a.iso") is None
    assert rules.match("GET", "https://example.com/images/a.iso?x=1") is None
    assert rules.match("GET", "https://example.com/images/a.ISO") is None


def test_a_glob_without_a_scheme_matches_the_path(tmp_path):
    rules = load(tmp_path, 'rules: [{name: wheels, url: "*.whl"}, {name: debs, url: "*/pool/*.deb"},'
                           ' {name: index, url: "/simple/*"}]')
    assert rules.match("GET", "https://files.example/packages/ab/cd/six-1.16-py3-none-any.whl")["rule"] == "wheels"
    assert rules.match("GET", "http://127.0.0.1:8000/six.whl?sig=1")["rule"] == "wheels"  # the path: no query
    assert rules.match("GET", "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10_amd64.deb")["rule"] == "debs"
    assert rules.match("GET", "https://pypi.org/simple/six/")["rule"] == "index"
    assert rules.match("GET", "https://pypi.org/simple") is None
    assert rules.match("GET", "https://example.whl/") is None  # the host is not the path
    assert rules.match("GET", "https://example.com/a.whl.txt") is None


def test_filter_matches_the_flow(tmp_path):
    rules = load(tmp_path, r"""rules: [{name: big, filter: '~d example.com & ~u "\.iso$"'}]""")
    url = "https://example.com/a.iso"
    assert rules.match("GET", url, flow(url)) == {"rule": "big"}
    assert rules.match("GET", "https://example.org/a.iso", flow("https://example.org/a.iso")) is None
    assert rules.match("GET", url) is None


def test_methods_default_to_get(tmp_path):
    rules = load(tmp_path, 'rules: [{name: iso, url: "*://*.iso"}]')
    assert rules.match("GET", "https://h/a.iso") is not None
    assert rules.match("get", "https://h/a.iso") is not None
    assert rules.match("HEAD", "https://h/a.iso") is None
    assert rules.match("POST", "https://h/a.iso") is None


def test_methods_are_upper_cased(tmp_path):
    rules = load(tmp_path, 'rules: [{name: up, url: "*://h/*", methods: [post, " put "]}]')
    assert rules.match("POST", "https://h/x") is not None
    assert rules.match("PUT", "https://h/x") is not None
    assert rules.match("GET", "https://h/x") is None


def test_first_match_wins(tmp_path):
    rules = load(
        tmp_path,
        """\
        rules:
          - {name: one, url: "*://h/special.iso", title: first}
          - {name: two, url: "*://*.iso", title: second}
        """,
    )
    assert rules.match("GET", "https://h/special.iso")["rule"] == "one"
    assert rules.match("GET", "https://h/other.iso") == {"title": "second", "rule": "two"}


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "https://Example.com:8443/a/b%20c.iso?q=1",
            "example.com|/a/b%20c.iso|b c.iso|https://Example.com:8443/a/b%20c.iso?q=1",
        ),
        ("https://example.com/", "example.com|/|example.com|https://example.com/"),
        ("https://example.com/dir/", "example.com|/dir/|dir|https://example.com/dir/"),
    ],
)
def test_templates_expand(tmp_path, url, expected):
    rules = load(tmp_path, 'rules: [{name: t, url: "*://*", title: "{host}|{path}|{filename}|{url}"}]')
    assert rules.match("GET", url)["title"] == expected


def test_template_braces_can_be_escaped(tmp_path):
    rules = load(tmp_path, 'rules: [{name: t, url: "*://*", id: "{{x}}-{filename}"}]')
    assert rules.match("GET", "https://h/a.iso")["id"] == "{x}-a.iso"


def test_an_id_that_cannot_be_an_id_is_replaced_by_a_stable_one(tmp_path):
    rules = load(tmp_path, 'rules: [{name: t, url: "*://*", id: "{url}", title: "{url}"}]')
    url = "https://h/" + "x" * 2000
    fields = rules.match("GET", url)
    assert fields["id"].startswith("bgf-") and len(fields["id"]) == 28
    assert rules.match("GET", url)["id"] == fields["id"]
    assert fields["title"] == url[:1024]
    assert rules.match("GET", "https://h/a%0Ab")["id"] == "https://h/a%0Ab"


def test_an_id_with_a_control_character_is_replaced(tmp_path):
    rules = load(tmp_path, 'rules: [{name: t, url: "*://*", id: "{filename}"}]')
    assert rules.match("GET", "https://h/a%0Ab")["id"].startswith("bgf-")
    assert rules.match("GET", "https://h/%C3%A9t%C3%A9.mp3")["id"] == "été.mp3"


@pytest.mark.parametrize(
    "size, expected",
    [
        ("62914560", 62914560),
        (62914560, 62914560),
        ("512B", 512),
        ("1KB", 1000),
        ("1 kb", 1000),
        ("2MB", 2_000_000),
        ("2GB", 2_000_000_000),
        ("1TB", 10**12),
        ("1KiB", 1024),
        ("5 MiB", 5 * 2**20),
        ("1.5GiB", 3 * 2**29),
        ("2TiB", 2 * 2**40),
    ],
)
def test_sizes_with_units(tmp_path, size, expected):
    rules = load(tmp_path, f"rules: [{{name: s, url: '*://*', download-total: {json.dumps(size)}}}]")
    assert rules.match("GET", "https://h/a")["download_total"] == expected
    assert parse_size(str(size)) == expected


# errors: each names the file, the rule, the field and the line


def test_size_error(tmp_path):
    message = error(
        tmp_path,
        """\
        rules:
          - name: ok
            url: "*://*.iso"
          - name: podcasts
            url: "*://*.mp3"
            title: "{filename}"
            download-total: 2XB
        """,
    )
    assert message == (
        'rules.yaml, rule "podcasts", field "download-total" (line 7): "2XB" is not a size; '
        "use bytes or a number with B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
    )


@pytest.mark.parametrize(
    "value, reason",
    [
        ("0", "must be a positive integer of bytes, got 0"),
        ("0B", 'must be a positive integer of bytes, got "0B"'),
        ("-5", "must be a positive integer of bytes, got -5"),
        ("1.5", "must be a positive integer of bytes, got 1.5"),
        ("true", "must be a positive integer of bytes, got true"),
        ("-5MB", '"-5MB" is not a size'),
        ("5 XiB", '"5 XiB" is not a size'),
    ],
)
def test_bad_sizes(tmp_path, value, reason):
    message = error(tmp_path, f"rules:\n  - name: s\n    url: '*://*'\n    download-total: {value}\n")
    assert message.startswith(f'rules.yaml, rule "s", field "download-total" (line 4): {reason}')


@pytest.mark.parametrize(
    "rule, message",
    [
        (
            "url: '*://*'",
            'rules.yaml, rule #2 (line 4): needs the field "name"',
        ),
        (
            "name: ''\n    url: '*://*'",
            'rules.yaml, rule #2, field "name" (line 4): must be a non-empty string, got ""',
        ),
        (
            "name: 7\n    url: '*://*'",
            'rules.yaml, rule #2, field "name" (line 4): must be a non-empty string, got 7',
        ),
        (
            "name: a\n    url: '*://*'",
            'rules.yaml, rule "a", field "name" (line 4): another rule (line 2) has this name; names must be unique',
        ),
        (
            "name: b\n    url: '*://*'\n    titel: x",
            'rules.yaml, rule "b", field "titel" (line 6): is not a rule field; the fields are name, url, filter, '
            'methods, id, title, download-total, respond, integrity, revalidate, segments; did you mean "title"?',
        ),
        (
            "name: b",
            "rules.yaml, rule \"b\" (line 4): needs a url (a glob on the full URL or its path) or a filter (a mitmproxy"
            " filter expression)",
        ),
        (
            "name: b\n    url: '*://*'\n    filter: '~a'",
            'rules.yaml, rule "b", field "filter" (line 6): and "url" are both given; a rule takes exactly one of them',
        ),
        (
            "name: b\n    url: example.com/*.iso",
            'rules.yaml, rule "b", field "url" (line 5): a glob without a scheme matches the path, which starts with'
            ' /: write "/example.com/*.iso", "*/example.com/*.iso", or one on the full URL such as'
            ' "*://example.com/*.iso"',
        ),
        (
            "name: b\n    url: ''",
            'rules.yaml, rule "b", field "url" (line 5): must be a glob such as "https://host/path/*.iso" (the full'
            ' URL) or "*.whl", "*/pool/*.deb" (the path), got ""',
        ),
        (
            "name: b\n    filter: '~x nonsense'",
            "rules.yaml, rule \"b\", field \"filter\" (line 5): Invalid filter expression: '~x nonsense'; "
            "see mitmproxy's filter expressions (~d, ~u, ~m, &, |, !)",
        ),
        (
            "name: b\n    filter: ''",
            "rules.yaml, rule \"b\", field \"filter\" (line 5): Empty filter expression; "
            "see mitmproxy's filter expressions (~d, ~u, ~m, &, |, !)",
        ),
        (
            "name: b\n    filter: 5",
            'rules.yaml, rule "b", field "filter" (line 5): must be a mitmproxy filter expression such as '
            '"~d example.com", got 5',
        ),
        (
            "name: b\n    url: '*://*'\n    methods: GET",
            'rules.yaml, rule "b", field "methods" (line 6): must be a list of HTTP methods such as [GET, HEAD], '
            'got "GET"',
        ),
        (
            "name: b\n    url: '*://*'\n    methods: []",
            'rules.yaml, rule "b", field "methods" (line 6): must be a list of HTTP methods such as [GET, HEAD], '
            "got []",
        ),
        (
            "name: b\n    url: '*://*'\n    id: '{foo}'",
            'rules.yaml, rule "b", field "id" (line 6): {foo} is not a template field; '
            "use {host}, {path}, {filename}, {url}",
        ),
        (
            "name: b\n    url: '*://*'\n    title: '{host!r}'",
            'rules.yaml, rule "b", field "title" (line 6): {host!r} is not a template field; '
            "use {host}, {path}, {filename}, {url}",
        ),
        (
            "name: b\n    url: '*://*'\n    title: '{}'",
            'rules.yaml, rule "b", field "title" (line 6): {} is not a template field; '
            "use {host}, {path}, {filename}, {url}",
        ),
        (
            "name: b\n    url: '*://*'\n    id: '{host'",
            'rules.yaml, rule "b", field "id" (line 6): expected \'}\' before end of string in "{host"; '
            "write a literal { or } as {{ or }}",
        ),
        (
            "name: b\n    url: '*://*'\n    title: 'a } b'",
            'rules.yaml, rule "b", field "title" (line 6): Single \'}\' encountered in format string in "a } b"; '
            "write a literal { or } as {{ or }}",
        ),
        (
            "name: b\n    url: '*://*'\n    id: ''",
            'rules.yaml, rule "b", field "id" (line 6): must be a non-empty template such as "{filename}", got ""',
        ),
        (
            "name: b\n    url: '*://*'\n    respond: later",
            'rules.yaml, rule "b", field "respond" (line 6): must be stream or accepted, got "later"',
        ),
        (
            "name: b\n    url: '*://*'\n    integrity: md5-abc",
            'rules.yaml, rule "b", field "integrity" (line 6): must be "sha256-" followed by the base64 of a '
            'SHA-256 digest (44 characters), got "md5-abc"',
        ),
        (
            "name: b\n    url: '*://*'\n    revalidate: sometimes",
            'rules.yaml, rule "b", field "revalidate" (line 6): must be never, cache-control or always, got "sometimes"',
        ),
    ],
)
def test_rule_errors(tmp_path, rule, message):
    assert error(tmp_path, f"rules:\n  - name: a\n    url: '*://*'\n  - {rule}\n") == message


def test_a_rule_that_is_not_a_mapping(tmp_path):
    assert error(tmp_path, "rules:\n  - name: a\n    url: '*://*'\n  - just a string\n") == (
        "rules.yaml, rule #2 (line 4): must be a mapping with a name and a url or a filter"
    )


def test_rules_must_be_a_list(tmp_path):
    assert error(tmp_path, "# rules\nrules: {name: a}\n") == 'rules.yaml (line 2): "rules" must be a list of rules'


def test_unknown_top_level_key(tmp_path):
    assert error(tmp_path, "rules: []\nrule: []\n") == (
        'rules.yaml (line 2): unknown top-level key "rule"; the only key is rules'
    )


def test_top_level_must_be_a_mapping(tmp_path):
    assert error(tmp_path, "- name: a\n") == "rules.yaml: must be a mapping with a list of rules under rules:"


def test_yaml_syntax_error_names_the_line(tmp_path):
    message = error(tmp_path, "rules:\n  - name: a\n    url: '*://*'\n   bad: indent\n")
    assert message.startswith("rules.yaml (line 4): not valid YAML: ")


def test_duplicate_keys_are_refused(tmp_path):
    message = error(tmp_path, "rules:\n  - name: a\n    url: '*://*.iso'\n    url: '*://*.mp4'\n")
    assert message == 'rules.yaml (line 4): not valid YAML: duplicate key "url"'


def test_merge_keys_may_override(tmp_path):
    rules = load(
        tmp_path,
        """\
        rules:
          - &base {name: a, url: "*://*.iso", respond: accepted}
          - <<: *base
            name: b
        """,
    )
    assert rules.names == ["a", "b"]


def test_a_missing_file(tmp_path):
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_file(str(tmp_path / "absent.yaml"))


# the fetch spec


def test_make_spec_defaults():
    spec = make_spec("GET", "https://example.com/files/big%20file.iso?x=1")
    digest = hashlib.sha256(b"GET https://example.com/files/big%20file.iso?x=1").hexdigest()
    assert spec == FetchSpec(id="bgf-" + digest[:24], title="big file.iso", respond="stream")
    assert spec.download_total is None and spec.integrity is None
    assert make_spec("GET", "https://example.com/files/big%20file.iso?x=1") == spec
    assert make_spec("HEAD", "https://example.com/files/big%20file.iso?x=1").id != spec.id
    assert make_spec("GET", "https://example.com/").title == "example.com"


def test_make_spec_layers_later_win():
    rule = {"id": "from-rule", "title": "Rule", "download_total": 5, "respond": "accepted", "rule": "r"}
    header = {"title": "Header", "download_total": 10}
    assert make_spec("GET", "https://h/a", rule, header) == FetchSpec(
        id="from-rule", title="Header", download_total=10, respond="accepted"
    )


def test_fetch_spec_json_round_trip():
    spec = FetchSpec(id="ep-5", title="Épisode 5", download_total=7, respond="accepted", integrity=DIGEST)
    text = spec.to_json()
    assert text.isascii() and "\n" not in text and ", " not in text
    assert list(json.loads(text)) == ["id", "title", "download_total", "respond", "integrity", "revalidate", "segments"]
    assert FetchSpec(**json.loads(text)) == spec


@pytest.mark.parametrize("text", ["[]", '{"id": "x"}', '{"id": "x", "title": "", "extra": 1}', "nope"])
def test_the_store_refuses_what_is_not_a_spec(text):
    with pytest.raises(Problem) as refused:
        parse_spec(text)
    assert refused.value.status_code == 400 and refused.value.kind == "bad-handover"


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "", "title": ""},
        {"id": "x" * 257, "title": ""},
        {"id": "a\nb", "title": ""},
        {"id": "x", "title": "t" * 1025},
        {"id": "x", "title": "", "download_total": 0},
        {"id": "x", "title": "", "download_total": True},
        {"id": "x", "title": "", "respond": "later"},
        {"id": "x", "title": "", "integrity": "sha256-abc"},
    ],
)
def test_fetch_spec_is_always_valid(fields):
    with pytest.raises(ValueError, match="fetch spec field"):
        FetchSpec(**fields)


@pytest.mark.parametrize("dots", [".", ".."])
def test_an_id_that_is_a_path_step_is_refused_or_replaced(tmp_path, dots):
    with pytest.raises(ValueError, match=r'may not be "\." or "\.\."'):
        FetchSpec(id=dots, title="")
    rules = load(tmp_path, f'rules: [{{name: t, url: "*://*", id: "{dots}"}}]')
    assert rules.match("GET", "https://h/a")["id"].startswith("bgf-")
    assert FetchSpec(id="...", title="").id == "..."  # three dots name nothing in a path: an id


def test_make_spec_default_id_with_credentials():
    url = "https://example.com/inbox"
    credential = hashlib.sha256(b"alice").hexdigest()
    digest = hashlib.sha256(f"GET {url} {credential}".encode()).hexdigest()
    assert make_spec("GET", url, credential=credential).id == "bgf-" + digest[:24]
    assert make_spec("GET", url, credential="").id == make_spec("GET", url).id
