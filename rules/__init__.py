"""Deciding whether and how a request becomes a background fetch.

`parse_header` reads the `Background-Fetch` request header, `load_file` a YAML rules file whose
`RuleSet.match` finds the rule for a request (`RulesFile`: the file in force, and its edits), and `make_spec` layers what they give into the
`FetchSpec` that the store receives. Nothing here knows mitmproxy beyond `mitmproxy.flowfilter`.
"""

from rules.config import RuleSet, RulesFile, load_file
from rules.header import HeaderError, parse_header
from rules.rule import RulesError
from rules.spec import FetchSpec, make_spec
from vocabulary import parse_size

__all__ = [
    "FetchSpec",
    "HeaderError",
    "RuleSet",
    "RulesError",
    "RulesFile",
    "load_file",
    "make_spec",
    "parse_header",
    "parse_size",
]
