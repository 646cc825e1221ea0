"""`wimse-authz check` against a real gateway listening on loopback TCP and a Unix socket."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.cli import main
from authz.config import parse_config
from authz.devtools.keys import public_jwk
from authz.devtools.mint import mint_user_token
from authz.devtools.stack import (
    USER_TOKEN_AUDIENCE,
    USER_TOKEN_HEADER,
    USER_TOKEN_ISSUER,
    Identities,
    Ports,
    checkout_txn_token,
    free_port,
    gateway_config,
)
from authz.server.app import GatewayServer
from tests.support import ORIGIN, hook_engine

URL = f"{ORIGIN}/api/hello"


@dataclass
class RunningGateway:
    tcp: str
    unix: str
    keys: Path
    inputs: list[dict[str, Any]]
    """Every policy input the gateway built, in order."""
    decisions: Path
    """Its decision log, with inputs."""

    def key(self, name: str) -> str:
        return str(self.keys / f"{name}.jwk.json")


@pytest.fixture
def gateway(identity_dir: Path, identities: Identities, tmp_path: Path) -> Iterator[RunningGateway]:
    """The harness configuration served on its own event loop (the CLI under test blocks
    the test's thread), with the system clock, since the CLI mints at wall-clock time."""
    tcp, unix = f"127.0.0.1:{free_port()}", f"unix:{tmp_path / 'authz.sock'}"
    decisions = tmp_path / "decisions.jsonl"
    document = gateway_config(
        identity_dir,
        Ports(443, 1, 2, 3),
        listeners=[tcp, unix],
        origins=[ORIGIN],
        overrides={"decision_log": {"output": str(decisions), "include_input": True}},
    )
    config = parse_config(document, "test", identity_dir)
    inputs: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        inputs.append(document)

    async def start() -> GatewayServer:
        server = GatewayServer(config)  # on the loop it will serve from
        await server.start()
        assert server.gateway is not None
        hook_engine(server.gateway.pipeline, record)
        return server

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
        yield RunningGateway(tcp, unix, identity_dir / "keys", inputs, decisions)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def check(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    code = main(["check", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def minted(gateway: RunningGateway, workload: str = "frontend") -> tuple[str, ...]:
    """Options minting a WIT for `workload` and a WPT for the request."""
    return (
        *("--issuer-key", gateway.key("issuer")),
        *("--sub", f"spiffe://demo.example/{workload}"),
        *("--workload-key", gateway.key(workload)),
    )


def test_allowed_request_with_a_minted_wit_and_wpt_exits_0_and_shows_the_identity_headers(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(capsys, "--gateway", gateway.tcp, "--url", URL, *minted(gateway))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "ALLOW"
    assert "reason: policy.allowed" in lines
    assert any(line.startswith("decision_id: ") for line in lines)
    assert "  x-wimse-caller: spiffe://demo.example/frontend" in lines
    assert "headers removed upstream: authorization" in lines, "the proof is stripped"


def test_request_parts_and_bound_context_tokens_reach_the_policy_input(
    gateway: RunningGateway,
    identities: Identities,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wit_file, txn_file = tmp_path / "frontend.wit", tmp_path / "txn.jwt"
    assert main(["token", "mint", "wit", *minted(gateway)]) == 0
    wit_file.write_text(capsys.readouterr().out)
    txn_file.write_text(checkout_txn_token(identities) + "\n")
    user = mint_user_token(
        identities.user_issuer,
        issuer=USER_TOKEN_ISSUER,
        subject="alice",
        audience=USER_TOKEN_AUDIENCE,
        roles=["customer"],
    )
    code, out, _ = check(
        capsys,
        *("--gateway", gateway.unix, "--method", "POST", "--url", f"{URL}?page=2"),
        *("--wit", f"@{wit_file}", "--workload-key", gateway.key("frontend")),
        *("--txn-token", f"@{txn_file}", "-H", f"{USER_TOKEN_HEADER}: {user}"),
        *("--bind-header", USER_TOKEN_HEADER, "-H", "Content-Type: application/json"),
        *("--body", '{"item": 7}', "--context", "wimse.service=echo", "--context", "team=a"),
        *("--source-principal", "spiffe://demo.example/sidecar"),
    )
    assert code == 0, out
    document = gateway.inputs[-1]
    http = document["attributes"]["request"]["http"]
    assert (http["method"], http["path"], http["host"]) == (
        "POST",
        "/api/hello?page=2",
        "echo.demo.example",
    )
    assert http["headers"]["content-type"] == "application/json", "names lower-cased"
    assert document["parsed_query"] == {"page": ["2"]}
    assert document["parsed_body"] == {"item": 7}
    assert document["attributes"]["contextExtensions"] == {"wimse.service": "echo", "team": "a"}
    assert document["source_principal"] == "spiffe://demo.example/sidecar"
    wimse = document["wimse"]
    assert wimse["caller"]["proof"]["aud"] == URL, "the WPT audience is the URL without query"
    assert wimse["caller"]["proof"]["bound_headers"] == ["txn-token", USER_TOKEN_HEADER]
    assert wimse["txn"]["bound_by"] == "wpt"
    assert wimse["user"]["token"]["sub"] == "alice"


def test_policy_denial_exits_1_with_403_and_the_reason(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(capsys, "--gateway", gateway.tcp, "--url", URL, *minted(gateway, "batch"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "DENY 403 Forbidden"
    assert "reason: policy.denied" in lines
    assert "  x-wimse-authz-reason: policy.denied" in lines
    body = json.loads(next(line for line in lines if line.startswith("body: "))[6:])
    assert body["reason"] == "policy.denied"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("untrusted-issuer", "wit.kid_unknown"),  # signed with a workload's ES256 key
        ("no-wpt", "wpt.missing"),  # a WIT and no proof
        ("wrong-origin", "wpt.aud_mismatch"),  # a WPT for a URL the service does not serve
    ],
)
def test_invalid_credentials_exit_1_with_401_and_the_reason(
    case: str,
    reason: str,
    gateway: RunningGateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arguments: tuple[str, ...]
    if case == "untrusted-issuer":
        arguments = ("--url", URL, *minted(gateway)[2:], "--issuer-key", gateway.key("orders"))
    elif case == "no-wpt":
        assert main(["token", "mint", "wit", *minted(gateway)]) == 0
        (tmp_path / "frontend.wit").write_text(capsys.readouterr().out)
        arguments = ("--url", URL, "--wit", f"@{tmp_path / 'frontend.wit'}")
    else:
        arguments = ("--url", "https://elsewhere.example/api/hello", *minted(gateway))
    code, out, _ = check(capsys, "--gateway", gateway.tcp, *arguments)
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0] == "DENY 401 Unauthorized"
    assert f"reason: {reason}" in lines
    assert "  www-authenticate: WPT" in lines


def test_json_output_parses_for_allow_and_deny(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(capsys, "--gateway", gateway.tcp, "--url", URL, "--json", *minted(gateway))
    allowed = json.loads(out)
    assert (code, allowed["allowed"], allowed["http_status"]) == (0, True, None)
    assert ["x-wimse-caller", "spiffe://demo.example/frontend"] in allowed["headers"]
    assert allowed["dynamic_metadata"]["decision_id"] == allowed["decision_id"]
    code, out, _ = check(
        capsys, "--gateway", gateway.tcp, "--url", URL, "--json", *minted(gateway, "batch")
    )
    denied = json.loads(out)
    assert (code, denied["allowed"], denied["http_status"]) == (1, False, 403)
    assert denied["reason"] == "policy.denied"


def test_unreachable_gateway_exits_2_with_the_grpc_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, out, err = check(
        capsys, "--gateway", address, "--timeout", "2", "--url", URL, "--context", "a=b"
    )
    assert code == 2
    assert out == ""
    assert f"no answer from {address}" in err
    assert "UNAVAILABLE" in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--gateway", "nowhere", "--url", URL), "expected host:port or unix:/path"),
        (("--gateway", "127.0.0.1:1", "--url", "ftp://x/y"), "expected https://host"),
        (("--gateway", "127.0.0.1:1"), "--url"),
        (("--gateway", "127.0.0.1:1", "--url", URL, "-H", "no colon"), "expected 'name: value'"),
        (("--gateway", "127.0.0.1:1", "--url", URL, "--context", "novalue"), "key=value"),
        (("--gateway", "127.0.0.1:1", "--url", URL, "--sub", "spiffe://x/y"), "--issuer-key"),
        (("--gateway", "127.0.0.1:1", "--url", URL, "--workload-key", "k"), "add --wit"),
        (
            ("--gateway", "127.0.0.1:1", "--url", URL, "--wit", "w", "--workload-key", "absent"),
            "cannot read absent",
        ),
        (
            (
                "--gateway",
                "127.0.0.1:1",
                "--url",
                URL,
                "--wit",
                "w",
                "-H",
                "workload-identity-token: w",
            ),
            "also set from a credential option",
        ),
    ],
)
def test_usage_errors_exit_2_before_anything_is_sent(
    arguments: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(capsys, *arguments)
    assert code == 2
    assert out == ""
    assert err.startswith("wimse-authz check: ")
    assert message in err


def test_a_public_key_is_refused_as_a_signing_key(
    identities: Identities, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    public = tmp_path / "frontend.public.json"
    public.write_text(json.dumps(public_jwk(identities.workloads["frontend"])))
    code, out, err = check(
        capsys,
        *("--gateway", "127.0.0.1:1", "--url", URL, "--wit", "w", "--workload-key", str(public)),
    )
    assert (code, out) == (2, "")
    assert "is a public key" in err


def test_explain_shows_the_policy_reasons_and_the_input_from_the_decision_log(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(
        capsys,
        *("--gateway", gateway.tcp, "--url", URL, *minted(gateway, "batch")),
        *("--explain", str(gateway.decisions)),
    )
    assert code == 1
    assert f"explain (from {gateway.decisions}):" in out
    reasons = next(line for line in out.splitlines() if "policy reasons:" in line)
    assert "spiffe://demo.example/batch has no grant" in reasons
    assert "input the gateway built (credentials hashed):" in out
    assert '"parsed_path": [' in out
