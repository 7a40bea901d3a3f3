"""Reading YAML so that every mapping and sequence remembers the line of each key and item.

Rules files are checked after loading; the line numbers let an error point at the field.
A key written twice in one mapping is refused (PyYAML would keep the last silently).
"""

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class NotYaml(ValueError):
    """Text that is not valid YAML: `problem`, at `line` (None when unknown)."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


class Mapping(dict):
    """A YAML mapping that remembers the line of each key."""

    lines: dict


class Sequence(list):
    """A YAML sequence that remembers the line of each item."""

    lines: list[int]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences remember line numbers, and that refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    written = [key_node for key_node, _ in node.value if key_node.tag != MERGE_TAG]
    mapping = Mapping(loader.construct_mapping(node, deep=True))  # also merges "<<: *anchor" keys
    mapping.lines = {}
    for key_node in written:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping.lines:
            raise yaml.constructor.ConstructorError(
                problem=f'duplicate key "{key}"', problem_mark=key_node.start_mark
            )
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> Sequence:
    sequence = Sequence(loader.construct_sequence(node, deep=True))
    sequence.lines = [item.start_mark.line + 1 for item in node.value]
    return sequence


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def load_yaml(text: str) -> object:
    """The YAML document in text; NotYaml with the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise NotYaml(problem, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise NotYaml(str(exc)) from None
