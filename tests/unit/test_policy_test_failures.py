"""`wimse-authz policy test` shows what a failing test saw: each statement of its body
replayed, and the values of the parts of the one that failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import authz.policy.failure_report
from authz.cli import main

POLICY = """package p

import rego.v1

allow if input.y == 1

reasons contains "scope.missing" if input.y != 1

deny := false
"""

TEST_HEADER = "package p_test\n\nimport rego.v1\n\nimport data.p\n\n"


def policy_test_output(
    directory: Path, tests: str, capsys: pytest.CaptureFixture[str], *args: str
) -> str:
    """Write `p.rego` and a `p_test.rego` holding `tests`, run `policy test` on them, and
    return what it printed; every test written here is expected to fail."""
    (directory / "p.rego").write_text(POLICY)
    (directory / "p_test.rego").write_text(TEST_HEADER + tests)
    assert main(["policy", "test", str(directory), *args]) == 1
    return capsys.readouterr().out


def block(output: str, test: str) -> list[str]:
    """The lines printed for one failed test: its FAIL line and the indented ones after."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"FAIL data.p_test.{test} "))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines)
    )
    return lines[start:end]


def test_a_failed_comparison_shows_both_sides_with_earlier_locals_and_with_modifiers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = (
        "test_reasons if {\n"
        '\tinp := {"y": 2}\n'
        "\trs := p.reasons with input as inp\n"
        '\trs == {"policy.denied"}\n'
        "\tcount(rs) == 1\n"
        "}\n"
    )
    out = policy_test_output(tmp_path, tests, capsys)
    assert block(out, "test_reasons") == [
        "FAIL data.p_test.test_reasons (p_test.rego:7)",
        '  line 8: inp := {"y": 2}',
        "  line 9: rs := p.reasons with input as inp",
        '  line 10: rs == {"policy.denied"}   → false',
        '    left  = {"scope.missing"}',
        '    right = {"policy.denied"}',
        "  (not reached: line 11)",
    ]


def test_a_call_compared_shows_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = 'test_count if {\n\tcount(p.reasons) == 2 with input as {"y": 5}\n}\n'
    out = policy_test_output(tmp_path, tests, capsys)
    assert block(out, "test_count")[1:] == [
        '  line 8: count(p.reasons) == 2 with input as {"y": 5}   → false',
        "    left  = 1",
        "    right = 2",
    ]


def test_an_undefined_rule_under_with_input_as_is_shown_undefined(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = policy_test_output(tmp_path, 'test_allow if p.allow with input as {"y": 2}\n', capsys)
    assert block(out, "test_allow")[1:] == [
        '  line 7: p.allow with input as {"y": 2}   → undefined',
        "    p.allow = undefined",
    ]


def test_the_with_modifier_is_applied_when_the_parts_are_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without the modifier `p.allow` would be undefined (there is no input at all).
    tests = 'test_allowed_is_false if {\n\tp.allow == false with input as {"y": 1}\n}\n'
    out = policy_test_output(tmp_path, tests, capsys)
    assert block(out, "test_allowed_is_false")[2:] == ["    left  = true", "    right = false"]


def test_a_failed_not_shows_the_value_that_made_it_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = (
        'test_not if {\n\tnot p.deny\n\tnot p.reasons["scope.missing"] with input as {"y": 3}\n}\n'
    )
    out = policy_test_output(tmp_path, tests, capsys)
    assert block(out, "test_not")[1:] == [
        "  line 8: not p.deny",
        '  line 9: not p.reasons["scope.missing"] with input as {"y": 3}   → false',
        '    p.reasons["scope.missing"] = "scope.missing"',
    ]


def test_a_value_per_solution_when_an_earlier_statement_iterates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = policy_test_output(tmp_path, "test_some if {\n\tsome x in [1, 2]\n\tx > 5\n}\n", capsys)
    assert block(out, "test_some")[2:] == [
        "  line 9: x > 5   → false",
        "    left  = 1 | 2",
        "    right = 5",
    ]


def test_an_erroring_statement_shows_its_error_and_stops_the_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = "test_error if {\n\tx := 0\n\ty := 1 / x\n\ty == 1\n}\n"
    out = policy_test_output(tmp_path, tests, capsys)
    assert block(out, "test_error")[2:] == [
        "  line 9: y := 1 / x   → error: divide by zero",
        "  (not reached: line 10)",
    ]


def test_a_statement_that_cannot_be_replayed_is_named_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The engine orders `x = 1` first when it runs the test; replayed in the written
    # order, `x == 2` uses x before anything binds it.
    tests = "test_order if {\n\tx == 2\n\tx = 1\n}\n\ntest_unify if {\n\t[a, 2] = [1, 3]\n}\n"
    out = policy_test_output(tmp_path, tests, capsys)
    order = block(out, "test_order")
    assert order[1].startswith("  line 8: x == 2   (not re-evaluated: ")
    assert "`x` is unsafe" in order[1]
    assert block(out, "test_unify")[1:] == [
        "  line 13: [a, 2] = [1, 3]   → false",
        "    left  = (not re-evaluated: var a is unsafe)",
        "    right = [1, 3]",
    ]
    assert "PASS: 0/2, FAIL: 2" in out


def test_a_report_that_cannot_be_made_leaves_the_result_standing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*_: object) -> None:
        raise RuntimeError("no AST today")

    monkeypatch.setattr(authz.policy.failure_report, "rule_bodies", unreadable)
    out = policy_test_output(tmp_path, "test_false if false\n", capsys)
    assert block(out, "test_false")[1:] == ["  (not re-evaluated: no AST today)"]
    assert "PASS: 0/1, FAIL: 1" in out


def test_passing_tests_print_nothing_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.rego").write_text(POLICY)
    (tmp_path / "p_test.rego").write_text(
        TEST_HEADER + 'test_allow if p.allow with input as {"y": 1}\n\ntest_not if not p.deny\n'
    )
    assert main(["policy", "test", str(tmp_path), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == [
        "PASS data.p_test.test_allow",
        "PASS data.p_test.test_not",
    ]
    assert lines[2:] == ["-" * 80, "PASS: 2/2"]


def test_replaying_a_test_does_not_print_again(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(POLICY)
    (tmp_path / "p_test.rego").write_text(
        TEST_HEADER + 'test_printed if {\n\tprint("seen")\n\tcount(p.reasons) == 1\n}\n'
    )
    # In a child process: the engine's print() writes to the process's own stderr.
    args = ["policy", "test", str(tmp_path)]
    code = f"import sys\nfrom authz.cli import main\nsys.exit(main({args!r}))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == ["seen"]
    assert "    left  = 0" in result.stdout
