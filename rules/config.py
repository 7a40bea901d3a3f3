"""The YAML rules file: loading it, and matching requests against its rules in order."""

import os
from collections.abc import Iterable
from pathlib import Path

from rules.rule import Rule, RuleChecker, RulesError
from rules.yaml_lines import Mapping, NotYaml, Sequence, load_yaml


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


class RulesFile:
    """The rules of the file in force, and whether the file changed since it was read."""

    def __init__(self) -> None:
        self.rules = RuleSet([])
        self.stamp: tuple | None = None

    def load(self, path: str) -> RuleSet:
        """The rules of `path` (none for ""), now in force; RulesError leaves those in force as they were."""
        stamp = _stamp(path) if path else None
        self.rules = load_file(path) if path else RuleSet([])
        self.stamp = stamp
        return self.rules

    def changed(self, path: str) -> bool:
        """Whether `path` was edited since it was read (or refused: `refused`)."""
        return bool(path) and _stamp(path) != self.stamp

    def refused(self, path: str) -> None:
        """A bad edit of `path`, refused: it is not read again until it changes again."""
        self.stamp = _stamp(path)


def _stamp(path: str) -> tuple | None:
    """What tells a file's edits apart: modification time and size (None if it is gone)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def load_file(path: str) -> RuleSet:
    """The checked rules of a YAML rules file; RulesError naming what is wrong and where."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc}") from None
    document = _document(path, text)
    if document is None:
        return RuleSet([])
    if not isinstance(document, Mapping):
        raise RulesError(f"{path}: must be a mapping with a list of rules under rules:")
    unknown = [key for key in document if key != "rules"]
    if unknown:
        line = document.lines.get(unknown[0], 1)
        raise RulesError(f'{path} (line {line}): unknown top-level key "{unknown[0]}"; the only key is rules')
    return RuleSet(_rules(path, document))


def _document(path: str, text: str) -> object:
    """The YAML document in text; RulesError with the line of a syntax error."""
    try:
        return load_yaml(text)
    except NotYaml as exc:
        where = f" (line {exc.line})" if exc.line else ""
        raise RulesError(f"{path}{where}: not valid YAML: {exc.problem}") from None


def _rules(path: str, document: Mapping) -> list[Rule]:
    """The checked rules under the rules: key, names unique."""
    items = document.get("rules")
    if items is None:
        return []
    if not isinstance(items, Sequence):
        raise RulesError(f'{path} (line {document.lines.get("rules", 1)}): "rules" must be a list of rules')
    rules, lines = [], {}
    for index, (item, line) in enumerate(zip(items, items.lines), start=1):
        checker = RuleChecker(path, index, item, line)
        rule = checker.check()
        if rule.name in lines:
            reason = f"another rule (line {lines[rule.name]}) has this name; names must be unique"
            raise checker.error("name", reason)
        lines[rule.name] = line
        rules.append(rule)
    return rules
