"""What a set of Rego modules defines, read from regorus's parsed AST.

Used to check at load time that the configured decision rule exists, and to discover
`test_*` rules for `wimse-authz policy test`, without evaluating anything.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal


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


def _package(module: dict[str, Any]) -> str:
    """A module's dotted package path without `data.`."""
    return ".".join(_ref_segments(module["ast"]["package"]["refr"])).removeprefix("data.")


def rule_heads(ast_json: str) -> list[RuleHead]:
    """Every rule head in the modules of `engine.get_ast_as_json()`."""
    heads: list[RuleHead] = []
    for module in json.loads(ast_json):
        package = _package(module)
        file = module["source"]["file"]
        for rule in module["ast"]["rules"]:
            ref, line = _head_ref(rule)
            segments = _ref_segments(ref)
            if segments:
                heads.append(RuleHead(package=package, name=segments[0], file=file, line=line))
    return heads


# The parts of a rule body `policy test` re-evaluates when a test fails.

StatementKind = Literal["expr", "assign", "unify", "not", "some", "every"]

_COMPARISONS = frozenset({"Eq", "Ne", "Lt", "Le", "Gt", "Ge"})
_CONSTANTS = frozenset({"String", "RawString", "Number", "Bool", "Null"})
_STRINGS = frozenset({"String", "RawString"})


@dataclass(frozen=True, slots=True)
class Operand:
    """A part of a statement whose value shows why the statement failed."""

    label: str
    """`left`/`right` for the two sides of a comparison, else the part's source text."""
    source: str


@dataclass(frozen=True, slots=True)
class Statement:
    """One top-level statement (literal) of a rule body, as written."""

    line: int
    source: str
    """The whole statement, its `with` modifiers included."""
    kind: StatementKind
    value_source: str | None
    """For a plain expression (`x == y`, `allow`, `f(x)`): the expression without its
    modifiers, whose value is the statement's value. None for other kinds."""
    modifiers: str
    """The statement's `with ... as ...` modifiers as written, "" when it has none."""
    operands: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class RuleBody:
    """One body of a rule, with what it takes to evaluate its statements elsewhere."""

    package: str
    header: str
    """The module's text before its first rule: its package line and imports."""
    statements: tuple[Statement, ...]


class _Source:
    """A module's text addressed by the AST's spans (byte offsets into its UTF-8)."""

    def __init__(self, text: str) -> None:
        self._bytes = text.encode()

    def text(self, start: int, end: int) -> str:
        return self._bytes[start:end].decode(errors="replace")

    def node(self, node: Any) -> str:
        start, end = _extent(node)
        return self.text(start, end)


def _extent(node: Any) -> tuple[int, int]:
    """(start, end) of an AST node and everything under it. A string literal's span leaves
    out its quotes, and an expression ending in one ends where that span does: the quotes
    are added back so the text can be evaluated again."""
    start, end = 1 << 62, -1

    def cover(span: dict[str, Any], widen: int) -> None:
        nonlocal start, end
        start, end = min(start, span["start"] - widen), max(end, span["end"] + widen)

    def visit(item: Any) -> None:
        if isinstance(item, list):
            for child in item:
                visit(child)
        elif isinstance(item, dict):
            if {"start", "end", "line"} <= item.keys():
                cover(item, 0)
                return
            for key, child in item.items():
                if key in _STRINGS:
                    cover(child["span"], 1)
                else:
                    visit(child)

    visit(node)
    return (start, end) if end >= 0 else (0, 0)


def _only(node: dict[str, Any]) -> tuple[str, Any]:
    kind, value = next(iter(node.items()))
    return str(kind), value


def _parts(expr: dict[str, Any], source: _Source) -> tuple[Operand, ...]:
    """The operands worth showing for an expression: both sides of a comparison, the
    arguments of a call or a membership test, or the expression itself."""
    kind, node = _only(expr)
    if kind == "BoolExpr" and node.get("op") in _COMPARISONS:
        return (
            Operand("left", source.node(node["lhs"])),
            Operand("right", source.node(node["rhs"])),
        )
    if kind == "Call":
        parts = list(node["params"])
    elif kind == "Membership":
        parts = [node[key] for key in ("key", "value", "collection") if node.get(key)]
    elif kind in _CONSTANTS:
        parts = []
    else:
        parts = [expr]
    return tuple(
        Operand(source.node(part), source.node(part))
        for part in parts
        if _only(part)[0] not in _CONSTANTS
    )


def _statement(stmt: dict[str, Any], source: _Source) -> Statement:
    kind, literal = _only(stmt["literal"])
    modifiers = stmt.get("with_mods") or []
    whole = source.text(*_extent([stmt["span"], stmt["literal"], modifiers]))
    with_text = " ".join(source.node(modifier) for modifier in modifiers)
    if with_text and not with_text.startswith("with"):
        with_text = f"with {with_text}"
    line = int(stmt["span"]["line"])
    if kind == "NotExpr":
        return Statement(line, whole, "not", None, with_text, _parts(literal["expr"], source))
    if kind == "SomeIn":
        collection = Operand(source.node(literal["collection"]), source.node(literal["collection"]))
        return Statement(line, whole, "some", None, with_text, (collection,))
    if kind == "Every":
        domain = Operand(source.node(literal["domain"]), source.node(literal["domain"]))
        return Statement(line, whole, "every", None, with_text, (domain,))
    if kind != "Expr":
        return Statement(line, whole, "some", None, with_text, ())
    expr_kind, expr = _only(literal["expr"])
    if expr_kind == "AssignExpr" and expr.get("op") == "ColEq":
        value = Operand(source.node(expr["rhs"]), source.node(expr["rhs"]))
        return Statement(line, whole, "assign", None, with_text, (value,))
    if expr_kind == "AssignExpr":
        sides = (
            Operand("left", source.node(expr["lhs"])),
            Operand("right", source.node(expr["rhs"])),
        )
        return Statement(line, whole, "unify", None, with_text, sides)
    expression = source.node(literal["expr"])
    return Statement(line, whole, "expr", expression, with_text, _parts(literal["expr"], source))


def rule_bodies(ast_json: str, paths: Collection[str]) -> dict[str, list[RuleBody]]:
    """The bodies (`else` branches left out) of the rules at `paths` (`data.pkg.name`), in
    the modules of `engine.get_ast_as_json()`; a path with no body is left out."""
    bodies: dict[str, list[RuleBody]] = {}
    for module in json.loads(ast_json):
        package = _package(module)
        rules = module["ast"]["rules"]
        source = _Source(module["source"]["contents"])
        first_rule = min((_only(rule)[1]["span"]["start"] for rule in rules), default=0)
        header = source.text(0, first_rule)
        for rule in rules:
            ref, _ = _head_ref(rule)
            segments = _ref_segments(ref)
            path = f"data.{package}.{segments[0]}" if segments else ""
            if path not in paths:
                continue
            for body in _only(rule)[1].get("bodies") or []:
                if body.get("is_else"):
                    continue
                statements = tuple(_statement(stmt, source) for stmt in body["query"]["stmts"])
                bodies.setdefault(path, []).append(RuleBody(package, header, statements))
    return bodies
