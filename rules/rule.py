"""One rule of a rules file: its fields checked one by one, and what it gives a request.

A problem is a RulesError naming the file, the rule, the field and its line.
"""

import difflib
import fnmatch
import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mitmproxy import flowfilter

from rules.spec import fit_id, fit_title, url_fields
from rules.yaml_lines import Mapping
from vocabulary import SPEC_CHECKS as CHECKS, parse_size

FIELDS = ("name", "url", "filter", "methods", "id", "title", "download-total", "respond", "integrity", "revalidate",
          "segments")
TEMPLATE_FIELDS = ("host", "path", "filename", "url")
GLOB_EXAMPLES = '"https://host/path/*.iso" (the full URL) or "*.whl", "*/pool/*.deb" (the path)'


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file, rule, field and line."""


@dataclass(frozen=True)
class Rule:
    """One checked rule: which requests it takes and the fetch fields it gives them."""

    name: str
    methods: frozenset[str]
    test: Callable[[str, object], bool]  # (url, flow) -> whether the rule takes the request
    fields: dict[str, object]  # fixed fields by python name
    templates: dict[str, str]  # "id" / "title" -> template over TEMPLATE_FIELDS

    def fields_for(self, url: str) -> dict[str, object]:
        """The fields this rule gives url, templates expanded, plus "rule": its name."""
        expanded = {}
        if self.templates:
            values = url_fields(url)
            expanded = {key: template.format(**values) for key, template in self.templates.items()}
        if "id" in expanded:
            expanded["id"] = fit_id(expanded["id"])
        if "title" in expanded:
            expanded["title"] = fit_title(expanded["title"])
        return {**self.fields, **expanded, "rule": self.name}


class RuleChecker:
    """One rule of the file while it is checked: knows how to name itself in an error."""

    def __init__(self, path: str, index: int, item: object, line: int) -> None:
        self.path = path
        self.item = item if isinstance(item, Mapping) else None
        self.line = line
        name = self.item.get("name") if self.item is not None else None
        self.label = f'rule "{name}"' if isinstance(name, str) and name else f"rule #{index}"

    def error(self, field: object, reason: str) -> RulesError:
        """A RulesError naming the file, this rule, the field and its line."""
        where = [self.path, self.label]
        line = self.line
        if field is not None:
            where.append(f'field "{field}"')
            line = self.item.lines.get(field, line)
        return RulesError(f"{', '.join(where)} (line {line}): {reason}")

    def check(self) -> Rule:
        """The checked Rule; RulesError at the first problem."""
        if self.item is None:
            raise self.error(None, "must be a mapping with a name and a url or a filter")
        for key in self.item:
            if key not in FIELDS:
                raise self.error(key, _unknown_field(str(key)))
        fixed = [key for key in FIXED if key in self.item]
        return Rule(
            name=self._field("name", _name),
            methods=self._field("methods", _methods, ["GET"]),
            test=self._test(),
            fields={key.replace("-", "_"): self._field(key, FIXED[key]) for key in fixed},
            templates={key: self._field(key, _template) for key in ("id", "title") if key in self.item},
        )

    def _field(self, key: str, read: Callable[[object], object], default: object = None) -> object:
        """The value of field key read by read(), default when absent; RulesError when invalid."""
        if key not in self.item:
            if default is None:
                raise self.error(None, f'needs the field "{key}"')
            value = default
        else:
            value = self.item[key]
        try:
            return read(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def _test(self) -> Callable[[str, object], bool]:
        """The test of exactly one of url / filter."""
        given = [key for key in ("url", "filter") if key in self.item]
        if not given:
            reason = "needs a url (a glob on the full URL or its path) or a filter (a mitmproxy filter expression)"
            raise self.error(None, reason)
        if len(given) > 1:
            raise self.error("filter", 'and "url" are both given; a rule takes exactly one of them')
        return self._field(given[0], _glob if given == ["url"] else _filter)


def _unknown_field(key: str) -> str:
    """Why an unknown rule field is refused, with the nearest known field when there is one."""
    guess = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f'; did you mean "{guess[0]}"?' if guess else ""
    return f"is not a rule field; the fields are {', '.join(FIELDS)}{hint}"


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {_shown(value)}")
    return value


def _methods(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m.strip() for m in value):
        raise ValueError(f"must be a list of HTTP methods such as [GET, HEAD], got {_shown(value)}")
    return frozenset(method.strip().upper() for method in value)


def _glob(value: object) -> Callable[[str, object], bool]:
    """A glob with a scheme matches the full URL, query included; one without, the URL's path
    (from its first /, no query)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a glob such as {GLOB_EXAMPLES}, got {_shown(value)}")
    pattern = re.compile(fnmatch.translate(value))
    if "://" in value:
        return lambda url, flow: pattern.match(url) is not None
    if not value.startswith(("/", "*", "?", "[")):
        raise ValueError(f"a glob without a scheme matches the path, which starts with /: write {_shown('/' + value)},"
                         f" {_shown('*/' + value)}, or one on the full URL such as {_shown('*://' + value)}")
    return lambda url, flow: pattern.match(urlsplit(url).path or "/") is not None


def _filter(value: object) -> Callable[[str, object], bool]:
    if not isinstance(value, str):
        example = '"~d example.com"'
        raise ValueError(f"must be a mitmproxy filter expression such as {example}, got {_shown(value)}")
    try:
        matches = flowfilter.parse(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; see mitmproxy's filter expressions (~d, ~u, ~m, &, |, !)") from None
    return lambda url, flow: flow is not None and bool(matches(flow))


def _template(value: object) -> str:
    fields = ", ".join(f"{{{field}}}" for field in TEMPLATE_FIELDS)
    if not isinstance(value, str) or not value:
        raise ValueError(f'must be a non-empty template such as "{{filename}}", got {_shown(value)}')
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(f"{exc} in {_shown(value)}; write a literal {{ or }} as {{{{ or }}}}") from None
    for _, field, spec, conversion in parts:
        if field is not None and (field not in TEMPLATE_FIELDS or spec or conversion):
            raise ValueError(f"{_placeholder(field, spec, conversion)} is not a template field; use {fields}")
    return value


def _placeholder(field: str, spec: str | None, conversion: str | None) -> str:
    """A replacement field as it was written."""
    return "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


def _download_total(value: object) -> int:
    size = parse_size(value) if isinstance(value, str) else value
    return _checked("download_total", size, value)


def _checked(name: str, value: object, written: object) -> object:
    """value when it passes the spec's check for name; ValueError quoting what was written."""
    try:
        CHECKS[name](value)
    except ValueError as exc:
        raise ValueError(f"{exc}, got {_shown(written)}") from None
    return value


def _shown(value: object) -> str:
    """A value as an error message quotes it, cut short when long."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


FIXED = {
    "download-total": _download_total,
    "respond": lambda value: _checked("respond", value, value),
    "integrity": lambda value: _checked("integrity", value, value),
    "revalidate": lambda value: _checked("revalidate", value, value),
    "segments": lambda value: _checked("segments", value, value),
}
