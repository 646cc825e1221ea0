"""Outbound mode in process: what an egress Check answers, and that the gateway's own inbound
pipeline accepts what it attaches.

The workload is the demo frontend: its WIT (by the demo issuer) and private key are files,
as SPIRE would write them. Its callee `orders` has the harness origin, so the proofs minted
here can be presented to the same gateway's inbound pipeline (service `echo`, which grants
the frontend `/api/`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from authz.answers import Allowed, Answers, Verdict
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit
from authz.outbound.credentials import CredentialFiles
from authz.outbound.pipeline import OutboundPipeline
from authz.policy.decision import PolicyDecision
from tests.independent import wimse_checker as checker
from tests.support import (
    ORIGIN,
    GatewayHarness,
    check_request,
    expect_allowed,
    expect_denied,
    expect_failed,
    header,
)

FRONTEND = "spiffe://demo.example/frontend"


def outbound_overrides(credentials: Path, **callee: Any) -> dict[str, Any]:
    return {
        "server": {
            "listeners": [
                {"address": "127.0.0.1:9191"},
                {
                    "address": f"unix:{credentials}/egress.sock",
                    "mode": "outbound",
                    "workload": "frontend",
                },
            ]
        },
        "outbound": {
            "workloads": {
                "frontend": {
                    "id": FRONTEND,
                    "credentials": {
                        "wit_file": str(credentials / "wit.jwt"),
                        "key_file": str(credentials / "key.jwk.json"),
                    },
                }
            },
            "callees": {
                "orders": {"origin": ORIGIN, **callee},
                "payments": {"origin": "https://payments.demo.example"},
            },
        },
    }


def write_pair(directory: Path, wit: str | None, key: Mapping[str, Any] | None) -> None:
    if wit is not None:
        (directory / "wit.jwt").write_text(wit + "\n", encoding="ascii")
    if key is not None:
        (directory / "key.jwk.json").write_text(json.dumps(key), encoding="utf-8")


@pytest.fixture
def egress(harness: GatewayHarness, tmp_path: Path) -> GatewayHarness:
    write_pair(
        tmp_path, harness.wit("frontend", ttl=3600), harness.identities.workloads["frontend"]
    )
    return harness.rebuild(**outbound_overrides(tmp_path))


def outbound(harness: GatewayHarness) -> OutboundPipeline:
    return harness.gateway.outbound["frontend"]


def send(
    harness: GatewayHarness, path: str, headers: Mapping[str, str] | None = None, **kwargs: Any
) -> Verdict:
    kwargs.setdefault("service", "orders")
    request = check_request(path, headers, **kwargs)
    return asyncio.run(outbound(harness).check(request.attributes))


def as_received(allowed: Allowed, app_headers: Mapping[str, str]) -> dict[str, str]:
    """The headers the callee receives: the app's, minus removals, plus what was set."""
    received = {k: v for k, v in app_headers.items() if k not in allowed.headers_to_remove}
    received.update(dict(allowed.headers))
    return received


def inbound(
    harness: GatewayHarness, path: str, headers: Mapping[str, str], **kwargs: Any
) -> Verdict:
    return harness.check_path(path, headers, **kwargs)


def test_a_request_leaves_with_the_workloads_wit_and_a_wpt_the_callee_accepts(
    egress: GatewayHarness,
) -> None:
    allowed = expect_allowed(send(egress, "/api/orders/7"))
    assert header(allowed, "workload-identity-token") == (egress_wit(egress))
    assert (header(allowed, "authorization") or "").startswith("WPT ")
    received = as_received(allowed, {})
    verdict = expect_allowed(inbound(egress, "/api/orders/7", received))
    assert header(verdict, "x-wimse-caller") == FRONTEND


def egress_wit(harness: GatewayHarness) -> str:
    source = harness.gateway.runtime.credential_sources["frontend"][1]
    return source.current().wit


def test_a_txn_token_from_the_app_is_bound_by_tth(egress: GatewayHarness) -> None:
    txn = egress.txn_token()
    app = {"txn-token": txn}
    allowed = expect_allowed(send(egress, "/api/orders/7", app))
    received = as_received(allowed, app)
    assert received["txn-token"] == txn
    verdict = expect_allowed(inbound(egress, "/api/orders/7", received))
    assert header(verdict, "x-wimse-caller") == FRONTEND


def test_an_invalid_txn_token_from_the_app_never_leaves(egress: GatewayHarness) -> None:
    expired = egress.txn_token(now=egress.clock.now - 3600)
    verdict = send(egress, "/api/orders/7", {"txn-token": expired})
    denied = expect_denied(verdict, "txn.expired", 400)
    assert header(denied, "workload-identity-token") is None


def test_an_app_bearer_token_moves_to_the_user_token_header_bound_by_oth(
    egress: GatewayHarness,
) -> None:
    app = {"authorization": "Bearer opaque-user-token"}
    allowed = expect_allowed(send(egress, "/api/orders/7", app))
    received = as_received(allowed, app)
    assert received["x-user-token"] == "opaque-user-token"
    assert received["authorization"].startswith("WPT ")
    claims = jwt_claims(received["authorization"].removeprefix("WPT "))
    assert set(claims["oth"]) == {"x-user-token"}


def jwt_claims(token: str) -> dict[str, Any]:
    from authz.credentials.jose import b64url_decode

    claims: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return claims


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"authorization": "Basic dXNlcjpwdw=="}, "outbound.authorization_unsupported"),
        ({"authorization": "WPT forged"}, "outbound.authorization_unsupported"),
        ({"authorization": "Bearer a,Bearer b"}, "outbound.authorization_unsupported"),
        ({"authorization": "Bearer "}, "outbound.authorization_unsupported"),
        (
            {"authorization": "Bearer a", "x-user-token": "b"},
            "outbound.user_token_ambiguous",
        ),
    ],
)
def test_an_authorization_the_gateway_cannot_move_is_refused(
    egress: GatewayHarness, headers: dict[str, str], reason: str
) -> None:
    expect_denied(send(egress, "/api/orders/7", headers), reason, 400)


def test_a_call_the_egress_policy_forbids_is_403_with_its_reason(egress: GatewayHarness) -> None:
    denied = expect_denied(
        send(egress, "/api/payments", service="payments", method="POST"), "policy.denied", 403
    )
    assert header(denied, "x-wimse-authz-reason") == "policy.denied"
    assert header(denied, "workload-identity-token") is None


def test_a_route_naming_no_configured_callee_is_503(egress: GatewayHarness) -> None:
    expect_failed(send(egress, "/api/orders/7", service="nowhere"), "outbound.callee_unknown")
    expect_failed(send(egress, "/api/orders/7", service=None), "outbound.callee_unknown")


def test_a_rewrite_route_gets_a_wpt_for_the_path_envoy_sends(egress: GatewayHarness) -> None:
    # Envoy's route: match prefix /orders/ and prefix_rewrite /api/orders/, declared to the
    # gateway; the egress grant (frontend → orders, /api/orders) is for the path sent.
    rewrite = {"wimse.path_prefix": "/orders/", "wimse.prefix_rewrite": "/api/orders/"}
    allowed = expect_allowed(send(egress, "/orders/7", context=rewrite))
    wpt = (header(allowed, "authorization") or "").removeprefix("WPT ")
    assert jwt_claims(wpt)["aud"] == ORIGIN + "/api/orders/7"
    expect_allowed(inbound(egress, "/api/orders/7", as_received(allowed, {})))
    expect_denied(inbound(egress, "/orders/7", as_received(allowed, {})), "wpt.aud_mismatch")


@pytest.mark.parametrize(
    "context",
    [
        {"wimse.path_prefix": "/orders/", "wimse.prefix_rewrite": "/api/"},
        {"wimse.path_prefix": "/api/"},
        {"wimse.prefix_rewrite": "/api/"},
        {"wimse.path_prefix": "/api/", "wimse.prefix_rewrite": "api/"},
    ],
)
def test_a_rewrite_declaration_that_cannot_be_the_routes_is_503(
    egress: GatewayHarness, context: dict[str, str]
) -> None:
    expect_failed(send(egress, "/api/orders/7", context=context), "route.config_invalid")


def test_missing_credential_files_are_503_never_an_unauthenticated_request(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    egress = harness.rebuild(**outbound_overrides(tmp_path))
    failed = expect_failed(send(egress, "/api/orders/7"), "outbound.credentials_unavailable")
    assert failed.status == 503
    assert header(failed, "workload-identity-token") is None


def test_an_expired_wit_is_503(harness: GatewayHarness, tmp_path: Path) -> None:
    write_pair(tmp_path, harness.wit("frontend", ttl=60), harness.identities.workloads["frontend"])
    egress = harness.rebuild(**outbound_overrides(tmp_path))
    expect_allowed(send(egress, "/api/orders/7"))
    egress.clock.now += 61
    expect_failed(send(egress, "/api/orders/7"), "outbound.credentials_unavailable")


@pytest.mark.parametrize(
    "mismatch",
    ["another workload's WIT", "a key the WIT does not confirm"],
)
def test_a_pair_that_does_not_match_is_never_used(
    harness: GatewayHarness, tmp_path: Path, mismatch: str
) -> None:
    if mismatch == "another workload's WIT":
        write_pair(tmp_path, harness.wit("ops"), harness.identities.workloads["ops"])
    else:
        write_pair(tmp_path, harness.wit("frontend"), harness.identities.workloads["ops"])
    egress = harness.rebuild(**outbound_overrides(tmp_path))
    expect_failed(send(egress, "/api/orders/7"), "outbound.credentials_unavailable")


def test_rotation_switches_only_once_the_new_pair_is_whole(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    old_key = harness.identities.workloads["frontend"]
    old_wit = harness.wit("frontend")
    write_pair(tmp_path, old_wit, old_key)
    egress = harness.rebuild(**outbound_overrides(tmp_path))
    source = egress.gateway.runtime.credential_sources["frontend"][1]
    assert isinstance(source, CredentialFiles)

    new_key = generate_private_jwk("EdDSA", kid="frontend-next")
    new_wit = mint_wit(harness.identities.issuer, FRONTEND, new_key, now=harness.clock.now)
    write_pair(tmp_path, None, new_key)  # the key first: half a pair
    source.refresh()
    allowed = expect_allowed(send(egress, "/api/orders/7"))
    assert header(allowed, "workload-identity-token") == old_wit
    expect_allowed(inbound(egress, "/api/orders/7", as_received(allowed, {})))

    write_pair(tmp_path, new_wit, None)  # now whole
    source.refresh()
    allowed = expect_allowed(send(egress, "/api/orders/7"))
    assert header(allowed, "workload-identity-token") == new_wit
    expect_allowed(inbound(egress, "/api/orders/7", as_received(allowed, {})))


def test_an_http_signature_callee_gets_a_signed_request_the_callee_accepts(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    write_pair(tmp_path, harness.wit("frontend"), harness.identities.workloads["frontend"])
    egress = harness.rebuild(**outbound_overrides(tmp_path, proof="http_signature"))
    body = b'{"item": "cone"}'
    app = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-envoy-auth-partial-body": "false",
    }
    context = {"wimse.body": "forwarded"}
    allowed = expect_allowed(
        send(egress, "/api/orders", app, method="POST", raw_body=body, context=context)
    )
    received = as_received(allowed, app)
    assert "signature" in received
    assert "content-digest" in received
    assert "authorization" in allowed.headers_to_remove
    verdict = inbound(
        egress, "/api/orders", received, method="POST", raw_body=body, context=context
    )
    assert header(expect_allowed(verdict), "x-wimse-caller") == FRONTEND


def test_a_signature_callee_without_a_forwarded_body_is_503(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    write_pair(tmp_path, harness.wit("frontend"), harness.identities.workloads["frontend"])
    egress = harness.rebuild(**outbound_overrides(tmp_path, proof="http_signature"))
    verdict = send(egress, "/api/orders", {"content-length": "5"}, method="POST")
    expect_failed(verdict, "outbound.body_not_forwarded")


def test_an_inbound_listener_never_mints_whatever_the_request_says(egress: GatewayHarness) -> None:
    # An outbound-looking Check (naming a callee, carrying no credentials) on the inbound
    # pipeline: refused as unauthenticated, and nothing of the workload's is attached.
    verdict = inbound(egress, "/api/orders/7", {}, service="orders")
    assert not isinstance(verdict, Allowed)
    assert header(verdict, "workload-identity-token") is None
    assert header(verdict, "authorization") is None
    verdict = inbound(egress, "/api/orders/7", {"authorization": "Bearer x"}, service="echo")
    assert not isinstance(verdict, Allowed)


# --- every claim, checked by the independent checker (tests/independent) -----------------


def test_every_claim_of_a_minted_wpt_holds_by_the_drafts_text(egress: GatewayHarness) -> None:
    txn = egress.txn_token()
    app = {"txn-token": txn, "authorization": "Bearer opaque-user-token"}
    allowed = expect_allowed(send(egress, "/api/orders/7", app))
    received = as_received(allowed, app)
    wit = received["workload-identity-token"]
    issuer_jwks = {"keys": [public_jwk(egress.identities.issuer)]}
    checker.check_wit(wit, issuer_jwks, now=egress.clock.now, expected_sub=FRONTEND)
    claims = checker.check_wpt(
        checker.wpt_from_authorization(received["authorization"]),
        wit=wit,
        now=egress.clock.now,
        audience=ORIGIN + "/api/orders/7",
        txn_token=txn,
        other_headers={"x-user-token": "opaque-user-token"},
        max_lifetime=30,
    )
    assert claims["exp"] == int(egress.clock.now) + 30


def test_a_wpt_never_outlives_its_wit(harness: GatewayHarness, tmp_path: Path) -> None:
    write_pair(tmp_path, harness.wit("frontend", ttl=10), harness.identities.workloads["frontend"])
    egress = harness.rebuild(**outbound_overrides(tmp_path))
    received = as_received(expect_allowed(send(egress, "/api/orders/7")), {})
    wit = received["workload-identity-token"]
    claims = checker.check_wpt(
        checker.wpt_from_authorization(received["authorization"]),
        wit=wit,
        now=egress.clock.now,
        audience=ORIGIN + "/api/orders/7",
    )
    assert claims["exp"] == jwt_claims(wit)["exp"]


def test_two_requests_never_share_a_jti(egress: GatewayHarness) -> None:
    proofs = [
        jwt_claims(
            (header(expect_allowed(send(egress, "/api/orders/7")), "authorization") or "")[4:]
        )
        for _ in range(2)
    ]
    assert proofs[0]["jti"] != proofs[1]["jti"]


@pytest.mark.parametrize("body", [b"", b'{"item": "cone"}'])
def test_every_parameter_of_a_minted_signature_holds_by_the_drafts_text(
    harness: GatewayHarness, tmp_path: Path, body: bytes
) -> None:
    write_pair(tmp_path, harness.wit("frontend"), harness.identities.workloads["frontend"])
    egress = harness.rebuild(**outbound_overrides(tmp_path, proof="http_signature"))
    txn = egress.txn_token()
    app = {"content-type": "application/json", "txn-token": txn, "x-user-token": "u-1"}
    if body:
        app |= {"content-length": str(len(body)), "x-envoy-auth-partial-body": "false"}
    context = {"wimse.body": "forwarded"}
    verdict = send(egress, "/api/orders?page=2", app, method="POST", raw_body=body, context=context)
    received = as_received(expect_allowed(verdict), app)
    params = checker.check_http_signature(
        method="POST",
        path="/api/orders",
        query="page=2",
        headers=received,
        body=body or None,
        wit=received["workload-identity-token"],
        now=egress.clock.now,
        audience=ORIGIN + "/api/orders",
        max_lifetime=30,
    )
    assert "x-user-token" in params["components"]
    assert "txn-token" in params["components"]


def test_no_header_is_both_set_and_removed_even_when_policy_asks(egress: GatewayHarness) -> None:
    """Envoy 1.40 removes after it sets (measured: a header on both lists leaves without
    the gateway's value): a policy removing `authorization` must not strip the WPT."""
    config = egress.config()
    answers = Answers(config.responses, config.upstream)
    decision = PolicyDecision(allowed=True, request_headers_to_remove=("authorization", "x-debug"))
    allowed = answers.egress_allowed(
        "d-1",
        decision,
        FRONTEND,
        (("workload-identity-token", "wit"), ("authorization", "WPT wpt")),
        ("signature", "authorization"),
    )
    assert allowed.headers_to_remove == ("signature", "x-debug")
    for verdict in (
        send(egress, "/api/orders/7"),
        send(egress, "/api/orders/7", {"authorization": "Bearer u"}),
    ):
        allowed = expect_allowed(verdict)
        assert not {name for name, _ in allowed.headers} & set(allowed.headers_to_remove)
