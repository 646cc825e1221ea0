"""What a set of Rego modules defines, read from regorus's parsed AST.

Used to check at load time that the configured decision rule exists, and to discover
`test_*` rules for `wimse-authz policy test`, without evaluating anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RuleHead:
    package: str
    """Dotted package path without `data.`, e.g. `envoy.authz`."""
    name: str
    """The rule's name within its package (first segment of a ref head)."""
    file: str
    line: int

    @property
    def path(self) -> str:
        return f"data.{self.package}.{self.name}"


def _ref_segments(ref: Any) -> list[str]:
    """Flatten a Var/RefDot chain into names; a RefBrack ends the static part."""
    if not isinstance(ref, dict) or len(ref) != 1:
        return []
    kind, node = next(iter(ref.items()))
    if kind == "Var":
        return [str(node["value"])]
    if kind == "RefDot":
        return [*_ref_segments(node["refr"]), str(node["field"][1])]
    if kind == "RefBrack":
        return _ref_segments(node["refr"])
    return []


def _head_ref(rule: dict[str, Any]) -> tuple[Any, int]:
    kind, node = next(iter(rule.items()))
    if kind == "Default":
        return node["refr"], int(node["span"]["line"])
    inner = next(iter(node["head"].values()))
    return inner["refr"], int(inner["span"]["line"])


def rule_heads(ast_json: str) -> list[RuleHead]:
    """Every rule head in the modules of `engine.get_ast_as_json()`."""
    heads: list[RuleHead] = []
    for module in json.loads(ast_json):
        package = ".".join(_ref_segments(module["ast"]["package"]["refr"])).removeprefix("data.")
        file = module["source"]["file"]
        for rule in module["ast"]["rules"]:
            ref, line = _head_ref(rule)
            segments = _ref_segments(ref)
            if segments:
                heads.append(RuleHead(package=package, name=segments[0], file=file, line=line))
    return heads
