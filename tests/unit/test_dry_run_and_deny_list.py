"""Dry-run (global and per route) and the emergency deny-list, through the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.config import DRY_RUN_CONTEXT_KEY
from authz.credentials.claims import token_hash
from authz.deny_list import DenyList, dump_deny_list, parse_deny_list
from authz.errors import ConfigError
from authz.reasons import Reason
from tests.security.forgery import Forge
from tests.support import (
    GatewayHarness,
    expect_allowed,
    expect_denied,
    expect_failed,
)

# --- dry-run ---------------------------------------------------------------------------------


def test_global_dry_run_allows_a_policy_denial_and_says_so(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(dry_run=True)
    verdict = expect_allowed(gateway.check_path(headers=gateway.signed_headers(workload="batch")))
    assert verdict.reason == Reason.POLICY_DRY_RUN_DENIED
    assert verdict.dynamic_metadata["dry_run"] is True
    assert verdict.dynamic_metadata["would_deny"]["reasons"]
    assert ("x-wimse-caller", "spiffe://demo.example/batch") in verdict.headers
    assert "authorization" in verdict.headers_to_remove


def test_dry_run_counts_the_would_be_denial(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(dry_run=True)
    verdict = expect_allowed(gateway.check_path(headers=gateway.signed_headers(workload="batch")))
    first_reason = verdict.dynamic_metadata["would_deny"]["reasons"][0]
    registry = gateway.gateway.metrics.registry
    sample = registry.get_sample_value(
        "wimse_authz_dry_run_denials_total", {"reason": first_reason[:64]}
    )
    assert sample == 1


def test_route_dry_run_overrides_the_global_setting(harness: GatewayHarness) -> None:
    headers = harness.signed_headers(workload="batch")
    verdict = harness.check_path(headers=headers, context={DRY_RUN_CONTEXT_KEY: "true"})
    assert expect_allowed(verdict).reason == Reason.POLICY_DRY_RUN_DENIED

    enforcing = harness.rebuild(dry_run=True)
    verdict = enforcing.check_path(
        headers=enforcing.signed_headers(workload="batch"), context={DRY_RUN_CONTEXT_KEY: "false"}
    )
    expect_denied(verdict, Reason.POLICY_DENIED, 403)


def test_a_mistyped_route_dry_run_is_our_fault_not_an_allow(harness: GatewayHarness) -> None:
    verdict = harness.check_path(
        headers=harness.signed_headers(workload="batch"), context={DRY_RUN_CONTEXT_KEY: "yes"}
    )
    expect_failed(verdict, Reason.ROUTE_CONFIG_INVALID)


def test_dry_run_still_refuses_invalid_credentials(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(dry_run=True)
    forge = Forge(gateway)
    verdict = gateway.check_path(headers=forge.headers(wpt_claims={"exp": forge.now - 600}))
    expect_denied(verdict, Reason.WPT_EXPIRED, 401)
    headers = gateway.signed_headers()
    expect_allowed(gateway.check_path(headers=headers))
    expect_denied(gateway.check_path(headers=headers), Reason.WPT_REPLAYED, 401)


def test_dry_run_still_refuses_a_request_without_credentials(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(dry_run=True)
    expect_denied(gateway.check_path("/api/hello"), Reason.POLICY_UNAUTHENTICATED, 401)


# --- deny-list -------------------------------------------------------------------------------


def deny_listed(harness: GatewayHarness, tmp_path: Path, deny_list: DenyList) -> GatewayHarness:
    path = tmp_path / "deny.json"
    path.write_text(dump_deny_list(deny_list), encoding="utf-8")
    return harness.rebuild(deny_list={"file": str(path)})


def test_a_deny_listed_caller_is_refused_before_policy(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    gateway = deny_listed(
        harness, tmp_path, DenyList(workloads=frozenset({"spiffe://demo.example/frontend"}))
    )
    verdict = gateway.check_path(headers=gateway.signed_headers())
    denied = expect_denied(verdict, Reason.DENYLIST_WORKLOAD, 403)
    assert ("x-wimse-authz-reason", "denylist.workload") in denied.headers
    expect_allowed(gateway.check_path(headers=gateway.signed_headers(workload="ops")))


def test_the_deny_list_applies_in_dry_run(harness: GatewayHarness, tmp_path: Path) -> None:
    gateway = deny_listed(
        harness, tmp_path, DenyList(workloads=frozenset({"spiffe://demo.example/batch"}))
    ).rebuild(dry_run=True)
    verdict = gateway.check_path(headers=gateway.signed_headers(workload="batch"))
    expect_denied(verdict, Reason.DENYLIST_WORKLOAD, 403)


def test_a_deny_listed_workload_anywhere_in_the_chain_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    origin = "spiffe://demo.example/compromised-edge"
    gateway = deny_listed(harness, tmp_path, DenyList(workloads=frozenset({origin})))
    forge = Forge(gateway)
    txn = forge.txn_token(claims={"req_wl": origin})
    headers = forge.headers(wpt_claims={"tth": token_hash(txn)}) | {"txn-token": txn}
    expect_denied(gateway.check_path(headers=headers), Reason.DENYLIST_WORKLOAD, 403)


def test_a_deny_listed_signing_key_refuses_its_tokens(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    kid = harness.identities.issuer["kid"]
    gateway = deny_listed(harness, tmp_path, DenyList(kids=frozenset({kid})))
    expect_denied(gateway.check_path(headers=gateway.signed_headers()), Reason.DENYLIST_KID, 403)


def test_a_deny_listed_token_id_refuses_that_token_only(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    forge = Forge(harness)
    wit = forge.wit(claims={"jti": "wit-4711"})
    gateway = deny_listed(harness, tmp_path, DenyList(jtis=frozenset({"wit-4711"})))
    forge = Forge(gateway)
    expect_denied(gateway.check_path(headers=forge.headers(wit=wit)), Reason.DENYLIST_JTI, 403)
    expect_allowed(gateway.check_path(headers=forge.headers()))


def test_a_deny_listed_transaction_is_refused(harness: GatewayHarness, tmp_path: Path) -> None:
    gateway = deny_listed(harness, tmp_path, DenyList(jtis=frozenset({"txn-bad"})))
    forge = Forge(gateway)
    txn = forge.txn_token(claims={"txn": "txn-bad"})
    headers = forge.headers(wpt_claims={"tth": token_hash(txn)}) | {"txn-token": txn}
    expect_denied(
        gateway.check_path(headers=headers, method="POST", path="/api/hello"),
        Reason.DENYLIST_JTI,
        403,
    )


def test_credentials_are_verified_before_the_deny_list_is_consulted(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """A forged token naming a deny-listed workload gets its credential reason, so a
    deny-list hit always means "this verified identity is blocked"."""
    gateway = deny_listed(
        harness, tmp_path, DenyList(workloads=frozenset({"spiffe://demo.example/frontend"}))
    )
    forge = Forge(gateway)
    verdict = gateway.check_path(headers=forge.headers(wpt_claims={"exp": forge.now - 600}))
    expect_denied(verdict, Reason.WPT_EXPIRED, 401)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping"),
        ("workloads: spiffe://x/y", "list of non-empty strings"),
        ("kids: ['']", "list of non-empty strings"),
        ("jtis: [1]", "list of non-empty strings"),
        ("users: [alice]", "unknown key"),
        ("workloads: [", "not valid YAML"),
    ],
)
def test_a_malformed_deny_list_is_refused_with_its_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_deny_list(text, "deny.yaml")


def test_an_empty_deny_list_file_blocks_nothing() -> None:
    assert not parse_deny_list("", "deny.yaml")
    assert (
        len(parse_deny_list("workloads: [a]\nkids: [b, c]\nthumbprints: [d]\n", "deny.yaml")) == 4
    )


def test_the_gateway_refuses_to_start_without_its_deny_list(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    gateway = harness.rebuild(deny_list={"file": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match=r"deny_list\.file"):
        _ = gateway.gateway
