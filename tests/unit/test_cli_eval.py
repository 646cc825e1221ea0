"""`wimse-authz policy eval`: one decision for one input file, as the gateway would decide."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main
from authz.devtools.stack import Ports, gateway_config
from tests.support import ORIGIN, GatewayHarness, expect_allowed, expect_denied, hook_engine

DECISION_POLICY = """
package gate

import rego.v1

default allowed := false

allowed if input.user in data.acl.users

reasons contains "not_listed" if not allowed

decision := {
    "allowed": allowed,
    "reasons": reasons,
    "headers": {"x-checked-by": "gate"},
    "request_headers_to_remove": ["x-debug"],
    "http_status": 429,
    "body": "no tea",
    "dynamic_metadata": {"tags": {"b", "a"}},
} if not allowed

decision := {"allowed": true, "headers": {"x-checked-by": "gate"}} if allowed

only_for_admins if input.user == "admin"

invalid := {"allowed": true, "headers": {"x-wimse-caller": "spiffe://forged.example/x"}}

broken := object.get(input.user, "a", 1)
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policy"
    (directory / "acl").mkdir(parents=True)
    (directory / "gate.rego").write_text(DECISION_POLICY)
    (directory / "acl" / "data.json").write_text(json.dumps({"users": ["alice"]}))
    return directory


def write_input(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(document))
    return path


def evaluate(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """`policy eval` of these tests' own policy (`gate`), whose inputs are not the
    gateway's: no check against the gateway's input schema."""
    code = main(["policy", "eval", "--no-schema-check", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_allowed_decision_exits_0_and_shows_the_headers_it_sets(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = evaluate(
        capsys,
        *("--policy", str(policy_dir), "--decision", "gate/decision"),
        *("--input", str(write_input(tmp_path, {"user": "alice"}))),
    )
    assert code == 0
    assert out.startswith("ALLOW (data.gate.decision, policy revision ")
    assert "  x-checked-by: gate" in out


def test_denied_decision_exits_1_with_status_reasons_body_and_metadata(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = evaluate(
        capsys,
        *("--policy", str(policy_dir), "--decision", "data.gate.decision"),
        *("--input", str(write_input(tmp_path, {"user": "mallory"}))),
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("DENY (data.gate.decision")
    assert "http_status: 429" in lines
    assert "reasons: not_listed" in lines
    assert "request_headers_to_remove: x-debug" in lines
    assert "body: no tea" in lines
    assert 'dynamic_metadata: {"tags": ["a", "b"]}' in lines


def test_json_output_is_the_validated_decision_and_the_raw_result(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = evaluate(
        capsys,
        *("--policy", str(policy_dir), "--decision", "gate/decision", "--json"),
        *("--input", str(write_input(tmp_path, {"user": "mallory"}))),
    )
    assert code == 1
    document = json.loads(out)
    assert document["allowed"] is False
    assert document["defined"] is True
    assert document["http_status"] == 429
    assert document["headers"] == [["x-checked-by", "gate"]]
    assert document["dynamic_metadata"] == {"tags": ["a", "b"]}
    assert document["result"]["reasons"] == ["not_listed"], "Rego sets become JSON lists"


def test_undefined_decision_is_a_denial_that_says_undefined(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    input_file = str(write_input(tmp_path, {"user": "alice"}))
    arguments = ("--policy", str(policy_dir), "--decision", "gate/only_for_admins")
    code, out, _ = evaluate(capsys, *arguments, "--input", input_file)
    assert code == 1
    assert out.startswith("DENY (undefined: data.gate.only_for_admins has no value")
    code, out, _ = evaluate(capsys, *arguments, "--input", input_file, "--json")
    assert code == 1
    assert json.loads(out)["defined"] is False


def test_input_is_read_from_stdin_when_given_as_dash(
    policy_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"user": "alice"}'))
    code, out, _ = evaluate(
        capsys, "--policy", str(policy_dir), "--decision", "gate/decision", "--input", "-"
    )
    assert (code, out.split()[0]) == (0, "ALLOW")


def test_default_decision_rule_is_envoy_authz_allow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "envoy"
    directory.mkdir()
    (directory / "authz.rego").write_text(
        'package envoy.authz\nimport rego.v1\nallow if input.method == "GET"\n'
    )
    code, out, _ = evaluate(
        capsys,
        *("--policy", str(directory), "--input", str(write_input(tmp_path, {"method": "GET"}))),
    )
    assert code == 0
    assert out.startswith("ALLOW (data.envoy.authz.allow,")


def test_data_file_is_merged_over_the_policy_data(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = tmp_path / "more.yaml"
    overlay.write_text(yaml.safe_dump({"acl": {"users": ["mallory"]}}))
    input_file = str(write_input(tmp_path, {"user": "mallory"}))
    arguments = ("--policy", str(policy_dir), "--decision", "gate/decision", "--input", input_file)
    assert evaluate(capsys, *arguments)[0] == 1
    assert evaluate(capsys, *arguments, "--data", str(overlay))[0] == 0


def test_the_harness_config_decides_a_captured_gateway_input_as_the_gateway_did(
    harness: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        inputs.append(document)

    hook_engine(harness.gateway.pipeline, record)
    expect_allowed(harness.check_path("/api/hello", harness.signed_headers()))
    harness.check_path("/admin/x", harness.signed_headers("/admin/x"))
    config = tmp_path / "gateway.yaml"
    document = gateway_config(harness.directory, Ports(443, 1, 2, 3), origins=[ORIGIN])
    config.write_text(yaml.safe_dump(document))

    allowed = write_input(tmp_path, inputs[0])
    code, out, _ = evaluate(capsys, "--config", str(config), "--input", str(allowed))
    assert code == 0
    assert out.startswith("ALLOW (data.envoy.authz.decision,")
    denied = write_input(tmp_path, inputs[1])
    code, out, _ = evaluate(capsys, "--config", str(config), "--input", str(denied), "--json")
    assert code == 1
    assert json.loads(out)["reasons"], "the sample policy says why it denied"


def test_a_bundle_config_needs_an_explicit_policy_directory(
    harness: GatewayHarness, policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = gateway_config(
        harness.directory,
        Ports(443, 1, 2, 3),
        origins=[ORIGIN],
        overrides={"policy": {"directory": None, "bundle": {"file": "policy.tar.gz"}}},
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(document))
    input_file = str(write_input(tmp_path, {"user": "alice"}))
    code, _, err = evaluate(capsys, "--config", str(config), "--input", input_file)
    assert code == 2
    assert "bundle" in err
    assert "--policy DIR" in err
    code, out, _ = evaluate(
        capsys,
        *("--config", str(config), "--policy", str(policy_dir), "--decision", "gate/decision"),
        *("--input", input_file),
    )
    assert (code, out.split()[0]) == (0, "ALLOW")


def test_engine_errors_exit_2_with_the_engines_message(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = evaluate(
        capsys,
        *("--policy", str(policy_dir), "--decision", "gate/broken"),
        *("--input", str(write_input(tmp_path, {"user": "not-a-number"}))),
    )
    assert code == 2
    assert out == ""
    assert "evaluating data.gate.broken failed" in err
    assert "gate.rego:" in err, "with the engine's pointer into the source"
    assert '"not-a-number"' in err, "the author's own input is shown, not redacted"


def test_a_decision_setting_a_gateway_header_is_an_error_not_an_allow(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = evaluate(
        capsys,
        *("--policy", str(policy_dir), "--decision", "gate/invalid"),
        *("--input", str(write_input(tmp_path, {"user": "alice"}))),
    )
    assert code == 2
    assert "ALLOW" not in out
    assert "policy.invalid_decision" in err
    assert "x-wimse-caller" in err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("bad_json", "not JSON"),
        ("missing_input", "cannot read"),
        ("bad_rule", "expected a rule path"),
        ("undefined_rule", "is not defined by any loaded policy"),
        ("no_policy", "--policy DIR"),
        ("syntax_error", "does not compile"),
    ],
)
def test_input_rule_and_policy_errors_exit_2_with_a_clear_message(
    setup: str,
    message: str,
    policy_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    input_file = write_input(tmp_path, {"user": "alice"})
    arguments = ["--policy", str(policy_dir), "--decision", "gate/decision"]
    if setup == "bad_json":
        input_file.write_text("{not json")
    elif setup == "missing_input":
        input_file = tmp_path / "absent.json"
    elif setup == "bad_rule":
        arguments[-1] = "gate/decision!"
    elif setup == "undefined_rule":
        arguments[-1] = "gate/nothing_here"
    elif setup == "no_policy":
        arguments = []
    elif setup == "syntax_error":
        (policy_dir / "broken.rego").write_text("package broken\nallow if {\n")
    code, out, err = evaluate(capsys, *arguments, "--input", str(input_file))
    assert code == 2
    assert out == ""
    assert message in err


def test_an_input_of_the_wrong_shape_is_named_not_silently_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default an input is checked against the gateway's published schema first."""
    document = {"attributes": {}, "parsed_path": "api/hello", "wimse": {"caller": "frontend"}}
    path = write_input(tmp_path, document)
    code = main(["policy", "eval", "--policy", "policies", "--input", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "is not a policy input (docs/policy-input.md" in err
    assert "  /parsed_path: 'api/hello' is not of type 'array'" in err
    assert "Traceback" not in err


def test_a_decision_log_input_replays_to_the_same_decision(
    harness: GatewayHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop docs/operations.md describes: a logged input (include_input) evaluated again
    with `policy eval` passes the schema check and decides as the gateway did."""
    decisions = tmp_path / "decisions.jsonl"
    logged = harness.rebuild(decision_log={"output": str(decisions), "include_input": True})
    expect_allowed(logged.check_path("/api/hello", logged.signed_headers()))
    expect_denied(
        logged.check_path("/admin/users", logged.signed_headers("/admin/users")), "policy.denied"
    )
    logged.gateway.runtime.close()
    lines = [json.loads(line) for line in decisions.read_text().splitlines()]
    for line, expected in zip(lines, (0, 1), strict=True):
        path = write_input(tmp_path, line["input"])
        code = main(
            [
                "policy",
                "eval",
                "--policy",
                str(Path(__file__).parents[2] / "policies"),
                "--decision",
                "envoy/authz/decision",
                "--input",
                str(path),
            ]
        )
        assert code == expected, capsys.readouterr()


def test_explain_lists_the_rules_the_decision_was_made_from(
    policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = evaluate(
        capsys,
        *("--policy", str(policy_dir), "--decision", "gate/decision", "--explain"),
        *("--input", str(write_input(tmp_path, {"user": "mallory"}))),
    )
    assert code == 1
    assert "rules of data.gate defined for this input:" in out
    assert "  allowed = false" in out
    assert '  reasons = ["not_listed"]' in out
    assert "only_for_admins" not in out  # undefined for mallory: not listed
