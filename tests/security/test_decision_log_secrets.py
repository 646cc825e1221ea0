"""Decision logs never carry a token, proof or signature — with the policy input included.

Every scenario of the log-leak corpus (`test_no_token_in_logs`) runs again with decision
logs written to a file, `include_input: true` (so the request's headers are in each line),
and the file must contain none of the tokens sent nor any of their JWS segments, in the
clear or base64-encoded: WITs, WPTs, Txn-Tokens, user tokens, attestation results
(top-level and nested), HTTP signature headers, and mTLS-authenticated requests, accepted or
refused. Every scenario runs with headers in the `headers` map and in Envoy's
`encode_raw_headers` shape (`header_map`, values base64 in the input as `rawValue`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.credentials.claims import token_hash
from authz.devtools.stack import ATTESTATION_HEADER, USER_TOKEN_HEADER
from tests.e2e.stack import wait_until
from tests.security.forgery import Forge
from tests.security.test_no_token_in_logs import (
    CONTEXT_SCENARIOS,
    SCENARIOS,
    TXN_HEADER,
    Scenario,
    allow_all,
    bound,
    searched_forms,
)
from tests.support import ORIGIN, GatewayHarness, expect_allowed


def logged(harness: GatewayHarness, path: Path, **overrides: Any) -> GatewayHarness:
    return harness.rebuild(decision_log={"output": str(path), "include_input": True}, **overrides)


def lines_for(scenario: Scenario, path: Path) -> list[dict[str, Any]]:
    """Every line, once the writer has caught up with every decision the scenario made."""

    def count() -> int:
        return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0

    wait_until(lambda: count() >= len(scenario.verdicts), timeout=10)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def leaked(path: Path, tokens: list[str]) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [fragment[:24] + "..." for fragment in searched_forms(tokens) if fragment in text]


def run_corpus(
    harness: GatewayHarness,
    tmp_path: Path,
    run: Callable[[Scenario], None],
    raw_headers: bool,
) -> tuple[Scenario, list[dict[str, Any]], Path]:
    path = tmp_path / "decisions.jsonl"
    scenario = Scenario(harness, raw_headers=raw_headers)
    run(scenario)
    assert scenario.sent, "the scenario sent no tokens"
    return scenario, lines_for(scenario, path), path


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_token_in_decision_logs(
    harness: GatewayHarness, tmp_path: Path, name: str, raw_headers: bool
) -> None:
    gateway = logged(harness, tmp_path / "decisions.jsonl")
    scenario, lines, path = run_corpus(gateway, tmp_path, SCENARIOS[name], raw_headers)
    assert len(lines) == len(scenario.verdicts)
    assert leaked(path, scenario.sent) == []


@pytest.mark.parametrize("name", CONTEXT_SCENARIOS)
def test_no_context_token_in_decision_logs(
    harness: GatewayHarness, tmp_path: Path, name: str, raw_headers: bool
) -> None:
    gateway = logged(harness, tmp_path / "decisions.jsonl", policy=allow_all(tmp_path / "policy"))
    run, _ = CONTEXT_SCENARIOS[name]
    scenario, lines, path = run_corpus(gateway, tmp_path, run, raw_headers)
    assert len(lines) == len(scenario.verdicts)
    assert leaked(path, scenario.sent) == []


def test_credentials_are_referenced_by_hash_and_the_input_is_there(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The check above is only meaningful if lines carry the input and the credentials."""
    path = tmp_path / "decisions.jsonl"
    gateway = logged(harness, path, policy=allow_all(tmp_path / "policy"))
    forge = Forge(gateway)
    txn, user, ear = forge.txn_token(), forge.user_token(), forge.ear()
    headers = bound(forge, txn, {USER_TOKEN_HEADER: user, ATTESTATION_HEADER: ear})
    scenario = Scenario(gateway)
    expect_allowed(scenario.send(headers))
    [line] = lines_for(scenario, path)

    credentials = line["credentials"]
    for name in ("workload-identity-token", "authorization", TXN_HEADER, USER_TOKEN_HEADER):
        assert credentials[name].startswith("sha256:")
    logged_headers = line["input"]["attributes"]["request"]["http"]["headers"]
    assert logged_headers[TXN_HEADER] == credentials[TXN_HEADER]
    assert logged_headers[ATTESTATION_HEADER].startswith("sha256:")
    assert line["request"] == {"method": "GET", "path": "/api/hello"}
    assert line["input"]["wimse"]["caller"]["id"] == "spiffe://demo.example/frontend"
    assert line["txn"]["id"]
    assert line["txn"]["sub"]
    assert line["chain"]
    assert line["caller"]["authenticated_by"] == "wpt"
    # A short prefix, not the hash a WPT's `tth`/`oth` carries: nothing to match a proof.
    assert token_hash(txn) not in path.read_text(encoding="utf-8")


def test_operator_masks_apply_to_the_logged_input(harness: GatewayHarness, tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    gateway = harness.rebuild(
        decision_log={
            "output": str(path),
            "include_input": True,
            "mask": [
                "/parsed_body/card",
                "/attributes/request/http/body",
                "/attributes/request/http/headers/x-customer",
            ],
        },
        policy=allow_all(tmp_path / "policy"),
    )
    headers = Forge(gateway).headers(audience=ORIGIN + "/api/pay") | {
        "content-type": "application/json",
        "x-customer": "alice@example.com",
    }
    scenario = Scenario(gateway)
    scenario.send(headers, path="/api/pay", method="POST", body='{"card": "4111", "n": 1}')
    [line] = lines_for(scenario, path)
    assert line["input"]["parsed_body"] == {"card": "**masked**", "n": 1}
    assert line["input"]["attributes"]["request"]["http"]["headers"]["x-customer"] == "**masked**"
    assert "4111" not in path.read_text(encoding="utf-8").replace(line["decision_id"], "")
