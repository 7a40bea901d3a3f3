"""vocabulary.py: a leaf that imports nothing of bgfetch, and the one source of what the rules,
the header, the API and the lifecycle agree on (the same value is refused the same way)."""

import ast
import re
from pathlib import Path

import pytest

import vocabulary
from rules import HeaderError, make_spec, parse_header
from vocabulary import SPEC_CHECKS as CHECKS
from store.engine import lifecycle
from store.web import openapi, validate

URL = "https://example.com/a.bin"


def test_it_is_a_leaf_of_the_standard_library():
    tree = ast.parse((Path(__file__).resolve().parent.parent / "vocabulary.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and imported <= {"base64", "hashlib", "json", "re", "collections", "decimal"}


@pytest.mark.parametrize("field, key, api, value", [
    ("id", "id", "id", ".."),
    ("id", "id", "id", "x" * (vocabulary.MAX_ID + 1)),
    ("title", "title", "title", "t" * (vocabulary.MAX_TITLE + 1)),
    ("integrity", "integrity", "requests[0].integrity", "sha256-short"),
    ("download_total", "download-total", "downloadTotal", vocabulary.MAX_BYTES + 1),
    ("download_total", "download-total", "downloadTotal", -1),
])
def test_a_value_is_refused_alike_by_the_spec_the_header_and_the_api(field, key, api, value):
    with pytest.raises(ValueError) as shared:
        CHECKS[field](value)
    reason = str(shared.value)
    with pytest.raises(ValueError, match=re.escape(f"field {field} {reason}")):
        make_spec("GET", URL, {field: value})
    if key != "download-total" or value < 10**15:  # the header's integers have at most 15 digits
        header_value = f"{key}={value}" if isinstance(value, int) else f'{key}="{value}"'
        with pytest.raises(HeaderError) as header:
            parse_header(header_value)
        assert header.value.reason.startswith(reason)
    body = {"id": "x", "requests": [URL]}
    if api == "requests[0].integrity":
        body["requests"] = [{"url": URL, "integrity": value}]
    else:
        body[api] = value
    with pytest.raises(validate.Invalid) as refused:
        validate.fetch_body(body)
    assert refused.value.field == api and str(refused.value).startswith(f"{api} {reason}")


def test_the_states_results_and_failure_reasons_are_the_lifecycles_and_the_openapis():
    assert lifecycle.ACTIVE is vocabulary.ACTIVE and lifecycle.FAILURE_REASONS is vocabulary.FAILURE_REASONS
    assert set(vocabulary.ACTIVE) == set(vocabulary.STATES) - {"done"}
    schema = openapi.REGISTRATION["properties"]
    assert schema["state"]["enum"] == list(vocabulary.STATES)
    assert schema["result"]["enum"] == list(vocabulary.RESULTS)
    assert schema["failureReason"]["enum"] == ["", *vocabulary.FAILURE_REASONS]
    assert {lifecycle.outcome("fail", reason)[1] for reason in vocabulary.FAILURE_REASONS} == set(vocabulary.FAILURE_REASONS)


def test_the_credential_key_ties_a_response_to_its_credentials_whatever_their_case_or_order():
    assert vocabulary.credential_key([("Accept", "*/*")]) == ""
    one = vocabulary.credential_key([("Authorization", "Bearer a"), ("Cookie", "c=1")])
    assert one == vocabulary.credential_key([("cookie", "c=1"), ("AUTHORIZATION", "Bearer a"), ("Accept", "x")])
    assert one != vocabulary.credential_key([("Authorization", "Bearer b"), ("Cookie", "c=1")])
