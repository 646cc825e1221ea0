from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.cli import main
from authz.errors import ConfigError
from authz.policy.loader import load_policy_set
from authz.policy.testing import run_policy_tests

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_modules_and_data_are_loaded_at_their_directory_paths(tmp_path: Path) -> None:
    write(tmp_path / "a.rego", "package a\n")
    write(tmp_path / "a_test.rego", "package a_test\n")
    write(tmp_path / "data.json", json.dumps({"root": 1}))
    write(tmp_path / "acl" / "teams" / "data.yaml", "owners: [alice]\n")
    policy_set = load_policy_set(tmp_path)
    assert [path for path, _ in policy_set.modules] == ["a.rego"]
    assert policy_set.data == {"root": 1, "acl": {"teams": {"owners": ["alice"]}}}
    assert [path for path, _ in policy_set.tests] == ["a_test.rego"]
    assert [path for path, _ in policy_set.with_tests()] == ["a.rego", "a_test.rego"]


def test_revision_changes_with_any_loaded_file(tmp_path: Path) -> None:
    write(tmp_path / "a.rego", "package a\n")
    first = load_policy_set(tmp_path).revision
    assert load_policy_set(tmp_path).revision == first
    write(tmp_path / "x" / "data.json", "{}")
    assert load_policy_set(tmp_path).revision != first


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "holds no .rego"),
        ({"a.rego": "package a", "data.json": "[1]"}, "must hold a JSON object"),
        ({"a.rego": "package a", "data.json": "{bad"}, "cannot parse"),
        ({"a.rego": "package a", "data.json": '{"k": 1}', "k/data.json": "{}"}, "collides"),
        (
            {"a.rego": "package a", "data.json": '{"x": {"y": 1}}', "x/data.json": '{"y": 2}'},
            "defined twice",
        ),
    ],
)
def test_broken_policy_directories_are_config_errors(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_policy_set(tmp_path)


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy_set(tmp_path / "nope")


TESTS = """
package t_test
import rego.v1
test_passes if { true }
test_fails if { false }
test_undefined if { input.nothing }
test_errors if { 1 / 0 }
todo_test_later if { false }
"""


def test_runner_reports_pass_fail_error_and_skip(tmp_path: Path) -> None:
    write(tmp_path / "t_test.rego", TESTS)
    outcomes = {o.rule.name: o for o in run_policy_tests(tmp_path)}
    assert outcomes["test_passes"].passed
    assert not outcomes["test_fails"].passed
    assert not outcomes["test_undefined"].passed
    assert not outcomes["test_errors"].passed
    assert outcomes["test_errors"].error is not None
    assert outcomes["todo_test_later"].skipped


def test_policy_test_command_exits_non_zero_on_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "t_test.rego", TESTS)
    assert main(["policy", "test", str(tmp_path)]) == 1
    output = capsys.readouterr().out
    assert "FAIL data.t_test.test_fails" in output
    assert "PASS: 1/4, FAIL: 3" in output


def test_policy_test_command_passes_on_the_shipped_policies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["policy", "test", str(REPO / "policies")]) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_policy_test_command_fails_when_there_are_no_tests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "a.rego", "package a\n")
    assert main(["policy", "test", str(tmp_path)]) == 1
    assert "no Rego tests" in capsys.readouterr().out
