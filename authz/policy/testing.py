"""Running Rego unit tests (`test_*` rules) with the embedded engine, as `opa test` does.

A test passes when its rule is defined and not false; an undefined rule, `false` or an
evaluation error fails it. Rules named `todo_test_*` are reported as skipped. Tests run
against the same engine build (modules, data, builtin extensions) the gateway serves with.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from authz.errors import is_rust_panic
from authz.policy.embedded import build_engine, error_summary
from authz.policy.failure_report import FailureReport, explain_failures
from authz.policy.loader import PolicySet, load_policy_set
from authz.policy.rego_ast import RuleHead, rule_heads


@dataclass(frozen=True, slots=True)
class TestOutcome:
    rule: RuleHead
    passed: bool
    skipped: bool
    error: str | None
    seconds: float
    report: FailureReport | None = None
    """For a failed test run by `policy test`: what it saw, statement by statement."""


def discover_tests(heads: list[RuleHead]) -> list[RuleHead]:
    seen: set[str] = set()
    tests: list[RuleHead] = []
    for head in heads:
        if head.name.startswith(("test_", "todo_test_")) and head.path not in seen:
            seen.add(head.path)
            tests.append(head)
    return tests


@dataclass(frozen=True, slots=True)
class FileCoverage:
    """How much of one policy file the tests ran (regorus's line coverage)."""

    path: str
    covered: tuple[int, ...]
    not_covered: tuple[int, ...]

    @property
    def percent(self) -> float:
        total = len(self.covered) + len(self.not_covered)
        return 100.0 * len(self.covered) / total if total else 100.0


def run_policy_tests(
    directory: Path,
    select: re.Pattern[str] | None = None,
    coverage: list[FileCoverage] | None = None,
) -> list[TestOutcome]:
    """Run every test rule under `directory` (only those whose path `select` finds, when
    given), with a report of what each failed test saw; with a `coverage` list, fill it
    with every policy file's line coverage (tests excluded). Raises `ConfigError` if
    policies don't load."""
    return run_set_tests(load_policy_set(directory), select, coverage, explain=True)


def run_set_tests(
    policy_set: PolicySet,
    select: re.Pattern[str] | None = None,
    coverage: list[FileCoverage] | None = None,
    explain: bool = False,
) -> list[TestOutcome]:
    """Run every test rule of a set (or those `select` finds), compiled with its serving
    modules; with a `coverage` list, fill it with each policy file's line coverage; with
    `explain`, attach to each failed test a `FailureReport`."""
    policy_set = replace(policy_set, modules=policy_set.with_tests(), tests=())
    engine = build_engine(policy_set)
    if coverage is not None:
        engine.set_enable_coverage(True)
    outcomes = _run(engine, policy_set, select)
    if coverage is not None:
        report = json.loads(engine.get_coverage_report_as_json())
        coverage.extend(
            FileCoverage(item["path"], tuple(item["covered"]), tuple(item["not_covered"]))
            for item in report["files"]
            if not item["path"].endswith("_test.rego")
        )
    failed = [o.rule.path for o in outcomes if not o.passed and not o.skipped]
    if explain and failed:
        # Replayed in a fresh engine: the tests' engine may have panicked (and been rebuilt
        # inside `_run`), and its coverage is already read.
        reports = explain_failures(build_engine(policy_set), failed)
        outcomes = [replace(o, report=reports.get(o.rule.path)) for o in outcomes]
    return outcomes


def _run(engine: Any, policy_set: PolicySet, select: re.Pattern[str] | None) -> list[TestOutcome]:
    outcomes: list[TestOutcome] = []
    for head in discover_tests(rule_heads(engine.get_ast_as_json())):
        if select is not None and select.search(head.path) is None:
            continue
        if head.name.startswith("todo_"):
            outcomes.append(TestOutcome(head, passed=False, skipped=True, error=None, seconds=0))
            continue
        started = time.perf_counter()
        error: str | None = None
        try:
            result = engine.eval_rule(head.path)
        except Exception as exc:  # noqa: BLE001 - an erroring test is a failing test
            result, error = None, error_summary(exc)
        except BaseException as exc:
            if not is_rust_panic(exc):
                raise
            result, error = None, f"engine panicked: {exc}"
            engine = build_engine(policy_set)
        passed = error is None and result is not None and result is not False
        outcomes.append(
            TestOutcome(head, passed, False, error, seconds=time.perf_counter() - started)
        )
    return outcomes
