"""The context stage through the real pipeline: Txn-Token requirement, binding rules for
user tokens and attestation headers, and what reaches `input.wimse`.

Runs on the demo configuration (`authz/devtools/stack.py::gateway_config`): one trust domain
with a TTS, a user-token issuer on `x-user-token`, attestation on `x-attestation-result` and
in the Txn-Token's `rctx.ear`. Outcomes are read from the policy input (captured before the
policy runs) so that they do not depend on what the sample policy decides.
"""

from __future__ import annotations

from typing import Any

from authz.answers import Failed
from authz.devtools.mint import ear_claims, mint_ear, mint_txn_token, mint_user_token
from authz.devtools.stack import (
    ATTESTATION_HEADER,
    ATTESTATION_VERIFIER,
    SERVICE_ID,
    TRUST_DOMAIN,
    USER_TOKEN_AUDIENCE,
    USER_TOKEN_HEADER,
    USER_TOKEN_ISSUER,
)
from authz.reasons import Reason
from tests.support import ORIGIN, GatewayHarness, expect_denied, expect_failed, hook_engine

FRONTEND = "spiffe://demo.example/frontend"
OPS = "spiffe://demo.example/ops"
ORDERS = "spiffe://demo.example/orders"
CART = "spiffe://demo.example/cart"
WIT_EAR_CLAIM = "https://demo.example/claims/ear"
REQUIRED = {"wimse.txn_token": "required"}


# --- helpers ------------------------------------------------------------------------------


def policy_input(harness: GatewayHarness, headers: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    """`input.wimse` as the policy saw it; fails if the request never reached the policy."""
    seen: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        seen.append(document)

    hook_engine(harness.gateway.pipeline, record)
    verdict = harness.check_path(kwargs.pop("path", "/api/hello"), headers, **kwargs)
    assert len(seen) == 1, f"the request did not reach the policy: {verdict!r}"
    assert not isinstance(verdict, Failed), f"the gateway failed: {verdict!r}"
    wimse: dict[str, Any] = seen[0]["wimse"]
    return wimse


def signed(
    harness: GatewayHarness,
    *,
    workload: str = "frontend",
    txn: str | None = None,
    bound: dict[str, str] | None = None,
    wit_claims: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Headers of a WPT-authenticated request; the WPT binds `txn` (tth) and `bound` (oth),
    and both are sent."""
    wit = harness.wit(workload, extra_claims=wit_claims)
    wpt = harness.wpt(wit, "/api/hello", workload, txn_token=txn, other_tokens=bound)
    headers = {"workload-identity-token": wit, "authorization": "WPT " + wpt, **(bound or {})}
    if txn is not None:
        headers["txn-token"] = txn
    return headers


def user_token(harness: GatewayHarness, **kwargs: Any) -> str:
    kwargs.setdefault("audience", USER_TOKEN_AUDIENCE)
    return mint_user_token(
        harness.identities.user_issuer,
        issuer=USER_TOKEN_ISSUER,
        subject="alice",
        roles=["customer"],
        scope="orders:read",
        now=harness.clock.now,
        **kwargs,
    )


def ear_object(
    harness: GatewayHarness, status: str = "affirming", subject: str | None = None
) -> dict[str, Any]:
    return ear_claims({"CPU": (status, {"hardware": 2})}, now=harness.clock.now, subject=subject)


def ear_jwt(harness: GatewayHarness, status: str = "affirming", subject: str | None = None) -> str:
    return mint_ear(harness.identities.attestation_verifier, ear_object(harness, status, subject))


def mtls(harness: GatewayHarness, **overrides: Any) -> GatewayHarness:
    return harness.rebuild(mtls={"authenticate": True}, **overrides)


def echo_service(txn_token: str | None) -> dict[str, Any]:
    service: dict[str, Any] = {"id": SERVICE_ID, "origins": [ORIGIN]}
    if txn_token is not None:
        service["txn_token"] = txn_token
    return {"echo": service}


# --- the Txn-Token requirement ---------------------------------------------------------------


def test_a_route_requiring_a_txn_token_refuses_a_request_without_one(
    harness: GatewayHarness,
) -> None:
    verdict = harness.check_path("/api/hello", signed(harness), context=REQUIRED)
    expect_denied(verdict, Reason.TXN_MISSING, 401)


def test_a_route_requiring_a_txn_token_accepts_a_bound_one(harness: GatewayHarness) -> None:
    wimse = policy_input(harness, signed(harness, txn=harness.txn_token()), context=REQUIRED)
    assert wimse["txn"]["sub"] == "user-4711"


def test_a_txn_token_is_optional_by_default(harness: GatewayHarness) -> None:
    assert policy_input(harness, signed(harness))["txn"] is None


def test_an_invalid_route_txn_setting_is_unavailable_not_a_deny(harness: GatewayHarness) -> None:
    verdict = harness.check_path(
        "/api/hello", signed(harness), context={"wimse.txn_token": "requried"}
    )
    assert expect_failed(verdict, Reason.ROUTE_CONFIG_INVALID).status == 503


def test_a_service_may_require_a_txn_token_and_a_route_may_relax_it(
    harness: GatewayHarness,
) -> None:
    strict = harness.rebuild(services=echo_service("required"))
    expect_denied(strict.check_path("/api/hello", signed(strict)), Reason.TXN_MISSING, 401)
    relaxed = policy_input(strict, signed(strict), context={"wimse.txn_token": "optional"})
    assert relaxed["txn"] is None


def test_the_global_requirement_applies_unless_the_service_says_optional(
    harness: GatewayHarness,
) -> None:
    required = harness.rebuild(txn_token={"required": True})
    expect_denied(required.check_path("/api/hello", signed(required)), Reason.TXN_MISSING)
    exempt = required.rebuild(services=echo_service("optional"))
    assert policy_input(exempt, signed(exempt))["txn"] is None


def test_an_oversized_txn_token_is_too_large(harness: GatewayHarness) -> None:
    big = harness.txn_token(tctx={"padding": "x" * 9000})
    expect_denied(harness.check_path("/api/hello", {"txn-token": big}), Reason.TXN_TOO_LARGE, 401)


def test_two_txn_token_headers_are_refused(harness: GatewayHarness) -> None:
    txn = harness.txn_token()
    verdict = harness.check_path("/api/hello", {"txn-token": f"{txn},{txn}"})
    expect_denied(verdict, Reason.TXN_MULTIPLE, 401)


def test_a_txn_token_the_wpt_does_not_bind_is_refused(harness: GatewayHarness) -> None:
    headers = {**signed(harness), "txn-token": harness.txn_token()}
    expect_denied(harness.check_path("/api/hello", headers), Reason.WPT_TTH_MISSING, 401)


def test_a_txn_token_signed_by_the_wit_issuer_is_an_unknown_tts_kid(
    harness: GatewayHarness,
) -> None:
    # The WIT issuer is a configured anchor of the same trust domain, but not its TTS.
    forged = mint_txn_token(
        harness.identities.issuer,
        audience=TRUST_DOMAIN,
        requesting_workload=FRONTEND,
        subject="admin",
        scope="checkout",
        now=harness.clock.now,
    )
    verdict = harness.check_path("/api/hello", signed(harness, txn=forged))
    expect_denied(verdict, Reason.TXN_KID_UNKNOWN, 401)


def test_a_bound_txn_token_reaches_the_policy_with_its_chain(harness: GatewayHarness) -> None:
    txn = harness.txn_token(
        txn="t-42",
        tctx={"amount": 250},
        rctx={"req_ip": "192.0.2.1"},
        actor={"sub": ORDERS, "act": {"sub": CART}},
    )
    wimse = policy_input(harness, signed(harness, workload="ops", txn=txn))
    assert wimse["txn"]["id"] == "t-42"
    assert (wimse["txn"]["sub"], wimse["txn"]["scope"]) == ("user-4711", ["checkout"])
    assert (wimse["txn"]["tctx"], wimse["txn"]["rctx"]) == (
        {"amount": 250},
        {"req_ip": "192.0.2.1"},
    )
    assert wimse["txn"]["req_wl"] == FRONTEND
    assert wimse["txn"]["act"] == {"sub": ORDERS}, "the current actor, without the nested act"
    assert wimse["txn"]["aud"] == [TRUST_DOMAIN]
    assert wimse["txn"]["bound_by"] == "wpt"
    assert wimse["txn"]["kid"] == harness.identities.tts["kid"]
    assert [
        (hop["id"], hop["source"], hop["verified"], hop["authenticated_by"])
        for hop in wimse["chain"]
    ] == [
        (FRONTEND, "txn.req_wl", False, None),
        (CART, "txn.act.prior", False, None),
        (ORDERS, "txn.act", False, None),
        (OPS, "caller.wit", True, "wpt"),
    ]
    assert {hop["trust_domain"] for hop in wimse["chain"]} == {TRUST_DOMAIN}
    assert wimse["user"] == {
        "sub": "user-4711",
        "scope": ["checkout"],
        "tctx": {"amount": 250},
        "token": None,
    }


def test_an_mtls_caller_may_pass_a_txn_token_unbound(harness: GatewayHarness) -> None:
    gateway = mtls(harness)
    wimse = policy_input(gateway, {"txn-token": gateway.txn_token()}, principal=OPS)
    assert wimse["txn"]["bound_by"] is None
    assert [hop["source"] for hop in wimse["chain"]] == ["txn.req_wl", "caller.mtls"]
    assert wimse["chain"][-1] == {
        "id": OPS,
        "trust_domain": TRUST_DOMAIN,
        "source": "caller.mtls",
        "verified": True,
        "authenticated_by": "mtls",
    }


def test_a_txn_token_without_any_caller_has_no_verified_hop(harness: GatewayHarness) -> None:
    wimse = policy_input(harness, {"txn-token": harness.txn_token()})
    assert wimse["caller"] is None
    assert [(hop["source"], hop["verified"]) for hop in wimse["chain"]] == [("txn.req_wl", False)]


def test_no_context_tokens_give_empty_context(harness: GatewayHarness) -> None:
    wimse = policy_input(harness, signed(harness))
    assert (wimse["txn"], wimse["user"], wimse["attestation"]) == (None, None, None)
    assert [hop["source"] for hop in wimse["chain"]] == ["caller.wit"]


# --- user tokens --------------------------------------------------------------------------


def test_a_user_token_the_wpt_does_not_bind_is_unbound(harness: GatewayHarness) -> None:
    headers = {**signed(harness), USER_TOKEN_HEADER: user_token(harness)}
    expect_denied(harness.check_path("/api/hello", headers), Reason.USER_UNBOUND, 401)


def test_a_bound_user_token_reaches_the_policy(harness: GatewayHarness) -> None:
    token = user_token(harness)
    wimse = policy_input(harness, signed(harness, bound={USER_TOKEN_HEADER: token}))
    user = wimse["user"]
    assert (user["sub"], user["scope"], user["tctx"]) == (None, None, None), "no Txn-Token"
    assert user["token"]["type"] == "access_token"
    assert user["token"]["header"] == USER_TOKEN_HEADER
    assert (user["token"]["iss"], user["token"]["sub"]) == (USER_TOKEN_ISSUER, "alice")
    assert user["token"]["aud"] == [USER_TOKEN_AUDIENCE]
    assert (user["token"]["roles"], user["token"]["scope"]) == (["customer"], ["orders:read"])


def test_a_bound_but_invalid_user_token_is_refused_not_ignored(harness: GatewayHarness) -> None:
    token = user_token(harness, audience="https://elsewhere.example")
    verdict = harness.check_path("/api/hello", signed(harness, bound={USER_TOKEN_HEADER: token}))
    expect_denied(verdict, Reason.USER_AUD_MISMATCH, 401)


def test_an_mtls_callers_user_token_is_unbound_by_default(harness: GatewayHarness) -> None:
    gateway = mtls(harness)
    verdict = gateway.check_path(
        "/api/hello", {USER_TOKEN_HEADER: user_token(gateway)}, principal=FRONTEND
    )
    expect_denied(verdict, Reason.USER_UNBOUND, 401)


def test_an_mtls_callers_user_token_is_accepted_when_configured(harness: GatewayHarness) -> None:
    gateway = mtls(harness, user_token={"accept_from_mtls_callers": True})
    wimse = policy_input(gateway, {USER_TOKEN_HEADER: user_token(gateway)}, principal=FRONTEND)
    assert wimse["caller"]["authenticated_by"] == "mtls"
    assert wimse["user"]["token"]["sub"] == "alice"


def test_accepting_mtls_callers_user_tokens_still_requires_a_wpt_caller_to_bind(
    harness: GatewayHarness,
) -> None:
    gateway = mtls(harness, user_token={"accept_from_mtls_callers": True})
    headers = {**signed(gateway), USER_TOKEN_HEADER: user_token(gateway)}
    expect_denied(gateway.check_path("/api/hello", headers), Reason.USER_UNBOUND, 401)


def test_an_unauthenticated_requests_user_token_is_unbound(harness: GatewayHarness) -> None:
    for gateway in (harness, mtls(harness, user_token={"accept_from_mtls_callers": True})):
        verdict = gateway.check_path("/api/hello", {USER_TOKEN_HEADER: user_token(gateway)})
        expect_denied(verdict, Reason.USER_UNBOUND, 401)


# --- attestation results ------------------------------------------------------------------


def test_an_attestation_header_the_wpt_does_not_bind_is_unbound(harness: GatewayHarness) -> None:
    headers = {**signed(harness), ATTESTATION_HEADER: ear_jwt(harness)}
    expect_denied(harness.check_path("/api/hello", headers), Reason.EAR_UNBOUND, 401)


def test_an_mtls_callers_attestation_header_is_always_unbound(harness: GatewayHarness) -> None:
    gateway = mtls(harness, user_token={"accept_from_mtls_callers": True})
    verdict = gateway.check_path(
        "/api/hello", {ATTESTATION_HEADER: ear_jwt(gateway)}, principal=FRONTEND
    )
    expect_denied(verdict, Reason.EAR_UNBOUND, 401)


def test_a_bound_attestation_header_reaches_the_policy(harness: GatewayHarness) -> None:
    ear = ear_jwt(harness, "affirming", subject=FRONTEND)
    wimse = policy_input(harness, signed(harness, bound={ATTESTATION_HEADER: ear}))
    assert wimse["attestation"]["status"] == "affirming"
    [result] = wimse["attestation"]["results"]
    assert (result["source"], result["signed_by"], result["fresh"]) == (
        "header",
        ATTESTATION_VERIFIER,
        True,
    )
    assert result["submods"]["CPU"] == {
        "status": "affirming",
        "trustworthiness": {"hardware": 2},
        "policy_ids": [],
    }


def test_an_attestation_header_about_another_workload_is_a_subject_mismatch(
    harness: GatewayHarness,
) -> None:
    ear = ear_jwt(harness, subject=OPS)
    verdict = harness.check_path("/api/hello", signed(harness, bound={ATTESTATION_HEADER: ear}))
    expect_denied(verdict, Reason.EAR_SUBJECT_MISMATCH, 401)


def test_an_attestation_header_naming_no_subject_is_refused(harness: GatewayHarness) -> None:
    """Hole 7 of issue 11: the caller's WPT binds the header, not the EAR to the caller; an
    EAR about nobody in particular, once obtained, could be presented by any workload."""
    ear = ear_jwt(harness, "affirming")
    verdict = harness.check_path("/api/hello", signed(harness, bound={ATTESTATION_HEADER: ear}))
    expect_denied(verdict, Reason.EAR_SUBJECT_MISSING, 401)
    for workload in ("ops", "batch"):
        headers = signed(harness, workload=workload, bound={ATTESTATION_HEADER: ear})
        expect_denied(harness.check_path("/api/hello", headers), Reason.EAR_SUBJECT_MISSING, 401)


def test_an_attestation_header_naming_no_subject_is_accepted_only_when_configured(
    harness: GatewayHarness,
) -> None:
    gateway = harness.rebuild(attestation={"header_requires_subject": False})
    ear = ear_jwt(gateway, "affirming")
    wimse = policy_input(gateway, signed(gateway, bound={ATTESTATION_HEADER: ear}))
    assert [result["subject"] for result in wimse["attestation"]["results"]] == [None]


def test_ears_inside_verified_tokens_need_no_subject(harness: GatewayHarness) -> None:
    """The WIT issuer or the TTS vouches for what it carries: no subject is required there."""
    gateway = harness.rebuild(attestation={"wit_claim": WIT_EAR_CLAIM})
    headers = signed(
        gateway,
        txn=gateway.txn_token(rctx={"ear": ear_object(gateway, "affirming")}),
        wit_claims={WIT_EAR_CLAIM: ear_object(gateway, "affirming")},
    )
    results = policy_input(gateway, headers)["attestation"]["results"]
    assert [(r["source"], r["subject"]) for r in results] == [("wit", None), ("txn", None)]


def test_a_txn_rctx_ear_object_reaches_the_policy_from_the_txn(harness: GatewayHarness) -> None:
    txn = harness.txn_token(rctx={"ear": ear_object(harness, "warning", subject=FRONTEND)})
    wimse = policy_input(harness, signed(harness, txn=txn))
    assert wimse["attestation"]["status"] == "warning"
    [result] = wimse["attestation"]["results"]
    assert (result["source"], result["signed_by"]) == ("txn", None)


def test_a_txn_rctx_nested_ear_jwt_is_verified_and_names_its_signer(
    harness: GatewayHarness,
) -> None:
    txn = harness.txn_token(rctx={"ear": ear_jwt(harness, "affirming")})
    wimse = policy_input(harness, signed(harness, txn=txn))
    [result] = wimse["attestation"]["results"]
    assert (result["source"], result["status"], result["signed_by"]) == (
        "txn",
        "affirming",
        ATTESTATION_VERIFIER,
    )


def test_a_txn_rctx_ear_must_be_about_the_requesting_workload(harness: GatewayHarness) -> None:
    # The caller (ops) is not what a Txn-Token's EAR is about: its requesting workload is.
    txn = harness.txn_token(rctx={"ear": ear_object(harness, subject=OPS)})
    verdict = harness.check_path("/api/hello", signed(harness, workload="ops", txn=txn))
    expect_denied(verdict, Reason.EAR_SUBJECT_MISMATCH, 401)


def test_a_wit_claim_ear_reaches_the_policy_from_the_wit(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(attestation={"wit_claim": WIT_EAR_CLAIM})
    claims = {WIT_EAR_CLAIM: ear_object(gateway, "affirming", subject=FRONTEND)}
    wimse = policy_input(gateway, signed(gateway, wit_claims=claims))
    [result] = wimse["attestation"]["results"]
    assert (result["source"], result["status"], result["signed_by"]) == ("wit", "affirming", None)


def test_a_wit_claim_ear_is_ignored_unless_configured(harness: GatewayHarness) -> None:
    claims = {WIT_EAR_CLAIM: ear_object(harness, "contraindicated")}
    assert policy_input(harness, signed(harness, wit_claims=claims))["attestation"] is None


def test_the_overall_status_is_the_worst_of_all_results(harness: GatewayHarness) -> None:
    gateway = harness.rebuild(attestation={"wit_claim": WIT_EAR_CLAIM})
    headers = signed(
        gateway,
        txn=gateway.txn_token(rctx={"ear": ear_object(gateway, "affirming")}),
        bound={ATTESTATION_HEADER: ear_jwt(gateway, "affirming", subject=FRONTEND)},
        wit_claims={WIT_EAR_CLAIM: ear_object(gateway, "warning")},
    )
    attestation = policy_input(gateway, headers)["attestation"]
    assert [(r["source"], r["status"]) for r in attestation["results"]] == [
        ("header", "affirming"),
        ("wit", "warning"),
        ("txn", "affirming"),
    ]
    assert attestation["status"] == "warning"
