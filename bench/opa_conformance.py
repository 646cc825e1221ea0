"""Measure how much of OPA's own conformance suite regorus plus our extensions pass.

Reads the cases exported from OPA's test suite (``shared/vectors/opa-conformance-cases.json``
beside the project, or ``--cases PATH``). For every case of the ``jwt*`` and ``cryptox509*``
categories (the ones ``authz.policy.builtins`` supplies, plus the other ``io.jwt`` and
``crypto.x509`` categories present), or of every category with ``--all``, it builds a fresh
``regorus.Engine``, registers the extensions, adds the case's modules, data and input, runs
the query and compares the bindings with ``want_result``. It prints a per-category table and
always exits 0: it is a report, not a gate.

How a case is judged, and why:

* ``want_result`` is compared as OPA's runner does: as a set of binding rows, each binding
  compared structurally (a Rego set from regorus matches an array with the same members in any
  order); with ``sort_bindings`` an array binding is order-insensitive too. ``[]`` means the
  query must be undefined (no rows).
* A case with ``want_error`` or ``want_error_code`` passes if evaluation raises; the message is
  not compared. Except: every such case here expects an error *while evaluating* (OPA's codes
  are all ``eval_*``), so a regorus compile failure ("could not find function", "var ... is
  unsafe", typically a built-in regorus lacks) does not count; otherwise every error case of a
  missing built-in would pass.
* An evaluation that raises where OPA expects a result fails. That includes the cases where OPA,
  outside its strict mode, turns a built-in error into *undefined* and expects no rows: regorus
  has no undefined result for an extension, so the error aborts the whole query. Counting those
  as passes would hide a real difference (under OPA a ``default`` rule still decides; under
  regorus the query fails), so they fail and are counted in their own column, ``err!=undef``.
* regorus does not accept the "output as last argument" call form for extensions
  (``io.jwt.decode(t, [h, p, s])``), which OPA's exported cases use throughout. The
  ``rewritten`` columns rerun each case whose modules use that form on an extension with the
  call rewritten to the equivalent ``[h, p, s] = io.jwt.decode(t)`` (OPA compiles the one into
  the other), so the extensions' own conformance is visible apart from that engine limit.
  Cases the rewrite does not touch count with their first result.

``--engine compiled`` runs the cases through regorus's compiled VM instead
(``authz.policy.compiled``; the gateway does not serve with it), and ``--engine both`` runs
every case on both and adds a parity table. The VM runs a rule, not a query: only cases
whose query reads ``data.<rule path> = <var>`` (all but 24 of the 2,067) are run on it, the
rule is the program's entry point and ``<var>`` binds its value (no row when it is
undefined). A case the compiler refuses, or whose query has another shape, is "not run"
and counts as failed in the compiled table; the parity table compares only cases run on
both. The VM has no undefined input: a case without an input runs with ``input`` null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported first: it switches regorus's error backtraces off before regorus loads.
from authz.errors import ConfigError, is_rust_panic
from authz.policy.builtins import EXTENSIONS
from authz.policy.compiled import UNDEFINED, CompiledDecision, NotCompilable, compile_decision
from authz.policy.embedded import build_engine, error_summary
from authz.policy.loader import PolicySet

DEFAULT_CASES = (
    Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "opa-conformance-cases.json"
)
EXTENSION_CATEGORIES = ("jwt", "cryptox509")
# ConfigError: build_engine's report of a module regorus could not compile.
ENGINE_ERRORS = (RuntimeError, ValueError, TypeError, OverflowError, ConfigError)
TRUNCATE = 300
# regorus messages of a policy it could not compile, as opposed to one that failed while running.
COMPILE_ERRORS = ("could not find function", "is unsafe")


@dataclass(frozen=True, slots=True)
class Outcome:
    passed: bool
    raised_for_undefined: bool = False  # raised where OPA (non-strict) answers "undefined"
    detail: str = ""
    result: str = ""  # the rows (canonical JSON) or "error", to compare two engines
    ran: bool = True  # False: the engine could not take the case (compiled: see docstring)


class NotRun(Exception):
    """The compiled VM cannot take this case: its query shape, or the compiler refused it."""


# -- rewriting the output-argument call form ----------------------------------------------

_ARITIES = {extension.path: extension.nargs for extension in EXTENSIONS}
_CALL = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(path) for path in _ARITIES) + r")\s*\(", re.ASCII
)
_OPENERS, _CLOSERS = "([{", ")]}"


def _skip_string(text: str, start: int) -> int:
    """The index just past the string or comment starting at ``start``."""
    quote = text[start]
    if quote == "#":
        end = text.find("\n", start)
        return len(text) if end < 0 else end
    index = start + 1
    while index < len(text) and text[index] != quote:
        index += 2 if quote == '"' and text[index] == "\\" else 1
    return index + 1


def _call_arguments(text: str, start: int) -> tuple[list[str], int] | None:
    """The top-level arguments of the call whose "(" is just before ``start``, and its end."""
    arguments, depth, begin, index = [], 0, start, start
    while index < len(text):
        char = text[index]
        if char in '"`#':
            index = _skip_string(text, index)
            continue
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            if depth == 0:
                arguments.append(text[begin:index].strip())
                if arguments and not arguments[-1]:
                    arguments.pop()  # a trailing comma
                return arguments, index + 1
            depth -= 1
        elif char == "," and depth == 0:
            arguments.append(text[begin:index].strip())
            begin = index + 1
        index += 1
    return None


def rewrite_output_arguments(module: str) -> str:
    """Rewrite each extension call ``f(args..., out)`` as ``out = f(args...)``."""
    pieces, position = [], 0
    index = 0
    while index < len(module):
        char = module[index]
        if char in '"`#':
            index = _skip_string(module, index)
            continue
        match = _CALL.match(module, index)
        if match is None:
            index += 1
            continue
        parsed = _call_arguments(module, match.end())
        if parsed is None:
            break
        arguments, end = parsed
        name = match.group(1)
        if len(arguments) == _ARITIES[name] + 1:
            pieces += [
                module[position:index],
                f"{arguments[-1]} = {name}({', '.join(arguments[:-1])})",
            ]
            position = end
        index = end
    return "".join(pieces) + module[position:]


# -- running one case -------------------------------------------------------------------------


def _input_value(term: str) -> Any:
    """The value of an ``input_term`` (Rego syntax, possibly not JSON)."""
    engine = build_engine(PolicySet(modules=(), data={}, revision=""))
    rows = engine.eval_query(f"__input__ = {term}")["result"]
    return rows[0]["bindings"]["__input__"]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence regorus' own diagnostics (it prints scheduler notes straight to fd 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="utf-8") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _case_policy_set(case: dict[str, Any], index: int, modules: list[str]) -> PolicySet:
    return PolicySet(
        modules=tuple((f"case{index}-{number}.rego", text) for number, text in enumerate(modules)),
        data=case.get("data") or {},
        revision="",
    )


def _evaluate(case: dict[str, Any], index: int, modules: list[str]) -> list[dict[str, Any]]:
    # Built exactly as the gateway builds its engine: same limits, same extensions.
    engine = build_engine(_case_policy_set(case, index, modules))
    if "input" in case:
        engine.set_input(case["input"])
    elif "input_term" in case:
        engine.set_input(_input_value(case["input_term"]))
    rows = engine.eval_query(case["query"])["result"]
    result = []
    for row in rows:
        bindings = row.get("bindings", {})
        if case.get("ignore_generated_vars"):
            bindings = {k: v for k, v in bindings.items() if not k.startswith("__localq")}
        result.append(bindings)
    return result


_RULE_QUERY = re.compile(r"\A\s*(data(?:\.[A-Za-z_]\w*)+)\s*=\s*([A-Za-z_]\w*)\s*\Z")


def _evaluate_compiled(
    case: dict[str, Any], index: int, modules: list[str]
) -> list[dict[str, Any]]:
    match = _RULE_QUERY.match(case["query"])
    if match is None:
        raise NotRun("the query is not `data.<rule> = <var>`")
    rule, variable = match.groups()
    try:
        program = compile_decision(_case_policy_set(case, index, modules), rule)
    except NotCompilable as exc:
        raise NotRun(str(exc)) from None
    if "input" in case:
        document = case["input"]
    elif "input_term" in case:
        document = _input_value(case["input_term"])
    else:
        document = None
    value = CompiledDecision(program).evaluate(document)
    return [] if value is UNDEFINED else [{variable: value}]


def _canonical(value: Any) -> str:
    def plain(item: Any) -> Any:
        if isinstance(item, set | frozenset):
            return sorted((plain(member) for member in item), key=_stable)
        if isinstance(item, dict):
            return {key: plain(member) for key, member in item.items()}
        if isinstance(item, list | tuple):
            return [plain(member) for member in item]
        return item

    return _stable(plain(value))


def _stable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _same_members(got: Iterable[Any], want: Iterable[Any]) -> bool:
    remaining = list(want)
    for item in got:
        match = next((i for i, candidate in enumerate(remaining) if _equal(item, candidate)), None)
        if match is None:
            return False
        remaining.pop(match)
    return not remaining


def _equal(got: Any, want: Any) -> bool:
    """Rego value equality between what regorus returned and OPA's JSON expectation."""
    if isinstance(got, set | frozenset):
        return isinstance(want, list) and len(got) == len(want) and _same_members(got, want)
    if isinstance(got, list | tuple):
        return (
            isinstance(want, list)
            and len(got) == len(want)
            and all(_equal(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(got, dict):
        return (
            isinstance(want, dict)
            and got.keys() == want.keys()
            and all(_equal(got[key], want[key]) for key in got)
        )
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    return bool(got == want)


def _rows_match(got: list[dict[str, Any]], want: list[dict[str, Any]], unordered: bool) -> bool:
    def row_equal(got_row: dict[str, Any], want_row: dict[str, Any]) -> bool:
        if got_row.keys() != want_row.keys():
            return False
        for key, value in got_row.items():
            expected = want_row[key]
            if unordered and isinstance(value, list) and isinstance(expected, list):
                if not (len(value) == len(expected) and _same_members(value, expected)):
                    return False
            elif not _equal(value, expected):
                return False
        return True

    # OPA compares result *sets*: duplicate rows count once.
    unique = list({_canonical(row): row for row in got}.values())
    remaining = list({_canonical(row): row for row in want}.values())
    for row in unique:
        match = next((i for i, w in enumerate(remaining) if row_equal(row, w)), None)
        if match is None:
            return False
        remaining.pop(match)
    return not remaining


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else _canonical(value)
    text = " ".join(text.split())
    return text if len(text) <= TRUNCATE else text[:TRUNCATE] + "..."


def run_case(
    case: dict[str, Any], index: int, modules: list[str], engine: str = "interpreter"
) -> Outcome:
    expects_error = "want_error" in case or "want_error_code" in case
    want = case.get("want_result", [])
    evaluate = _evaluate_compiled if engine == "compiled" else _evaluate
    try:
        with _quiet_stderr():
            got = evaluate(case, index, modules)
    except NotRun as exc:
        return Outcome(False, detail=f"not run on the compiled VM: {exc}", ran=False)
    # A Rust panic inside regorus surfaces as pyo3's PanicException, a BaseException subclass
    # that cannot be imported by name; anything else (KeyboardInterrupt...) propagates.
    except BaseException as exc:
        if not isinstance(exc, ENGINE_ERRORS) and not is_rust_panic(exc):
            raise
        message = error_summary(exc)
        if expects_error and any(marker in message for marker in COMPILE_ERRORS):
            expected = case.get("want_error") or case.get("want_error_code")
            return Outcome(
                False, detail=f"expected error {_short(expected)}; raised {message}", result="error"
            )
        if expects_error:
            return Outcome(True, result="error")
        return Outcome(
            False,
            raised_for_undefined=not want and not case.get("strict_error"),
            detail=f"expected {_short(want)}; raised {_short(message)}",
            result="error",
        )
    result = _stable(sorted(_canonical(row) for row in got))
    if expects_error:
        expected = case.get("want_error") or case.get("want_error_code")
        return Outcome(
            False, detail=f"expected error {_short(expected)}; got {_short(got)}", result=result
        )
    if _rows_match(got, want, bool(case.get("sort_bindings"))):
        return Outcome(True, result=result)
    return Outcome(False, detail=f"expected {_short(want)}; got {_short(got)}", result=result)


# -- the report -------------------------------------------------------------------------------

# Per case index: its outcome as written, and after the output-argument rewrite.
Outcomes = dict[int, tuple[Outcome, Outcome]]


@dataclass(slots=True)
class Tally:
    cases: int = 0
    ran: int = 0
    passed: int = 0
    rewritten_passed: int = 0
    raised_for_undefined: int = 0

    def add(self, first: Outcome, rewritten: Outcome) -> None:
        self.cases += 1
        self.ran += first.ran
        self.passed += first.passed
        self.rewritten_passed += rewritten.passed
        self.raised_for_undefined += rewritten.raised_for_undefined

    def merge(self, other: Tally) -> None:
        self.cases += other.cases
        self.ran += other.ran
        self.passed += other.passed
        self.rewritten_passed += other.rewritten_passed
        self.raised_for_undefined += other.raised_for_undefined


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def tally(cases: list[dict[str, Any]], outcomes: Outcomes) -> dict[str, Tally]:
    tallies: dict[str, Tally] = defaultdict(Tally)
    for index, (first, rewritten) in outcomes.items():
        tallies[cases[index]["category"]].add(first, rewritten)
    return tallies


def print_table(title: str, tallies: dict[str, Tally], *, show_ran: bool = False) -> None:
    width = max([len("category"), len("TOTAL"), *map(len, tallies)])
    ran = f"  {'run':>5}" if show_ran else ""
    header = (
        f"{'category':<{width}}  {'cases':>5}{ran}  {'passed':>6}  {'rate':>6}"
        f"  {'rewritten':>9}  {'rate':>6}  {'err!=undef':>10}"
    )
    print(f"\n{title}\n{header}\n{'-' * len(header)}")
    total = Tally()
    for name in sorted(tallies):
        total.merge(tallies[name])
        print(_row(name, tallies[name], width, show_ran))
    print("-" * len(header))
    print(_row("TOTAL", total, width, show_ran))


def _row(name: str, tally: Tally, width: int, show_ran: bool) -> str:
    ran = f"  {tally.ran:>5}" if show_ran else ""
    return (
        f"{name:<{width}}  {tally.cases:>5}{ran}  {tally.passed:>6}"
        f"  {_rate(tally.passed, tally.cases)}"
        f"  {tally.rewritten_passed:>9}  {_rate(tally.rewritten_passed, tally.cases)}"
        f"  {tally.raised_for_undefined:>10}"
    )


def print_parity(cases: list[dict[str, Any]], interpreted: Outcomes, compiled: Outcomes) -> None:
    """Per category, over the cases run on both engines: how many got the same result (rows,
    or an error on both), and which engine alone passed the others."""
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for index, (on_vm, _) in compiled.items():
        if not on_vm.ran:
            continue
        on_interpreter = interpreted[index][0]
        row = rows[cases[index]["category"]]
        row[0] += 1
        row[1] += on_vm.result == on_interpreter.result
        row[2] += on_interpreter.passed and not on_vm.passed
        row[3] += on_vm.passed and not on_interpreter.passed
    width = max([len("category"), len("TOTAL"), *map(len, rows)])
    header = (
        f"{'category':<{width}}  {'run on both':>11}  {'same result':>11}"
        f"  {'interpreter only passes':>23}  {'compiled only passes':>20}"
    )
    print(f"\nparity: interpreter vs compiled VM\n{header}\n{'-' * len(header)}")
    total = [0, 0, 0, 0]
    for name in sorted(rows):
        total = [a + b for a, b in zip(total, rows[name], strict=True)]
        if rows[name][1] != rows[name][0]:
            print(_parity_row(name, rows[name], width))
    print("-" * len(header))
    print(_parity_row("TOTAL", total, width))
    print("(categories where every case gave the same result on both are not listed)")


def _parity_row(name: str, row: list[int], width: int) -> str:
    return f"{name:<{width}}  {row[0]:>11}  {row[1]:>11}  {row[2]:>23}  {row[3]:>20}"


def evaluate_cases(
    cases: list[dict[str, Any]], selected: Iterable[int], verbose: bool, engine: str
) -> Outcomes:
    outcomes: Outcomes = {}
    for index in selected:
        case = cases[index]
        modules = list(case.get("modules") or [])
        first = run_case(case, index, modules, engine)
        rewritten_modules = [rewrite_output_arguments(module) for module in modules]
        rewritten = (
            first
            if rewritten_modules == modules
            else run_case(case, index, rewritten_modules, engine)
        )
        outcomes[index] = (first, rewritten)
        if verbose and not rewritten.passed:
            print(f"FAIL ({engine}) {case['note']}\n     {rewritten.detail}")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="the cases JSON file")
    parser.add_argument("--all", action="store_true", help="also report every category")
    parser.add_argument("--verbose", action="store_true", help="print each failing case")
    parser.add_argument(
        "--engine",
        choices=("interpreter", "compiled", "both"),
        default="interpreter",
        help="regorus's interpreter (what the gateway serves with), its compiled VM, or both "
        "with a parity table",
    )
    args = parser.parse_args(argv)

    cases: list[dict[str, Any]] = json.loads(args.cases.read_text(encoding="utf-8"))
    runnable = [i for i, case in enumerate(cases) if not case.get("ignore")]
    extension_cases = [i for i in runnable if cases[i]["category"].startswith(EXTENSION_CATEGORIES)]
    selected = runnable if args.all else extension_cases
    engines = ("interpreter", "compiled") if args.engine == "both" else (args.engine,)

    print(f"cases: {args.cases} ({len(cases)} cases, regorus with authz.policy.builtins)")
    results: dict[str, Outcomes] = {}
    for engine in engines:
        results[engine] = evaluate_cases(cases, selected, args.verbose, engine)
        outcomes = results[engine]
        compiled = engine == "compiled"
        suffix = " (compiled VM)" if compiled else ""
        extension_outcomes = {i: outcomes[i] for i in extension_cases}
        print_table(
            f"io.jwt / crypto.x509 categories{suffix}",
            tally(cases, extension_outcomes),
            show_ran=compiled,
        )
        if args.all:
            print_table(f"all categories{suffix}", tally(cases, outcomes), show_ran=compiled)
    if len(engines) == 2:
        print_parity(cases, results["interpreter"], results["compiled"])
    print(
        "\nrewritten: after turning extension calls written f(args..., out) into out = f(args...)"
        "\nerr!=undef: raised where OPA, without strict errors, answers undefined (counted as fail)"
    )
    if "compiled" in engines:
        print("run: cases the compiled VM could take (the others count as failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
