"""Validating a policy set before it serves: compile, find the decision rule, run its tests.

This runs in a separate process (`python -m authz.policy.validation`, the set on stdin, a
JSON report on stdout), so a policy that panics the engine, loops, or exhausts memory takes
down only the validator, never the serving gateway. Only a set that passes is built into
the serving engine.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from authz.errors import ConfigError
from authz.policy.embedded import build_engine, check_rule_defined
from authz.policy.loader import PolicySet
from authz.policy.testing import run_set_tests

_MAX_REPORT_BYTES = 1 << 20
_FAILURES_SHOWN = 20


@dataclass(frozen=True, slots=True)
class ValidationReport:
    ok: bool
    error: str | None = None
    tests_run: int = 0
    tests_failed: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.ok:
            return f"valid ({self.tests_run} Rego tests passed)"
        if self.tests_failed:
            shown = ", ".join(self.tests_failed[:_FAILURES_SHOWN])
            return f"{len(self.tests_failed)}/{self.tests_run} Rego tests failed: {shown}"
        return self.error or "invalid"


def validate(policy_set: PolicySet, decision_rule: str, run_tests: bool) -> ValidationReport:
    """In this process: what the validator process runs."""
    try:
        check_rule_defined(build_engine(policy_set), decision_rule)
        if not run_tests or not policy_set.tests:
            return ValidationReport(ok=True)
        outcomes = [o for o in run_set_tests(policy_set) if not o.skipped]
    except ConfigError as exc:
        return ValidationReport(ok=False, error=str(exc))
    failed = tuple(
        o.rule.path + (f" ({o.error})" if o.error else "") for o in outcomes if not o.passed
    )
    return ValidationReport(
        ok=not failed,
        error=None if not failed else "Rego tests failed",
        tests_run=len(outcomes),
        tests_failed=failed,
    )


def _encode(policy_set: PolicySet, decision_rule: str, run_tests: bool) -> bytes:
    return json.dumps(
        {
            "modules": policy_set.modules,
            "tests": policy_set.tests,
            "data": policy_set.data,
            "revision": policy_set.revision,
            "origin": policy_set.origin,
            "decision": decision_rule,
            "run_tests": run_tests,
        }
    ).encode()


def _decode(payload: dict[str, Any]) -> tuple[PolicySet, str, bool]:
    policy_set = PolicySet(
        modules=tuple((path, text) for path, text in payload["modules"]),
        tests=tuple((path, text) for path, text in payload["tests"]),
        data=payload["data"],
        revision=payload["revision"],
        origin=payload["origin"],
    )
    return policy_set, payload["decision"], bool(payload["run_tests"])


async def validate_in_subprocess(
    policy_set: PolicySet, decision_rule: str, *, run_tests: bool, timeout: float
) -> ValidationReport:
    """Validate in a fresh process; a crash or a timeout is an invalid set."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authz.policy.validation",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(_encode(policy_set, decision_rule, run_tests)), timeout
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        return ValidationReport(ok=False, error=f"validation took longer than {timeout:g} s")
    if process.returncode != 0 or len(stdout) > _MAX_REPORT_BYTES:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        return ValidationReport(
            ok=False,
            error=f"validator exited with {process.returncode}: {' | '.join(tail) or '-'}",
        )
    report = json.loads(stdout)
    return ValidationReport(
        ok=report["ok"],
        error=report["error"],
        tests_run=report["tests_run"],
        tests_failed=tuple(report["tests_failed"]),
    )


def main() -> int:
    policy_set, decision_rule, run_tests = _decode(json.load(sys.stdin))
    report = validate(policy_set, decision_rule, run_tests)
    json.dump(
        {
            "ok": report.ok,
            "error": report.error,
            "tests_run": report.tests_run,
            "tests_failed": report.tests_failed,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
