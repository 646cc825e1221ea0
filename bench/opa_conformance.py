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


def _evaluate(case: dict[str, Any], index: int, modules: list[str]) -> list[dict[str, Any]]:
    # Built exactly as the gateway builds its engine: same limits, same extensions.
    policy_set = PolicySet(
        modules=tuple((f"case{index}-{number}.rego", text) for number, text in enumerate(modules)),
        data=case.get("data") or {},
        revision="",
    )
    engine = build_engine(policy_set)
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


def run_case(case: dict[str, Any], index: int, modules: list[str]) -> Outcome:
    expects_error = "want_error" in case or "want_error_code" in case
    want = case.get("want_result", [])
    try:
        with _quiet_stderr():
            got = _evaluate(case, index, modules)
    # A Rust panic inside regorus surfaces as pyo3's PanicException, a BaseException subclass
    # that cannot be imported by name; anything else (KeyboardInterrupt...) propagates.
    except BaseException as exc:
        if not isinstance(exc, ENGINE_ERRORS) and not is_rust_panic(exc):
            raise
        message = error_summary(exc)
        if expects_error and any(marker in message for marker in COMPILE_ERRORS):
            expected = case.get("want_error") or case.get("want_error_code")
            return Outcome(False, detail=f"expected error {_short(expected)}; raised {message}")
        if expects_error:
            return Outcome(True)
        return Outcome(
            False,
            raised_for_undefined=not want and not case.get("strict_error"),
            detail=f"expected {_short(want)}; raised {_short(message)}",
        )
    if expects_error:
        expected = case.get("want_error") or case.get("want_error_code")
        return Outcome(False, detail=f"expected error {_short(expected)}; got {_short(got)}")
    if _rows_match(got, want, bool(case.get("sort_bindings"))):
        return Outcome(True)
    return Outcome(False, detail=f"expected {_short(want)}; got {_short(got)}")


# -- the report -------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    cases: int = 0
    passed: int = 0
    rewritten_passed: int = 0
    raised_for_undefined: int = 0

    def add(self, first: Outcome, rewritten: Outcome) -> None:
        self.cases += 1
        self.passed += first.passed
        self.rewritten_passed += rewritten.passed
        self.raised_for_undefined += rewritten.raised_for_undefined


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def print_table(title: str, tallies: dict[str, Tally]) -> None:
    width = max([len("category"), len("TOTAL"), *map(len, tallies)])
    header = (
        f"{'category':<{width}}  {'cases':>5}  {'passed':>6}  {'rate':>6}"
        f"  {'rewritten':>9}  {'rate':>6}  {'err!=undef':>10}"
    )
    print(f"\n{title}\n{header}\n{'-' * len(header)}")
    total = Tally()
    for name in sorted(tallies):
        tally = tallies[name]
        total.cases += tally.cases
        total.passed += tally.passed
        total.rewritten_passed += tally.rewritten_passed
        total.raised_for_undefined += tally.raised_for_undefined
        print(_row(name, tally, width))
    print("-" * len(header))
    print(_row("TOTAL", total, width))


def _row(name: str, tally: Tally, width: int) -> str:
    return (
        f"{name:<{width}}  {tally.cases:>5}  {tally.passed:>6}  {_rate(tally.passed, tally.cases)}"
        f"  {tally.rewritten_passed:>9}  {_rate(tally.rewritten_passed, tally.cases)}"
        f"  {tally.raised_for_undefined:>10}"
    )


def evaluate_cases(
    cases: list[dict[str, Any]], selected: Iterable[int], verbose: bool
) -> dict[str, Tally]:
    tallies: dict[str, Tally] = defaultdict(Tally)
    for index in selected:
        case = cases[index]
        modules = list(case.get("modules") or [])
        first = run_case(case, index, modules)
        rewritten_modules = [rewrite_output_arguments(module) for module in modules]
        rewritten = (
            first if rewritten_modules == modules else run_case(case, index, rewritten_modules)
        )
        tallies[case["category"]].add(first, rewritten)
        if verbose and not rewritten.passed:
            print(f"FAIL {case['note']}\n     {rewritten.detail}")
    return tallies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="the cases JSON file")
    parser.add_argument("--all", action="store_true", help="also report every category")
    parser.add_argument("--verbose", action="store_true", help="print each failing case")
    args = parser.parse_args(argv)

    cases: list[dict[str, Any]] = json.loads(args.cases.read_text(encoding="utf-8"))
    runnable = [i for i, case in enumerate(cases) if not case.get("ignore")]
    extension_cases = [i for i in runnable if cases[i]["category"].startswith(EXTENSION_CATEGORIES)]

    print(f"cases: {args.cases} ({len(cases)} cases, regorus with authz.policy.builtins)")
    extension_tallies = evaluate_cases(cases, extension_cases, args.verbose)
    print_table("io.jwt / crypto.x509 categories", extension_tallies)
    if args.all:
        chosen = set(extension_cases)
        others = [i for i in runnable if i not in chosen]
        print_table(
            "all categories", extension_tallies | evaluate_cases(cases, others, args.verbose)
        )
    print(
        "\nrewritten: after turning extension calls written f(args..., out) into out = f(args...)"
        "\nerr!=undef: raised where OPA, without strict errors, answers undefined (counted as fail)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
