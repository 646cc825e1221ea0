"""HTTP Message Signatures through the real pipeline: the WIMSE profile's rules, each with
its `httpsig.*` reason and a 400, per-service proof styles, body digests over the exact
bytes Envoy forwards, nonce replay, and binding context tokens by coverage.

Requests are signed by `authz.devtools.httpsig.sign_request` with the demo workloads' keys
(frontend: EdDSA, ops: ES256, batch: Ed25519) and checked as Envoy sends them on a route that
declares `wimse.body: forwarded`: with `x-envoy-auth-partial-body` when Envoy waited for a
body, without it for a request that ended with its headers (measured on Envoy 1.40).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from authz.answers import Allowed, Denied, Failed
from authz.devtools.httpsig import content_digest, sign_request
from authz.devtools.stack import (
    SERVICE_ID,
    USER_TOKEN_HEADER,
)
from tests.support import (
    ORIGIN,
    GatewayHarness,
    expect_allowed,
    expect_denied,
    expect_failed,
    header,
    hook_engine,
)
from tests.unit.test_context import user_token

PATH = "/api/hello"
BODY_ROUTE = {"wimse.body": "forwarded"}
"""The route context of a route where Envoy forwards bodies: the only kind that accepts
signatures."""
ENVOY_BODY_FLAG = {"x-envoy-auth-partial-body": "false"}
"""What Envoy adds to a check when it forwarded a whole body."""


def accepting(harness: GatewayHarness, *proofs: str) -> GatewayHarness:
    service = {"id": SERVICE_ID, "origins": [ORIGIN], "proofs": list(proofs)}
    return harness.rebuild(services={"echo": service})


@pytest.fixture
def gateway(harness: GatewayHarness) -> GatewayHarness:
    """The demo gateway with a service accepting both WPTs and HTTP signatures."""
    return accepting(harness, "wpt", "http_signature")


def signed(
    harness: GatewayHarness,
    *,
    method: str = "GET",
    path: str = PATH,
    query: str = "",
    body: bytes | None = None,
    workload: str = "frontend",
    headers: dict[str, str] | None = None,
    audience: str | None = None,
    **kwargs: Any,
) -> dict[str, str]:
    """A WIT and a WIMSE signature for this request, plus `headers` (signed over too)."""
    request_headers = {"workload-identity-token": harness.wit(workload), **(headers or {})}
    if body:
        request_headers.setdefault("content-type", "application/json")
        request_headers.setdefault("content-length", str(len(body)))
    kwargs.setdefault("now", harness.clock.now)
    added = sign_request(
        harness.identities.workloads[workload],
        method=method,
        path=path,
        query=query,
        body=body,
        audience=audience or ORIGIN + path,
        headers=request_headers,
        **kwargs,
    )
    return {**request_headers, **added}


def send(
    harness: GatewayHarness,
    headers: dict[str, str],
    *,
    method: str = "GET",
    path: str = PATH,
    query: str = "",
    body: bytes = b"",
    envoy_flag: bool | None = None,
    route: Mapping[str, str] = BODY_ROUTE,
) -> Allowed | Denied | Failed:
    """Check the request on `route`; Envoy's body flag is added when `envoy_flag` says so,
    by default when there is a body (as Envoy does)."""
    target = path + ("?" + query if query else "")
    flagged = bool(body) if envoy_flag is None else envoy_flag
    return harness.check_path(
        target,
        {**(ENVOY_BODY_FLAG if flagged else {}), **headers},
        method=method,
        raw_body=body,
        context=route,
    )


def refused(verdict: Allowed | Denied | Failed, reason: str) -> Denied:
    denied = expect_denied(verdict, reason, 400)
    assert header(denied, "www-authenticate") is None, "a signature failure is not a WPT 401"
    return denied


def policy_input(harness: GatewayHarness, headers: dict[str, str], **kwargs: Any) -> Any:
    seen: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        seen.append(document)

    hook_engine(harness.gateway.pipeline, record)
    verdict = send(harness, headers, **kwargs)
    assert len(seen) == 1, f"the request did not reach the policy: {verdict!r}"
    return seen[0]["wimse"]


# --- accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize("workload", ["frontend", "ops", "batch"])
def test_a_signed_get_is_allowed_for_each_key_type(gateway: GatewayHarness, workload: str) -> None:
    gateway = gateway.rebuild()
    verdict = send(gateway, signed(gateway, workload=workload))
    if workload == "frontend":
        allowed = expect_allowed(verdict)
        assert ("x-wimse-authenticated-by", "http_signature") in allowed.headers
        assert {"signature", "signature-input"} <= set(allowed.headers_to_remove)
    else:
        # Authenticated, then judged by the sample policy (which grants only the frontend).
        assert not isinstance(verdict, Failed)
        assert verdict.reason.value.startswith("policy."), verdict


def test_the_policy_sees_the_signature_as_the_proof(gateway: GatewayHarness) -> None:
    wimse = policy_input(gateway, signed(gateway, query="a=1", nonce="n-1"), query="a=1")
    caller = wimse["caller"]
    assert caller["authenticated_by"] == "http_signature"
    proof = caller["proof"]
    assert proof["type"] == "http_signature"
    assert (proof["nonce"], proof["aud"]) == ("n-1", ORIGIN + PATH)
    assert proof["covered"] == ["@method", "@path", "@query", "workload-identity-token"]
    assert proof["sign_response"] is False


def test_a_signed_post_with_its_digest_is_allowed(gateway: GatewayHarness) -> None:
    body = b'{"item":"cone","amount":1}'
    headers = signed(gateway, method="POST", body=body)
    expect_allowed(send(gateway, headers, method="POST", body=body))


def test_sign_response_is_reported_to_the_policy(gateway: GatewayHarness) -> None:
    headers = signed(gateway, params={"wimse-sign-response": True})
    assert policy_input(gateway, headers)["caller"]["proof"]["sign_response"] is True


# --- per-service proof styles ------------------------------------------------------------


def test_a_signature_to_a_wpt_only_service_is_refused(harness: GatewayHarness) -> None:
    gateway = accepting(harness, "wpt")
    refused(send(gateway, signed(gateway)), "httpsig.not_accepted")


def test_a_wpt_to_a_signature_only_service_is_refused(harness: GatewayHarness) -> None:
    gateway = accepting(harness, "http_signature")
    expect_denied(gateway.check_path(PATH, gateway.signed_headers()), "wpt.not_accepted", 401)


def test_a_signature_only_service_accepts_signatures(harness: GatewayHarness) -> None:
    gateway = accepting(harness, "http_signature")
    expect_allowed(send(gateway, signed(gateway)))


def test_a_wpt_and_a_signature_together_are_ambiguous(gateway: GatewayHarness) -> None:
    headers = {**gateway.signed_headers(), **signed(gateway)}
    headers["workload-identity-token"] = gateway.signed_headers()["workload-identity-token"]
    expect_denied(send(gateway, headers), "credentials.ambiguous")


# --- selection and parameters ------------------------------------------------------------


def test_a_signature_without_the_wimse_tag_is_missing(gateway: GatewayHarness) -> None:
    refused(send(gateway, signed(gateway, params={"tag": "other"})), "httpsig.missing")


def test_two_wimse_tagged_signatures_are_ambiguous(gateway: GatewayHarness) -> None:
    first = signed(gateway, label="a")
    second = sign_request(
        gateway.identities.workloads["frontend"],
        method="GET",
        path=PATH,
        audience=ORIGIN + PATH,
        headers={"workload-identity-token": first["workload-identity-token"]},
        now=gateway.clock.now,
        label="b",
    )
    headers = {
        **first,
        "signature-input": first["signature-input"] + ", " + second["signature-input"],
        "signature": first["signature"] + ", " + second["signature"],
    }
    refused(send(gateway, headers), "httpsig.ambiguous")


def test_another_tagged_signature_beside_the_wimse_one_is_ignored(gateway: GatewayHarness) -> None:
    headers = signed(gateway)
    headers["signature-input"] += ', other=("@method");created=1;tag="cdn"'
    headers["signature"] += ", other=:AAAA:"
    expect_allowed(send(gateway, headers))


def test_a_repeated_label_is_malformed(gateway: GatewayHarness) -> None:
    headers = signed(gateway)
    headers["signature-input"] += ", " + headers["signature-input"]
    refused(send(gateway, headers), "httpsig.malformed")


@pytest.mark.parametrize(
    "value",
    [
        "wimse=",
        "wimse=(",
        'wimse=("@method" 12);tag="wimse-workload-to-workload"',
        "WIMSE=()",
        "wimse=(),",
        "é",
    ],
)
def test_unparseable_signature_input_is_malformed(gateway: GatewayHarness, value: str) -> None:
    headers = signed(gateway)
    headers["signature-input"] = value
    refused(send(gateway, headers), "httpsig.malformed")


def test_a_signature_header_without_the_label_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway)
    headers["signature"] = headers["signature"].replace("wimse=", "other=")
    refused(send(gateway, headers), "httpsig.signature_missing")


def test_an_oversized_signature_header_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway)
    headers["signature"] += ", pad=:" + base64.b64encode(bytes(9000)).decode() + ":"
    refused(send(gateway, headers), "httpsig.too_large")


@pytest.mark.parametrize("name", ["created", "expires", "nonce", "wimse-aud"])
def test_a_required_parameter_missing_is_refused(gateway: GatewayHarness, name: str) -> None:
    refused(send(gateway, signed(gateway, params={name: None})), "httpsig.param_missing")


@pytest.mark.parametrize(
    "params",
    [
        {"created": "1800000000"},
        {"expires": True},
        {"nonce": 7},
        {"nonce": ""},
        {"nonce": "n" * 257},
        {"wimse-aud": 1},
        {"wimse-sign-response": "yes"},
        {"created": 1_800_000_000, "expires": 1_800_000_000},
    ],
)
def test_a_mistyped_parameter_is_refused(gateway: GatewayHarness, params: dict[str, Any]) -> None:
    refused(send(gateway, signed(gateway, params=params)), "httpsig.param_invalid")


@pytest.mark.parametrize("params", [{"keyid": "frontend-key"}, {"alg": "ed25519"}])
def test_keyid_and_alg_parameters_are_forbidden(
    gateway: GatewayHarness, params: dict[str, Any]
) -> None:
    refused(send(gateway, signed(gateway, params=params)), "httpsig.param_forbidden")


# --- covered components ------------------------------------------------------------------


@pytest.mark.parametrize("dropped", ["@method", "@path", "@query", "workload-identity-token"])
def test_an_always_required_component_must_be_covered(
    gateway: GatewayHarness, dropped: str
) -> None:
    covered = [c for c in ("@method", "@path", "@query", "workload-identity-token") if c != dropped]
    refused(send(gateway, signed(gateway, covered=covered)), "httpsig.coverage_missing")


@pytest.mark.parametrize("name", ["content-type", "authorization", "txn-token"])
def test_a_present_header_the_draft_lists_must_be_covered(
    gateway: GatewayHarness, name: str
) -> None:
    value = gateway.txn_token() if name == "txn-token" else "text/plain"
    if name == "authorization":
        value = "Bearer opaque"
    base = ["@method", "@path", "@query", "workload-identity-token"]
    headers = signed(gateway, headers={name: value}, covered=base)
    refused(send(gateway, headers), "httpsig.coverage_missing")


@pytest.mark.parametrize(
    "component", ['"@query-param";name="a"', '"content-type";sf', '"@method";req', '"@status"']
)
def test_a_component_that_cannot_be_computed_exactly_is_refused(
    gateway: GatewayHarness, component: str
) -> None:
    headers = signed(gateway, headers={"content-type": "text/plain"})
    headers["signature-input"] = headers["signature-input"].replace(")", f" {component})", 1)
    refused(send(gateway, headers), "httpsig.component_unsupported")


def test_a_component_covered_twice_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway)
    headers["signature-input"] = headers["signature-input"].replace(
        '("@method"', '("@method" "@method"', 1
    )
    refused(send(gateway, headers), "httpsig.component_unsupported")


def test_a_covered_header_that_is_absent_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, headers={"x-extra": "1"}, also_cover=["x-extra"])
    del headers["x-extra"]
    refused(send(gateway, headers), "httpsig.component_absent")


def test_a_covered_extra_header_is_verified(gateway: GatewayHarness) -> None:
    headers = signed(gateway, headers={"x-extra": "1"}, also_cover=["x-extra"])
    headers["x-extra"] = "2"
    refused(send(gateway, headers), "httpsig.signature_invalid")


# --- audience, time, signature, replay ---------------------------------------------------


def test_a_signature_for_another_target_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, audience="https://other.example" + PATH)
    refused(send(gateway, headers), "httpsig.audience_mismatch")


def test_a_signature_for_another_path_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, path="/api/other")
    refused(send(gateway, headers), "httpsig.audience_mismatch")


def test_created_in_the_future_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, now=gateway.clock.now + 120)
    refused(send(gateway, headers), "httpsig.created_in_future")


def test_created_within_the_skew_is_accepted(gateway: GatewayHarness) -> None:
    expect_allowed(send(gateway, signed(gateway, now=gateway.clock.now + 20)))


def test_an_expired_signature_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, now=gateway.clock.now - 200, ttl=100)
    refused(send(gateway, headers), "httpsig.expired")


def test_a_long_lived_signature_is_refused(gateway: GatewayHarness) -> None:
    refused(send(gateway, signed(gateway, ttl=3600)), "httpsig.lifetime_too_long")


def test_the_lifetime_bound_is_configurable(harness: GatewayHarness) -> None:
    gateway = accepting(harness, "http_signature").rebuild(
        http_signature={"max_lifetime_seconds": 3600}
    )
    expect_allowed(send(gateway, signed(gateway, ttl=3600)))


def test_a_signature_by_another_workload_key_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway)
    other = signed(gateway, workload="batch")
    headers["signature"] = other["signature"]
    headers["signature-input"] = other["signature-input"]
    refused(send(gateway, headers), "httpsig.signature_invalid")


@pytest.mark.parametrize(("method", "query"), [("DELETE", ""), ("GET", "admin=1")])
def test_a_request_changed_after_signing_is_refused(
    gateway: GatewayHarness, method: str, query: str
) -> None:
    headers = signed(gateway)
    refused(send(gateway, headers, method=method, query=query), "httpsig.signature_invalid")


def test_a_replayed_nonce_is_refused(gateway: GatewayHarness) -> None:
    expect_allowed(send(gateway, signed(gateway, nonce="once")))
    refused(send(gateway, signed(gateway, nonce="once")), "httpsig.replayed")


def test_a_nonce_is_single_use_whoever_sends_it(gateway: GatewayHarness) -> None:
    """http-signature editor's copy: a nonce seen before is refused, regardless of sender."""
    expect_allowed(send(gateway, signed(gateway, nonce="shared")))
    refused(send(gateway, signed(gateway, workload="ops", nonce="shared")), "httpsig.replayed")


def test_a_signature_nonce_and_a_wpt_jti_of_the_same_value_do_not_collide(
    gateway: GatewayHarness,
) -> None:
    expect_allowed(send(gateway, gateway.signed_headers(jti="same-id")))
    expect_allowed(send(gateway, signed(gateway, nonce="same-id")))


def test_an_invalid_wit_with_a_signature_answers_400(gateway: GatewayHarness) -> None:
    headers = signed(gateway)
    headers["workload-identity-token"] = headers["workload-identity-token"][:-4] + "AAAA"
    refused(send(gateway, headers), "wit.signature_invalid")


# --- bodies ------------------------------------------------------------------------------

BODY = b'{"item":"cone","amount":1}'


def test_a_changed_body_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, method="POST", body=BODY)
    changed = BODY.replace(b"1", b"9")
    refused(send(gateway, headers, method="POST", body=changed), "httpsig.digest_mismatch")


def test_a_body_without_a_digest_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, method="POST", headers={"content-length": str(len(BODY))})
    refused(send(gateway, headers, method="POST", body=BODY), "httpsig.digest_missing")


@pytest.mark.parametrize(
    "digest", ["md5=:AAAA:", "sha-256=AAAA", "sha-256=:" + "A" * 43 + "=:, sha-512=("]
)
def test_an_unusable_digest_is_refused(gateway: GatewayHarness, digest: str) -> None:
    headers = signed(gateway, method="POST", body=BODY, headers={"content-digest": digest})
    refused(send(gateway, headers, method="POST", body=BODY), "httpsig.digest_invalid")


def test_a_sha512_digest_is_accepted(gateway: GatewayHarness) -> None:
    import hashlib

    digest = "sha-512=:" + base64.b64encode(hashlib.sha512(BODY).digest()).decode() + ":"
    headers = signed(gateway, method="POST", body=BODY, headers={"content-digest": digest})
    expect_allowed(send(gateway, headers, method="POST", body=BODY))


def test_a_partial_body_is_refused(gateway: GatewayHarness) -> None:
    headers = signed(gateway, method="POST", body=BODY)
    headers["x-envoy-auth-partial-body"] = "true"
    refused(send(gateway, headers, method="POST", body=BODY[:10]), "httpsig.body_partial")


def test_fewer_bytes_than_content_length_is_a_partial_body(gateway: GatewayHarness) -> None:
    headers = signed(gateway, method="POST", body=BODY)
    refused(send(gateway, headers, method="POST", body=BODY[:10]), "httpsig.body_partial")


def test_a_body_envoy_did_not_wait_for_on_a_forwarded_route_is_our_misconfiguration(
    gateway: GatewayHarness,
) -> None:
    """The route says `wimse.body: forwarded`, but the check came without Envoy's flag and
    without the body its Content-Length announces: Envoy does not buffer on this route."""
    headers = signed(gateway, method="POST", body=BODY)
    verdict = send(gateway, headers, method="POST", body=b"", envoy_flag=False)
    failed = expect_failed(verdict, "httpsig.body_not_forwarded")
    assert failed.status == 503


def test_a_body_forwarded_only_as_text_is_our_misconfiguration(gateway: GatewayHarness) -> None:
    """`pack_as_bytes` off: Envoy sends the body as text, not the bytes a digest covers."""
    headers = {**signed(gateway, method="POST", body=BODY), **ENVOY_BODY_FLAG}
    verdict = gateway.check_path(
        PATH, headers, method="POST", body=BODY.decode(), context=BODY_ROUTE
    )
    assert expect_failed(verdict, "httpsig.body_not_forwarded").status == 503


def test_a_misconfigured_forwarded_route_is_reported_before_the_wit_is_verified(
    gateway: GatewayHarness,
) -> None:
    headers = signed(gateway, method="POST", body=BODY)
    headers["workload-identity-token"] = headers["workload-identity-token"][:-4] + "AAAA"
    verdict = send(gateway, headers, method="POST", body=b"", envoy_flag=False)
    assert expect_failed(verdict, "httpsig.body_not_forwarded").status == 503


def test_a_digest_of_an_empty_body_is_checked(gateway: GatewayHarness) -> None:
    headers = signed(gateway, headers={"content-digest": content_digest(b"")})
    expect_allowed(send(gateway, headers))
    wrong = signed(gateway, headers={"content-digest": content_digest(b"x")})
    refused(send(gateway, wrong), "httpsig.digest_mismatch")


def test_a_get_without_a_body_is_verified_without_envoys_body_flag(
    gateway: GatewayHarness,
) -> None:
    """Envoy adds no flag to a request that ended with its headers, even where it buffers."""
    expect_allowed(send(gateway, signed(gateway), envoy_flag=False))


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_a_body_smuggled_under_a_bodyless_signature_is_refused(
    gateway: GatewayHarness, method: str
) -> None:
    """HTTP/1.1 chunked or HTTP/2 without content-length: the check announces no body, but
    Envoy forwarded one on this route, and the signature covers no digest of it."""
    headers = signed(gateway, method=method)
    refused(send(gateway, headers, method=method, body=BODY), "httpsig.digest_missing")


def test_a_partial_body_flag_other_than_false_is_not_trusted(gateway: GatewayHarness) -> None:
    headers = signed(gateway, method="POST", body=BODY)
    headers["x-envoy-auth-partial-body"] = "false,true"
    refused(send(gateway, headers, method="POST", body=BODY), "httpsig.body_partial")


# --- routes: signatures only where the route declares `wimse.body: forwarded` --------------

NO_BODY_ROUTE: dict[str, str] = {}
"""A route without `wimse.body` (like `/api/canary/` in deploy/envoy/gateway.yaml)."""


@pytest.mark.parametrize(
    ("method", "body", "extra"),
    [
        pytest.param("GET", None, {}, id="get"),
        pytest.param("HEAD", None, {}, id="head"),
        pytest.param("POST", BODY, {}, id="post-with-digest"),
        pytest.param("GET", None, ENVOY_BODY_FLAG, id="get-with-client-sent-envoy-flag"),
        pytest.param("POST", None, {"x-envoy-auth-partial-body": "true"}, id="post-flag-true"),
    ],
)
def test_a_signed_request_on_a_route_without_wimse_body_is_refused(
    gateway: GatewayHarness,
    caplog: pytest.LogCaptureFixture,
    method: str,
    body: bytes | None,
    extra: dict[str, str],
) -> None:
    headers = {**signed(gateway, method=method, body=body), **extra}
    with caplog.at_level(logging.INFO, logger="authz.pipeline"):
        verdict = send(gateway, headers, method=method, body=body or b"", route=NO_BODY_ROUTE)
    refused(verdict, "httpsig.not_accepted")
    assert "wimse.body: forwarded" in caplog.text


def test_a_route_without_wimse_body_refuses_a_signature_before_verifying_anything(
    gateway: GatewayHarness,
) -> None:
    headers = signed(gateway)
    headers["workload-identity-token"] = headers["workload-identity-token"][:-4] + "AAAA"
    headers["signature"] = "wimse=:AAAA:"
    refused(send(gateway, headers, route=NO_BODY_ROUTE), "httpsig.not_accepted")


def test_a_wpt_is_accepted_on_a_route_without_wimse_body(gateway: GatewayHarness) -> None:
    expect_allowed(gateway.check_path(PATH, gateway.signed_headers(), context=NO_BODY_ROUTE))


@pytest.mark.parametrize("value", ["Forwarded", "true", "", "buffered", "forwarded "])
@pytest.mark.parametrize("proof", ["http_signature", "wpt"])
def test_an_invalid_wimse_body_value_is_a_route_configuration_error(
    gateway: GatewayHarness, value: str, proof: str
) -> None:
    headers = signed(gateway) if proof == "http_signature" else gateway.signed_headers()
    verdict = send(gateway, headers, route={"wimse.body": value})
    assert expect_failed(verdict, "route.config_invalid").status == 503


# --- binding context tokens by coverage --------------------------------------------------


def test_a_covered_user_token_is_bound(gateway: GatewayHarness) -> None:
    headers = signed(
        gateway, headers={USER_TOKEN_HEADER: user_token(gateway)}, also_cover=[USER_TOKEN_HEADER]
    )
    wimse = policy_input(gateway, headers)
    assert wimse["user"]["token"]["sub"] == "alice"
    assert USER_TOKEN_HEADER in wimse["caller"]["proof"]["bound_headers"]


def test_an_uncovered_user_token_is_unbound(gateway: GatewayHarness) -> None:
    headers = signed(gateway, headers={USER_TOKEN_HEADER: user_token(gateway)})
    expect_denied(send(gateway, headers), "user.unbound", 400)


def test_a_covered_txn_token_is_bound(gateway: GatewayHarness) -> None:
    headers = signed(gateway, headers={"txn-token": gateway.txn_token()})
    wimse = policy_input(gateway, headers)
    assert wimse["txn"]["bound_by"] == "http_signature"
    assert "txn-token" in wimse["caller"]["proof"]["bound_headers"]
