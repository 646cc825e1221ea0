from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import build_parser, main
from authz.devtools.stack import POLICY_DIR as POLICIES
from authz.devtools.stack import Ports, ensure_identities, gateway_config
from tests.support import GatewayHarness, expect_allowed, hook_engine


def test_keys_generate_writes_a_private_jwk_and_adds_the_public_half_to_a_jwks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks = tmp_path / "issuer.jwks.json"
    for kid in ("k1", "k2"):
        assert (
            main(
                [
                    "keys",
                    "generate",
                    "--alg",
                    "ES256",
                    "--kid",
                    kid,
                    "--out",
                    str(tmp_path / f"{kid}.json"),
                    "--jwks",
                    str(jwks),
                ]
            )
            == 0
        )
    private = json.loads((tmp_path / "k1.json").read_text())
    assert private["kid"] == "k1"
    assert "d" in private
    assert (tmp_path / "k1.json").stat().st_mode & 0o077 == 0, "private keys are not world-readable"
    public = json.loads(jwks.read_text())["keys"]
    assert [k["kid"] for k in public] == ["k1", "k2"]
    assert all("d" not in k for k in public)
    assert "wrote" in capsys.readouterr().out


def test_minted_tokens_from_the_cli_are_accepted_by_the_gateway(
    harness: GatewayHarness, identity_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = identity_dir / "keys"
    harness.clock.now = time.time()  # the CLI mints at wall-clock time
    assert (
        main(
            [
                "token",
                "mint",
                "wit",
                "--issuer-key",
                str(keys / "issuer.jwk.json"),
                "--sub",
                "spiffe://demo.example/frontend",
                "--workload-key",
                str(keys / "frontend.jwk.json"),
            ]
        )
        == 0
    )
    wit = capsys.readouterr().out.strip()
    wit_file = identity_dir / "frontend.wit"
    wit_file.write_text(wit)
    assert (
        main(
            [
                "token",
                "mint",
                "wpt",
                "--workload-key",
                str(keys / "frontend.jwk.json"),
                "--wit",
                f"@{wit_file}",
                "--aud",
                "https://echo.demo.example/api/hello",
            ]
        )
        == 0
    )
    wpt = capsys.readouterr().out.strip()
    verdict = harness.check_path(
        "/api/hello", {"workload-identity-token": wit, "authorization": f"WPT {wpt}"}
    )
    expect_allowed(verdict)


def _mint(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    assert main(["token", "mint", *arguments]) == 0
    return capsys.readouterr().out.strip()


def test_minted_context_tokens_from_the_cli_reach_the_policy_input(
    harness: GatewayHarness, identity_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = identity_dir / "keys"
    harness.clock.now = time.time()  # the CLI mints at wall-clock time
    txn = _mint(
        capsys,
        *("txn", "--tts-key", str(keys / "tts.jwk.json"), "--aud", "demo.example"),
        *("--req-wl", "spiffe://demo.example/frontend", "--sub", "alice", "--scope", "checkout"),
        *("--tctx", '{"amount": 250}', "--act", '{"sub": "spiffe://demo.example/orders"}'),
    )
    ear = _mint(
        capsys,
        *("ear", "--verifier-key", str(keys / "verifier.jwk.json")),
        *("--sub", "spiffe://demo.example/frontend"),
        *("--submod", "platform=affirming:hardware=2,executables=2", "--submod", "tee=warning"),
    )
    user = _mint(
        capsys,
        *("user", "--issuer-key", str(keys / "idp.jwk.json"), "--iss", "https://idp.demo.example"),
        *("--sub", "alice", "--aud", "https://api.demo.example", "--role", "customer"),
    )
    captured: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        captured.append(document)

    hook_engine(harness.gateway.pipeline, record)
    wit = harness.wit()
    context = {"txn-token": txn, "x-user-token": user, "x-attestation-result": ear}
    wpt = harness.wpt(
        wit, txn_token=txn, other_tokens={k: v for k, v in context.items() if k != "txn-token"}
    )
    headers = {"workload-identity-token": wit, "authorization": f"WPT {wpt}", **context}
    expect_allowed(harness.check_path("/api/hello", headers))
    wimse = captured[-1]["wimse"]
    assert (wimse["txn"]["sub"], wimse["txn"]["tctx"]) == ("alice", {"amount": 250})
    assert wimse["txn"]["act"] == {"sub": "spiffe://demo.example/orders"}
    assert wimse["user"]["token"]["roles"] == ["customer"]
    assert wimse["attestation"]["status"] == "warning"
    submods = wimse["attestation"]["results"][0]["submods"]
    assert submods["platform"]["trustworthiness"] == {"hardware": 2, "executables": 2}


def test_config_check_loads_keys_and_policies(
    identity_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_identities(identity_dir)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(gateway_config(identity_dir, Ports(1, 2, 3, 4))))
    assert main(["config", "check", "--config", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_config_errors_exit_2_with_the_key_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("server: {listeners: []}\n")
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "server.listeners" in capsys.readouterr().err


def test_serving_path_never_imports_the_dev_issuer() -> None:
    code = (
        "import sys, authz.server.app, authz.gateway, authz.cli;"
        "leaked = [m for m in sys.modules if m.startswith('authz.devtools')];"
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_check_refuses_a_policy_whose_rego_tests_fail(
    identity_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_identities(identity_dir)
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "authz.rego").write_text(
        'package envoy.authz\n\nimport rego.v1\n\ndecision := {"allowed": false}\n'
    )
    (policy / "authz_test.rego").write_text(
        "package envoy.authz_test\n\nimport rego.v1\n\n"
        "test_allows if data.envoy.authz.decision.allowed\n"
    )
    overrides = {"policy": {"directory": str(policy), "decision": "envoy/authz/decision"}}
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(gateway_config(identity_dir, Ports(1, 2, 3, 4), overrides=overrides))
    )
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "1/1 Rego tests failed: data.envoy.authz_test.test_allows" in capsys.readouterr().err


def test_a_signed_bundle_built_by_the_cli_serves_from_a_bundle_file(
    identity_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ensure_identities(identity_dir)
    key = tmp_path / "signer.jwk.json"
    jwks = tmp_path / "signer.jwks.json"
    assert (
        main(["keys", "generate", "--kid", "signer-1", "--out", str(key), "--jwks", str(jwks)]) == 0
    )
    bundle = tmp_path / "authz.tar.gz"
    policies = Path(__file__).resolve().parents[2] / "policies"
    assert (
        main(
            [
                "policy",
                "bundle",
                str(policies),
                "--out",
                str(bundle),
                "--revision",
                "2026-11-23.1",
                "--signing-key",
                str(key),
            ]
        )
        == 0
    )
    assert "revision 2026-11-23.1, signed by key signer-1" in capsys.readouterr().out
    signing = {"keys": {"signer-1": {"algorithms": ["ES256"], "jwks_file": str(jwks)}}}
    overrides = {"policy": {"directory": None, "bundle": {"file": str(bundle), "signing": signing}}}
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(gateway_config(identity_dir, Ports(1, 2, 3, 4), overrides=overrides))
    )
    assert main(["config", "check", "--config", str(path)]) == 0
    assert "policy revision 2026-11-23.1" in capsys.readouterr().out

    unsigned = {"policy": {"directory": None, "bundle": {"file": str(bundle)}}}
    path.write_text(
        yaml.safe_dump(gateway_config(identity_dir, Ports(1, 2, 3, 4), overrides=unsigned))
    )
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "the bundle is signed, but no bundle signing keys are configured" in (
        capsys.readouterr().err
    )


def test_keys_thumbprint_prints_each_keys_rfc7638_thumbprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, public_key_from_jwk
    from authz.devtools.keys import generate_private_jwk, public_jwk

    private = generate_private_jwk("ES256", kid="issuer-1")
    expected = public_key_from_jwk(public_jwk(private), SUPPORTED_ALGORITHMS).thumbprint
    key_file, jwks_file = tmp_path / "key.jwk.json", tmp_path / "trust.jwks.json"
    key_file.write_text(json.dumps(private), encoding="utf-8")
    jwks_file.write_text(json.dumps({"keys": [public_jwk(private)]}), encoding="utf-8")
    for path in (key_file, jwks_file):
        assert main(["keys", "thumbprint", str(path)]) == 0
        assert capsys.readouterr().out == f"{expected}  kid=issuer-1\n"


def test_keys_thumbprint_of_a_file_that_is_no_key_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "not-a-key.json"
    path.write_text('{"kty": "oct", "k": "c2VjcmV0"}', encoding="utf-8")
    assert main(["keys", "thumbprint", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("wimse-authz: keys thumbprint:")
    assert error.count("\n") == 1
    assert main(["keys", "thumbprint", str(tmp_path / "missing.json")]) == 2


def run_cli(*args: str, stdout_closed: bool = False) -> subprocess.CompletedProcess[str]:
    """`wimse-authz args…` in a child process; `stdout_closed`: its output goes into a pipe
    nobody reads any more (as `… | head -1` leaves it)."""
    prelude = "import os, sys\n"
    if stdout_closed:
        prelude += "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
    code = prelude + f"from authz.cli import main\nsys.exit(main({list(args)!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def mint_wit_with_keys(key: Path) -> tuple[str, ...]:
    """`token mint wit` with `key` as both the issuer's and the workload's key file."""
    keys = ("--issuer-key", str(key), "--workload-key", str(key))
    return ("token", "mint", "wit", "--sub", "spiffe://a/b", *keys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "generate", "--alg", "HS256", "--out", "k.json"), "invalid choice: 'HS256'"),
        (
            (
                "token",
                "mint",
                "wit",
                "--issuer-key",
                "/no/such/issuer.json",
                "--sub",
                "spiffe://a/b",
                "--workload-key",
                "/no/such/key.json",
            ),
            "/no/such/issuer.json: no such file",
        ),
        (
            mint_wit_with_keys(POLICIES / "README.md"),
            "README.md: not a JSON document",
        ),
        (
            mint_wit_with_keys(POLICIES),
            "Is a directory",
        ),
    ],
)
def test_a_users_mistake_is_one_line_and_a_non_zero_exit(
    args: tuple[str, ...], message: str
) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # One line says what is wrong (argparse puts its usage line before it).
    assert message in result.stderr.strip().splitlines()[-1]


def test_output_into_a_pipe_nobody_reads_is_not_an_error() -> None:
    result = run_cli("policy", "test", str(POLICIES), stdout_closed=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


def test_version_and_a_description_that_is_not_cut_off() -> None:
    assert run_cli("-V").stdout.startswith("wimse-authz ")
    help_text = " ".join(run_cli("--help").stdout.split())
    assert "send a check to a running gateway, mint dev keys and tokens, demo." in help_text


def every_option() -> list[tuple[str, argparse.Action]]:
    """(command path, action) for every option and argument of every command."""
    found: list[tuple[str, argparse.Action]] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.help != argparse.SUPPRESS and action.dest != "help":
                found.append((path, action))

    walk(build_parser(), "wimse-authz")
    return found


def test_every_option_has_help_and_says_its_default() -> None:
    missing = [f"{path} {a.option_strings or a.dest}" for path, a in every_option() if not a.help]
    assert missing == []
    silent = [
        f"{path} {action.option_strings}"
        for path, action in every_option()
        if action.default not in (None, False, argparse.SUPPRESS, [], "")
        and action.option_strings
        and "default" not in (action.help or "")
        and str(action.default) not in (action.help or "")
        and not isinstance(action, argparse._VersionAction)
    ]
    assert silent == []


def test_policy_test_runs_only_the_tests_run_selects(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(POLICIES), "--run", r"egress_test\.", "-v"]) == 0
    out = capsys.readouterr().out
    passed = [line for line in out.splitlines() if line.startswith("PASS data.")]
    assert passed
    assert all(".egress_test." in line for line in passed)
    assert main(["policy", "test", str(POLICIES), "--run", "("]) == 2


def test_print_in_a_rego_test_goes_to_stderr(tmp_path: Path) -> None:
    (tmp_path / "p_test.rego").write_text(
        'package p_test\n\nimport rego.v1\n\ntest_it if {\n\tprint("seen:", 42)\n}\n'
    )
    result = run_cli("policy", "test", str(tmp_path))
    assert result.returncode == 0
    assert "seen: 42" in result.stderr
    assert "seen: 42" not in result.stdout


def test_policy_test_coverage_names_the_lines_no_test_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.rego").write_text(
        "package p\n\nimport rego.v1\n\nx if input.y == 1\n\nz if {\n\tinput.y == 2\n\ttrue\n}\n"
    )
    (tmp_path / "p_test.rego").write_text(
        "package p_test\n\nimport rego.v1\n\nimport data.p\n\n"
        'test_x if p.x with input as {"y": 1}\n'
    )
    assert main(["policy", "test", str(tmp_path), "--coverage"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.endswith("p.rego") or "p.rego " in line)
    assert "not run: 9" in line
    assert "p_test.rego" not in out.split("coverage")[1]
