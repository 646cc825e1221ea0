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


def kubelet_configmap_volume(root: Path, files: dict[str, str]) -> None:
    """A ConfigMap volume as the kubelet writes it: the files in a `..<timestamp>` directory,
    `..data` linking to it, and each visible name linking through `..data`."""
    stamped = root / "..2026_12_06_05_00_00.123456789"
    stamped.mkdir(parents=True)
    for name, text in files.items():
        (stamped / name).write_text(text, encoding="utf-8")
    (root / "..data").symlink_to(stamped.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")


def test_a_configmap_volume_is_loaded_once_not_with_the_kubelets_hidden_copy(
    tmp_path: Path,
) -> None:
    """The kubelet keeps every file twice under the volume's root; reading the hidden copy
    too made every module and test appear twice, and the gateway refused to start."""
    module = "package demo\n\nimport rego.v1\n\nallow := true\n"
    test = "package demo_test\n\nimport rego.v1\n\ntest_allow if data.demo.allow\n"
    kubelet_configmap_volume(tmp_path, {"demo.rego": module, "demo_test.rego": test})
    policy_set = load_policy_set(tmp_path)
    assert [path for path, _ in policy_set.modules] == ["demo.rego"]
    assert [path for path, _ in policy_set.tests] == ["demo_test.rego"]
    assert main(["policy", "test", str(tmp_path)]) == 0


def test_hidden_files_and_directories_are_not_policy(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text("package a\n\nimport rego.v1\n\nx := 1\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "old.rego").write_text("package a\n\nimport rego.v1\n\nx := 2\n")
    (tmp_path / ".#a.rego").write_text("package a\n\nimport rego.v1\n\nx := 3\n")
    assert [path for path, _ in load_policy_set(tmp_path).modules] == ["a.rego"]
