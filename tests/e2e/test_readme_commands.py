"""Every `wimse-authz` command README.md shows works as shown.

Each command of README.md's code blocks has a case here, keyed by the command as printed
(continuation lines joined, comment removed): a new or changed command without one fails
`test_every_readme_command_has_a_case`, naming it. The cases run the command in a working
directory laid out as after `make run` (`.demo/` with the demo's keys and configuration)
plus the files the commands name: `gateway.yaml` (the demo's), `egress-envoy.yaml` (its
egress Envoy), `envoy.yaml` (`deploy/envoy/gateway-mtls.yaml`), `input.json` (a policy
input the gateway built), `policies/` and `k.jwk.json`. `serve` is started, waited for
until healthy, and stopped. The `check` example needs a running demo: test_demo runs it
against one, and the case here pins that it is this command that test_demo runs.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.cli import build_parser
from authz.config import worker_address
from authz.devtools.demo import write_demo_files
from authz.devtools.keys import generate_private_jwk
from authz.devtools.stack import (
    REPO_ROOT,
    TRUST_DOMAIN,
    Identities,
    Ports,
    free_port,
    free_ports_in_a_row,
    wait_for_http,
)
from tests.e2e.markdown_commands import fenced_commands, inline_commands
from tests.e2e.stack import wait_for_gateway
from tests.e2e.test_demo import readme_check_command
from tests.support import GatewayHarness, expect_allowed, hook_engine

pytestmark = pytest.mark.e2e

README = (REPO_ROOT / "README.md").read_text()
PROGRAM = "wimse-authz"
FRONTEND = f"spiffe://{TRUST_DOMAIN}/frontend"


@dataclass(frozen=True, slots=True)
class Workspace:
    """A working directory set up so README's commands can succeed in it."""

    directory: Path
    gateway_port: int
    """The gateway's TCP listener; the port after it is free too (`--workers 2`)."""
    diagnostics_port: int

    def shell(self, command: str) -> str:
        """`command` as bash runs it here: `wimse-authz` is this interpreter's package."""
        assert command.startswith(f"{PROGRAM} ")
        return f"{shlex.quote(sys.executable)} -m authz{command.removeprefix(PROGRAM)}"

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.shell(command)],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def succeeds(self, command: str) -> str:
        """Run `command`; assert it exits 0 without a traceback; its output."""
        result = self.run(command)
        assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    @contextmanager
    def serving(self, command: str) -> Iterator[subprocess.Popen[bytes]]:
        """`command` running in the background; SIGTERM when the block ends, and it must
        then exit 0."""
        log_path = self.directory / f"serve-{free_port()}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {self.shell(command)}"],
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield process
        except Exception:
            process.kill()
            process.wait()
            raise AssertionError(f"{command}\n{log_path.read_text(errors='replace')}") from None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        assert code == 0, f"{command} exited {code}\n{log_path.read_text(errors='replace')}"


def _captured_policy_input(identity_dir: Path, identities: Identities) -> dict[str, Any]:
    """The policy input the gateway builds for the frontend's GET /api/hello."""
    harness = GatewayHarness(identity_dir, identities)
    inputs: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        inputs.append(document)

    hook_engine(harness.gateway.pipeline, record)
    expect_allowed(harness.check_path("/api/hello", harness.signed_headers()))
    return inputs[0]


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, identity_dir: Path, identities: Identities
) -> Workspace:
    directory = tmp_path_factory.mktemp("readme")
    gateway_port = free_ports_in_a_row(2)
    diagnostics_port = free_port()
    # No Envoy runs: its port only makes the origins README's URLs name (127.0.0.1:10000).
    ports = Ports(envoy=10000, admin=10001, gateway=gateway_port, upstream=free_port())
    demo = write_demo_files(
        directory / ".demo",
        ports,
        diagnostics_port=diagnostics_port,
        egress_port=free_port(),
        edge_port=free_port(),
    )
    shutil.copy(demo.gateway, directory / "gateway.yaml")
    shutil.copy(demo.egress, directory / "egress-envoy.yaml")
    shutil.copy(REPO_ROOT / "deploy" / "envoy" / "gateway-mtls.yaml", directory / "envoy.yaml")
    (directory / "policies").symlink_to(REPO_ROOT / "policies")
    document = _captured_policy_input(identity_dir, identities)
    (directory / "input.json").write_text(json.dumps(document, indent=2))
    signer = generate_private_jwk("ES256", kid="bundle-signer")
    (directory / "k.jwk.json").write_text(json.dumps(signer))
    return Workspace(directory, gateway_port, diagnostics_port)


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compact JWS's header and claims (not verified: the gateway's tests do that)."""
    header, claims, signature = token.strip().split(".")
    assert signature

    def decode(part: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        )
        return decoded

    return decode(header), decode(claims)


# --- the cases, one per README command ------------------------------------------------------


def serves(workspace: Workspace, command: str) -> None:
    workers = int(match[1]) if (match := re.search(r"--workers (\d+)", command)) else 1
    listener = f"127.0.0.1:{workspace.gateway_port}"
    with workspace.serving(command):
        for index in range(workers):
            wait_for_gateway(worker_address(listener, index) if workers > 1 else listener, 60)
        wait_for_http(f"http://127.0.0.1:{workspace.diagnostics_port}/readyz", timeout=30)


def checks_the_configuration(workspace: Workspace, command: str) -> None:
    assert workspace.succeeds(command).startswith("gateway.yaml: OK — 1 trust domain(s)")


def checks_the_egress_envoy(workspace: Workspace, command: str) -> None:
    out = workspace.succeeds(command)
    assert out.startswith("egress-envoy.yaml: OK — every egress route sends to its callee")


def validates_the_envoy_config(workspace: Workspace, command: str) -> None:
    out = workspace.succeeds(command)
    assert out.startswith("envoy.yaml: OK"), out
    if not Path("/etc/envoy/wimse-authz/ca.pem").exists():
        assert "replaced by throwaway ones: /etc/envoy/wimse-authz/envoy.pem" in out


def runs_the_rego_tests(workspace: Workspace, command: str) -> None:
    out = workspace.succeeds(command)
    assert re.search(r"^PASS: (\d+)/\1$", out, re.MULTILINE), out


def evaluates_one_decision(workspace: Workspace, command: str) -> None:
    out = workspace.succeeds(command)
    assert out.startswith("ALLOW (data.envoy.authz.decision, policy revision "), out


def builds_a_bundle(workspace: Workspace, command: str) -> None:
    out = workspace.succeeds(command)
    signed = "signed by key bundle-signer" if "--signing-key" in command else "unsigned"
    assert re.fullmatch(rf"wrote authz\.tar\.gz: \d+ bytes, revision r42, {signed}\n", out), out
    assert (workspace.directory / "authz.tar.gz").stat().st_size > 0


def is_the_check_test_demo_runs(workspace: Workspace, command: str) -> None:
    """test_demo runs README's `check` example against a running demo: this one."""
    ran = readme_check_command({"gateway": 9191, "envoy": 10000}, Path(".demo"))
    assert " ".join(ran.replace("\\\n", " ").split()) == workspace.shell(command)


def generates_a_key(workspace: Workspace, command: str) -> None:
    out = workspace.succeeds(command)
    private = json.loads((workspace.directory / "issuer.jwk.json").read_text())
    assert out == f"wrote issuer.jwk.json (alg ES256, kid {private['kid']})\n"
    jwks = json.loads((workspace.directory / "trust.jwks.json").read_text())
    public = next(key for key in jwks["keys"] if key["kid"] == private["kid"])
    assert "d" not in public


def mints_a_wit(workspace: Workspace, command: str) -> None:
    assert workspace.succeeds(command) == ""  # the WIT goes to wit.jwt
    header, claims = jwt_parts((workspace.directory / "wit.jwt").read_text())
    assert header["typ"] == "wit+jwt"
    assert claims["sub"] == FRONTEND
    assert claims["cnf"]["jwk"]["kty"]


def mints_a_wpt(workspace: Workspace, command: str) -> None:
    # The WIT it names (@wit.jwt) is the one README's line above writes.
    [mint_wit] = [
        c for c in fenced_commands(README, PROGRAM) if c.startswith("wimse-authz token mint wit ")
    ]
    workspace.succeeds(mint_wit)
    header, claims = jwt_parts(workspace.succeeds(command))
    assert header["typ"] == "wpt+jwt"
    assert claims["aud"] == "http://127.0.0.1:10000/api/hello"
    assert claims["wth"]


def mints_a_txn_token(workspace: Workspace, command: str) -> None:
    header, claims = jwt_parts(workspace.succeeds(command))
    assert header["typ"] == "txntoken+jwt"
    assert (claims["aud"], claims["req_wl"], claims["sub"], claims["scope"]) == (
        TRUST_DOMAIN,
        FRONTEND,
        "user-4711",
        "checkout",
    )


def mints_an_attestation_result(workspace: Workspace, command: str) -> None:
    _, claims = jwt_parts(workspace.succeeds(command))
    assert claims["sub"] == FRONTEND
    assert claims["submods"]["platform"] == {
        "ear_status": "affirming",
        "ear_trustworthiness_vector": {"hardware": 2},
    }


def mints_a_user_token(workspace: Workspace, command: str) -> None:
    header, claims = jwt_parts(workspace.succeeds(command))
    assert header["typ"] == "at+jwt"
    assert (claims["iss"], claims["sub"], claims["aud"]) == (
        "https://idp.demo.example",
        "alice",
        "https://api.demo.example",
    )


CASES: dict[str, Callable[[Workspace, str], None]] = {
    "wimse-authz serve --config gateway.yaml": serves,
    "wimse-authz serve --config gateway.yaml --workers 2": serves,
    "wimse-authz config check --config gateway.yaml": checks_the_configuration,
    "wimse-authz config check-egress --config gateway.yaml egress-envoy.yaml": (
        checks_the_egress_envoy
    ),
    "wimse-authz config check-envoy envoy.yaml": validates_the_envoy_config,
    "wimse-authz policy test policies": runs_the_rego_tests,
    "wimse-authz policy eval --config gateway.yaml --input input.json": evaluates_one_decision,
    "wimse-authz policy bundle policies --out authz.tar.gz --revision r42": builds_a_bundle,
    "wimse-authz policy bundle policies --out authz.tar.gz --revision r42 "
    "--signing-key k.jwk.json": builds_a_bundle,
    "wimse-authz check --gateway 127.0.0.1:9191 --url http://127.0.0.1:10000/api/hello "
    "--issuer-key .demo/keys/issuer.jwk.json --sub spiffe://demo.example/frontend "
    "--workload-key .demo/keys/frontend.jwk.json": is_the_check_test_demo_runs,
    "wimse-authz keys generate --alg ES256 --out issuer.jwk.json --jwks trust.jwks.json": (
        generates_a_key
    ),
    "wimse-authz token mint wit --issuer-key .demo/keys/issuer.jwk.json "
    "--sub spiffe://demo.example/frontend --workload-key .demo/keys/frontend.jwk.json "
    "> wit.jwt": mints_a_wit,
    "wimse-authz token mint wpt --workload-key .demo/keys/frontend.jwk.json --wit @wit.jwt "
    "--aud http://127.0.0.1:10000/api/hello": mints_a_wpt,
    "wimse-authz token mint txn --tts-key .demo/keys/tts.jwk.json --aud demo.example "
    "--req-wl spiffe://demo.example/frontend --sub user-4711 --scope checkout": (mints_a_txn_token),
    "wimse-authz token mint ear --verifier-key .demo/keys/verifier.jwk.json "
    "--submod platform=affirming:hardware=2 --sub spiffe://demo.example/frontend": (
        mints_an_attestation_result
    ),
    "wimse-authz token mint user --issuer-key .demo/keys/idp.jwk.json "
    "--iss https://idp.demo.example --sub alice --aud https://api.demo.example --scope read": (
        mints_a_user_token
    ),
}

README_COMMANDS = fenced_commands(README, PROGRAM)


def test_the_readme_shows_commands() -> None:
    assert len(README_COMMANDS) >= 10


def test_every_readme_command_has_a_case() -> None:
    missing = [command for command in README_COMMANDS if command not in CASES]
    assert missing == [], (
        "README.md shows commands tests/e2e/test_readme_commands.py does not run; add a "
        f"case for each: {missing}"
    )


def test_every_case_is_a_readme_command() -> None:
    assert [command for command in CASES if command not in README_COMMANDS] == []


def command_id(command: str) -> str:
    return command.removeprefix(f"{PROGRAM} ")[:70]


@pytest.mark.parametrize("command", README_COMMANDS, ids=command_id)
def test_readme_command_works(command: str, workspace: Workspace) -> None:
    if command not in CASES:
        pytest.fail(f"no case for README command: {command}")
    CASES[command](workspace, command)


@pytest.mark.parametrize(
    "command", [*README_COMMANDS, *inline_commands(README, PROGRAM)], ids=command_id
)
def test_every_readme_command_parses_with_the_cli(command: str) -> None:
    """Its subcommands and options exist (what follows a shell redirection is the shell's)."""
    words = shlex.split(command)
    for shell_word in (">", "|", "&&", ";"):
        if shell_word in words:
            words = words[: words.index(shell_word)]
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exc:
        pytest.fail(f"the CLI refuses README's {command!r} (exit {exc.code})")


def test_every_make_command_in_the_readme_is_a_makefile_target() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = [command.split()[1] for command in fenced_commands(README, "make")]
    assert {"run", "test"} <= set(targets)
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target
