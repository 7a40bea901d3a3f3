"""The YAML rules file: loading and checking it, and matching requests against its rules."""

import difflib
import fnmatch
import json
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import yaml
from mitmproxy import flowfilter

from rules.spec import CHECKS, fit_id, fit_title, url_fields

FIELDS = ("name", "url", "filter", "methods", "id", "title", "download-total", "respond", "integrity")
TEMPLATE_FIELDS = ("host", "path", "filename", "url")
UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
GLOB_EXAMPLE = "https://host/path/*.iso"
MERGE_TAG = "tag:yaml.org,2002:merge"
SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)


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


class RuleSet:
    """The rules of one file, in order; the first rule that takes a request wins."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules = tuple(rules)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def names(self) -> list[str]:
        """The rule names, in order."""
        return [rule.name for rule in self.rules]

    def match(self, method: str, url: str, flow: object = None) -> dict[str, object] | None:
        """The fields of the first rule that takes this request, or None."""
        method = method.upper()
        for rule in self.rules:
            if method in rule.methods and rule.test(url, flow):
                return rule.fields_for(url)
        return None


def parse_size(text: str) -> int:
    """The bytes in a size such as "62914560", "2GB" or "1.5 GiB"; ValueError when it is not one."""
    found = SIZE.fullmatch(text.strip())
    if not found:
        raise ValueError(
            f"{_shown(text)} is not a size; use bytes or a number with B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"
        )
    return int(Decimal(found[1]) * UNITS[(found[2] or "B").upper()])


def load_file(path: str) -> RuleSet:
    """The checked rules of a YAML rules file; RulesError naming what is wrong and where."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc}") from None
    document = _load_yaml(path, text)
    if document is None:
        return RuleSet([])
    if not isinstance(document, _Mapping):
        raise RulesError(f"{path}: must be a mapping with a list of rules under rules:")
    unknown = [key for key in document if key != "rules"]
    if unknown:
        line = document.lines.get(unknown[0], 1)
        raise RulesError(f'{path} (line {line}): unknown top-level key "{unknown[0]}"; the only key is rules')
    return RuleSet(_rules(path, document))


# YAML with line numbers


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key."""

    lines: dict


class _Sequence(list):
    """A YAML sequence that remembers the line of each item."""

    lines: list[int]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember line numbers, and that refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    written = [key_node for key_node, _ in node.value if key_node.tag != MERGE_TAG]
    mapping = _Mapping(loader.construct_mapping(node, deep=True))  # also merges "<<: *anchor" keys
    mapping.lines = {}
    for key_node in written:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping.lines:
            raise yaml.constructor.ConstructorError(
                problem=f'duplicate key "{key}"', problem_mark=key_node.start_mark
            )
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _Sequence:
    sequence = _Sequence(loader.construct_sequence(node, deep=True))
    sequence.lines = [item.start_mark.line + 1 for item in node.value]
    return sequence


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _load_yaml(path: str, text: str) -> object:
    """The YAML document in text; RulesError with the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1})" if mark else ""
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise RulesError(f"{path}{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from None


# rules


def _rules(path: str, document: _Mapping) -> list[Rule]:
    """The checked rules under the rules: key, names unique."""
    items = document.get("rules")
    if items is None:
        return []
    if not isinstance(items, _Sequence):
        raise RulesError(f'{path} (line {document.lines.get("rules", 1)}): "rules" must be a list of rules')
    rules, lines = [], {}
    for index, (item, line) in enumerate(zip(items, items.lines), start=1):
        checker = _Rule(path, index, item, line)
        rule = checker.check()
        if rule.name in lines:
            reason = f"another rule (line {lines[rule.name]}) has this name; names must be unique"
            raise checker.error("name", reason)
        lines[rule.name] = line
        rules.append(rule)
    return rules


class _Rule:
    """One rule of the file while it is checked: knows how to name itself in an error."""

    def __init__(self, path: str, index: int, item: object, line: int) -> None:
        self.path = path
        self.item = item if isinstance(item, _Mapping) else None
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
            reason = "needs a url (a glob on the full URL) or a filter (a mitmproxy filter expression)"
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
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(f"must be a glob on the full URL, such as {GLOB_EXAMPLE}, got {_shown(value)}")
    pattern = re.compile(fnmatch.translate(value))
    return lambda url, flow: pattern.match(url) is not None


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
}
