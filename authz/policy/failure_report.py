"""What a failing Rego test saw, for `wimse-authz policy test`.

regorus has no trace, so a failing test is replayed a statement at a time. For statement
k of the test's body, a probe rule is compiled into a clone of the test engine, in the
test's own package and under its module's imports, whose body is statements 0..k as
written: the first probe that is undefined names the statement that failed, with the
test's `with` modifiers and earlier local variables in force exactly as in the test. The
parts of that statement (both sides of a comparison, a call's arguments, a bare
reference) are then evaluated the same way, after statements 0..k-1, and rendered as Rego
values.

Nothing here raises: a statement or part that cannot be replayed is reported with the
reason, so a broken explanation never hides the test result.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from authz.errors import is_rust_panic
from authz.policy.embedded import error_summary
from authz.policy.rego_ast import Operand, RuleBody, Statement, rule_bodies

Outcome = Literal["held", "false", "undefined", "error", "not re-evaluated", "not reached"]

_PROBE_RULE = "__failure_probe"
_PROBE_FILE = "__failure_probe__.rego"
_PROBE_VALUE = "__failure_probe_value"
_UNSAFE = re.compile(r"\bis unsafe\b")
# What the report prints of one value, one statement and one operand label: a test input
# can be a whole request, and the report is read in a terminal.
_VALUE_CHARS = 240
_SOURCE_CHARS = 120
_LABEL_CHARS = 60
_VALUES_SHOWN = 4


@dataclass(frozen=True, slots=True)
class OperandValue:
    label: str
    values: tuple[str, ...]
    """The part's value as Rego text, one per way the earlier statements hold (most often
    exactly one); empty when it is undefined."""
    problem: str | None = None
    """Why the part has no value to show: it could not be evaluated on its own (a variable
    the statement itself binds) or its evaluation failed."""


@dataclass(frozen=True, slots=True)
class StatementResult:
    line: int
    source: str
    outcome: Outcome
    detail: str = ""
    """The error for `error`, the reason for `not re-evaluated`."""
    operands: tuple[OperandValue, ...] = ()


@dataclass(frozen=True, slots=True)
class FailureReport:
    """The replay of one failing test: each body's statements up to the one that failed
    (and those never reached), or why the test could not be replayed."""

    bodies: tuple[tuple[StatementResult, ...], ...] = ()
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Probed:
    value: Any = None
    error: str | None = None
    compiled: bool = True
    """False when the probe itself did not compile: nothing was evaluated."""


def explain_failures(engine: Any, test_paths: Collection[str]) -> dict[str, FailureReport]:
    """A report for each failing test (`data.pkg.test_name`), replayed in clones of
    `engine`, which must hold the tests' modules; `engine` itself is left as it was.

    For the command line only: while each probe runs, the process's stderr is silenced.
    """
    try:
        bodies = rule_bodies(engine.get_ast_as_json(), set(test_paths))
    except Exception as exc:  # noqa: BLE001 - an explanation must never fail the run
        return {path: FailureReport(problem=_short(exc)) for path in test_paths}
    reports: dict[str, FailureReport] = {}
    for path in test_paths:
        try:
            found = bodies.get(path, [])
            replayed = tuple(_replay(engine, body) for body in found)
            reports[path] = FailureReport(replayed, None if found else "the test has no body")
        except Exception as exc:  # noqa: BLE001 - an explanation must never fail the run
            reports[path] = FailureReport(problem=_short(exc))
    return reports


def _replay(engine: Any, body: RuleBody) -> tuple[StatementResult, ...]:
    results: list[StatementResult] = []
    held: list[Statement] = []
    for index, statement in enumerate(body.statements):
        probed = _probe(engine, body, _holds_rule([*held, statement]))
        if not probed.compiled:
            results.append(_result(statement, "not re-evaluated", probed.error or ""))
        elif probed.error is not None:
            results.append(_result(statement, "error", probed.error))
            return (*results, *_not_reached(body.statements[index + 1 :]))
        elif probed.value is None or probed.value is False:
            operands = tuple(
                _operand_value(engine, body, held, statement, o) for o in statement.operands
            )
            outcome = _failed_outcome(engine, body, held, statement, operands)
            results.append(_result(statement, outcome, operands=operands))
            return (*results, *_not_reached(body.statements[index + 1 :]))
        else:
            results.append(_result(statement, "held"))
        held.append(statement)
    return tuple(results)


def _result(
    statement: Statement,
    outcome: Outcome,
    detail: str = "",
    operands: tuple[OperandValue, ...] = (),
) -> StatementResult:
    return StatementResult(statement.line, statement.source, outcome, detail, operands)


def _not_reached(statements: Collection[Statement]) -> list[StatementResult]:
    return [_result(statement, "not reached") for statement in statements]


def _failed_outcome(
    engine: Any,
    body: RuleBody,
    held: list[Statement],
    statement: Statement,
    operands: tuple[OperandValue, ...],
) -> Outcome:
    """`false` or `undefined`, as Rego would call the failed statement."""
    if statement.kind == "not":
        return "false"
    if statement.value_source is not None:
        probed = _probe(engine, body, _value_rule(held, statement.value_source, statement))
        return "false" if probed.error is None and probed.value else "undefined"
    undefined = any(not o.values and o.problem is None for o in operands)
    return "undefined" if undefined else "false"


def _operand_value(
    engine: Any, body: RuleBody, held: list[Statement], statement: Statement, operand: Operand
) -> OperandValue:
    probed = _probe(engine, body, _value_rule(held, operand.source, statement))
    if not probed.compiled:
        return OperandValue(operand.label, (), f"not re-evaluated: {probed.error}")
    if probed.error is not None:
        return OperandValue(operand.label, (), f"error: {probed.error}")
    # The probe renders each value as a one-item Rego array, so strings keep their quotes.
    return OperandValue(operand.label, tuple(sorted(str(v)[1:-1] for v in probed.value or ())))


def _body_text(statements: list[Statement]) -> str:
    return "".join(f"\t{statement.source}\n" for statement in statements)


def _holds_rule(statements: list[Statement]) -> str:
    return f"{_PROBE_RULE} if {{\n{_body_text(statements)}}}"


def _value_rule(held: list[Statement], expression: str, statement: Statement) -> str:
    """A partial set of the values of `expression` after the statements that held, under
    `statement`'s `with` modifiers, each rendered as Rego text."""
    modifiers = f" {statement.modifiers}" if statement.modifiers else ""
    return (
        f'{_PROBE_RULE} contains sprintf("%v", [[{_PROBE_VALUE}]]) if {{\n'
        f"{_body_text(held)}\t{_PROBE_VALUE} := ({expression}){modifiers}\n}}"
    )


def _probe(engine: Any, body: RuleBody, rule: str) -> _Probed:
    """Evaluate one probe rule in a clone of `engine` (a clone shares the compiled
    modules, and a probe that fails to compile cannot spoil the next one)."""
    with _stderr_silenced():
        return _probe_quietly(engine, body, rule)


def _probe_quietly(engine: Any, body: RuleBody, rule: str) -> _Probed:
    try:
        clone = engine.clone()
        clone.set_gather_prints(True)  # the test's print() calls already ran once
        clone.add_policy(_PROBE_FILE, f"{body.header.rstrip()}\n\n{rule}\n")
        clone.eval_query("true")  # compiles every module: an error here is the probe's own
    except Exception as exc:  # noqa: BLE001 - reported as "not re-evaluated"
        return _Probed(error=_short(exc), compiled=False)
    except BaseException as exc:
        if not is_rust_panic(exc):
            raise
        return _Probed(error="the engine panicked", compiled=False)
    try:
        return _Probed(value=clone.eval_rule(f"data.{body.package}.{_PROBE_RULE}"))
    except Exception as exc:  # noqa: BLE001 - the statement's own evaluation error
        # Some unsafe variables are only found while evaluating: the probe, not the test,
        # is at fault then.
        return _Probed(error=_short(exc), compiled=_UNSAFE.search(str(exc)) is None)
    except BaseException as exc:
        if not is_rust_panic(exc):
            raise
        return _Probed(error="the engine panicked")


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """regorus writes scheduling diagnostics straight to file descriptor 2 when a probe's
    statements cannot be ordered; they are about the probe, not the user's policy."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _short(error: BaseException) -> str:
    # regorus appends its internal scope dump to "var x is unsafe": not for readers.
    return error_summary(error).removeprefix("error: ").split(" (path [")[0]


def report_lines(report: FailureReport) -> list[str]:
    """The report as indented lines to print under the test's FAIL line."""
    if report.problem is not None:
        return [f"  (not re-evaluated: {report.problem})"]
    lines: list[str] = []
    for body in report.bodies:
        if len(report.bodies) > 1 and body:
            lines.append(f"  body from line {body[0].line}:")
        lines.extend(_statement_lines(body))
    return lines


def _statement_lines(results: tuple[StatementResult, ...]) -> list[str]:
    lines: list[str] = []
    for result in results:
        head = f"  line {result.line}: {_clip(' '.join(result.source.split()), _SOURCE_CHARS)}"
        if result.outcome == "held":
            lines.append(head)
        elif result.outcome == "not re-evaluated":
            lines.append(f"{head}   (not re-evaluated: {result.detail})")
        elif result.outcome == "error":
            lines.append(f"{head}   → error: {result.detail}")
        elif result.outcome != "not reached":
            lines.append(f"{head}   → {result.outcome}")
        # A constant shown as itself (`[1, 2] = [1, 2]`) says nothing.
        shown = [
            o for o in result.operands if o.label in ("left", "right") or o.values != (o.label,)
        ]
        width = max((len(_label(o)) for o in shown), default=0)
        lines.extend(f"    {_label(o):<{width}} = {_shown(o)}" for o in shown)
    unreached = [str(result.line) for result in results if result.outcome == "not reached"]
    if unreached:
        lines.append(
            f"  (not reached: line{'s' if len(unreached) > 1 else ''} {', '.join(unreached)})"
        )
    if results and all(result.outcome == "held" for result in results):
        lines.append("  (every statement held when replayed)")
    return lines


def _label(operand: OperandValue) -> str:
    return _clip(" ".join(operand.label.split()), _LABEL_CHARS)


def _shown(operand: OperandValue) -> str:
    if operand.problem is not None:
        return f"({operand.problem})"
    if not operand.values:
        return "undefined"
    shown = [_clip(value, _VALUE_CHARS) for value in operand.values[:_VALUES_SHOWN]]
    more = len(operand.values) - len(shown)
    return " | ".join(shown) + (f" | … ({more} more)" if more else "")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
