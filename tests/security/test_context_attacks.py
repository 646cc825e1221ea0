"""Attacks on the context tokens: Txn-Token, end-user token, attestation results (EAR).

Each group starts from a valid WPT-authenticated request (frontend `GET /api/hello`) that
carries the context token under attack, bound by the WPT (`tth`, `oth`), and changes one
thing. The gateway runs a permissive test policy (allow everything), so an attack that slips
through is an allow and fails the test, and the control cases show the unmodified request
is accepted; the sample policy in `policies/` plays no part. Every refusal must name the
first check that failed and be a 401 with `WWW-Authenticate: WPT`: never an allow, never a
5xx.

What reaches the policy is read from the input document itself (captured before the policy
runs): a Txn-Token never makes a caller, stale or mixed attestation results are reported
with the status they deserve.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz.answers import Allowed, Failed, Verdict
from authz.credentials.claims import token_hash
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit, mint_wpt
from authz.devtools.stack import (
    ATTESTATION_HEADER,
    ATTESTATION_VERIFIER,
    SERVICE_ID,
    TRUST_DOMAIN,
    USER_TOKEN_HEADER,
)
from tests.security.forgery import (
    AUTHORIZATION,
    DROP,
    WIT_HEADER,
    Forge,
    attacker_key,
    compact,
    compact_json,
    expect_refused,
    key_bearing_header,
    public_jwk_json,
    public_pem,
    write_policy,
)
from tests.support import (
    NOW,
    ORIGIN,
    GatewayHarness,
    check_request,
    expect_allowed,
    hook_engine,
)

T = int(NOW)
"""The harness clock's time, as the integer NumericDate tokens carry."""
TXN_HEADER = "txn-token"
FRONTEND = "spiffe://demo.example/frontend"
OPS = "spiffe://demo.example/ops"
MAX_CHAIN_HOPS = 8
"""The default `txn_token.max_chain_hops`: the deepest `act` nesting accepted."""
EAR_MAX_AGE = 3600
CLOCK_SKEW = 30
IDENTITY_HEADERS = ("x-wimse-caller", "x-wimse-caller-trust-domain", "x-wimse-authenticated-by")

ALLOW_ALL = """package envoy.authz

import rego.v1

decision := {"allowed": true}
"""

CALLER_REQUIRED = """package envoy.authz

import rego.v1

default decision := {"allowed": false}

decision := {"allowed": true} if input.wimse.caller != null
"""


# =========================================================================================
# Scaffolding
# =========================================================================================


@pytest.fixture
def gateway(harness: GatewayHarness, tmp_path: Path) -> GatewayHarness:
    """The demo gateway with a policy that allows every request reaching it."""
    return harness.rebuild(policy=write_policy(tmp_path / "allow-all", ALLOW_ALL))


@pytest.fixture
def forge(gateway: GatewayHarness) -> Forge:
    return Forge(gateway)


def check(gateway: GatewayHarness, headers: dict[str, str], **kwargs: Any) -> Verdict:
    return gateway.check_path("/api/hello", headers, **kwargs)


def decide(
    gateway: GatewayHarness, headers: dict[str, str], **kwargs: Any
) -> tuple[Verdict, dict[str, Any] | None]:
    """The verdict, and `input.wimse` as the policy saw it (None: policy never ran)."""
    seen: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        seen.append(document["wimse"])

    hook_engine(gateway.gateway.pipeline, record)
    verdict = check(gateway, headers, **kwargs)
    assert not isinstance(verdict, Failed), f"the gateway failed: {verdict!r}"
    assert len(seen) <= 1
    return verdict, (seen[0] if seen else None)


def accepted(gateway: GatewayHarness, headers: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    """Allowed (by the permissive policy); returns `input.wimse`."""
    verdict, wimse = decide(gateway, headers, **kwargs)
    expect_allowed(verdict)
    assert wimse is not None
    return wimse


def signed(
    forge: Forge,
    *,
    txn: str | None = None,
    bound: dict[str, str] | None = None,
    unbound: dict[str, str] | None = None,
    wpt_claims: dict[str, Any] | None = None,
    workload: str = "frontend",
) -> dict[str, str]:
    """A WPT-authenticated request. Its WPT binds `txn` (`tth`) and `bound` (`oth`); all of
    them, and the `unbound` headers, are sent. `wpt_claims` override the bindings."""
    claims: dict[str, Any] = {}
    if txn is not None:
        claims["tth"] = token_hash(txn)
    if bound:
        claims["oth"] = {name: token_hash(value) for name, value in bound.items()}
    claims.update(wpt_claims or {})
    headers = forge.headers(workload=workload, wpt_claims=claims)
    if txn is not None:
        headers[TXN_HEADER] = txn
    headers.update(bound or {})
    headers.update(unbound or {})
    return headers


def nested(depth: int, leaf: str, opening: str, closing: str) -> str:
    """JSON text nesting `leaf` `depth` levels deep (built as text: `json.dumps` would hit the
    same recursion limit the gateway's parser does)."""
    return opening * depth + leaf + closing * depth


def act_chain(depth: int) -> dict[str, Any]:
    """`act` nested `depth` levels deep, each level a different actor."""
    act: dict[str, Any] | None = None
    for level in range(depth, 0, -1):
        act = {"sub": f"spiffe://demo.example/hop-{level}", **({"act": act} if act else {})}
    assert act is not None
    return act


# =========================================================================================
# Controls: the requests the attacks start from are accepted, context and all.
# =========================================================================================


def test_control_bound_txn_token_is_accepted(gateway: GatewayHarness, forge: Forge) -> None:
    txn = forge.txn_token(claims={"tctx": {"order": "o-1"}, "rctx": {"req_ip": "192.0.2.1"}})
    wimse = accepted(gateway, signed(forge, txn=txn))
    assert wimse["caller"]["id"] == FRONTEND
    assert wimse["txn"]["sub"] == "user-4711"
    assert wimse["txn"]["scope"] == ["checkout"]
    assert wimse["txn"]["tctx"] == {"order": "o-1"}
    assert wimse["txn"]["bound_by"] == "wpt"
    assert wimse["txn"]["legacy"] is False
    assert [(hop["id"], hop["source"], hop["verified"]) for hop in wimse["chain"]] == [
        (FRONTEND, "txn.req_wl", False),
        (FRONTEND, "caller.wit", True),
    ]


def test_control_bound_user_token_is_accepted(gateway: GatewayHarness, forge: Forge) -> None:
    wimse = accepted(gateway, signed(forge, bound={USER_TOKEN_HEADER: forge.user_token()}))
    token = wimse["user"]["token"]
    assert (token["type"], token["sub"], token["header"]) == (
        "access_token",
        "alice",
        USER_TOKEN_HEADER,
    )
    assert token["roles"] == ["customer"]


def test_control_bound_ear_is_accepted(gateway: GatewayHarness, forge: Forge) -> None:
    wimse = accepted(gateway, signed(forge, bound={ATTESTATION_HEADER: forge.ear()}))
    attestation = wimse["attestation"]
    assert attestation["status"] == "affirming"
    [result] = attestation["results"]
    assert (result["source"], result["signed_by"], result["fresh"]) == (
        "header",
        ATTESTATION_VERIFIER,
        True,
    )


def test_control_all_three_context_tokens_together_are_accepted(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token()
    bound = {USER_TOKEN_HEADER: forge.user_token(), ATTESTATION_HEADER: forge.ear()}
    wimse = accepted(gateway, signed(forge, txn=txn, bound=bound))
    assert sorted(wimse["caller"]["proof"]["bound_headers"]) == sorted(
        [TXN_HEADER, USER_TOKEN_HEADER, ATTESTATION_HEADER]
    )
    assert wimse["user"]["sub"] == "user-4711"
    assert wimse["user"]["token"]["sub"] == "alice"
    assert wimse["attestation"]["status"] == "affirming"


# =========================================================================================
# Txn-Token: audience, type, lifetime, required claims.
# =========================================================================================


@pytest.mark.parametrize(
    "aud",
    [
        pytest.param([TRUST_DOMAIN], id="list-of-ours"),
        pytest.param(["partner.example", TRUST_DOMAIN], id="list-with-ours"),
    ],
)
def test_control_txn_audience_list_naming_us_is_accepted(
    gateway: GatewayHarness, forge: Forge, aud: list[str]
) -> None:
    txn = forge.txn_token(claims={"aud": aud})
    assert accepted(gateway, signed(forge, txn=txn))["txn"]["aud"] == aud


@pytest.mark.parametrize(
    ("aud", "reason"),
    [
        pytest.param("partner.example", "txn.aud_mismatch", id="another-trust-domain"),
        pytest.param(["partner.example", "other.example"], "txn.aud_mismatch", id="list-without"),
        pytest.param(SERVICE_ID, "txn.aud_mismatch", id="service-id-not-trust-domain"),
        pytest.param("spiffe://demo.example", "txn.aud_mismatch", id="trust-domain-uri"),
        pytest.param("DEMO.EXAMPLE", "txn.aud_mismatch", id="upper-case"),
        pytest.param("demo.example.", "txn.aud_mismatch", id="trailing-dot"),
        pytest.param("evil-demo.example", "txn.aud_mismatch", id="look-alike"),
        pytest.param([], "txn.claim_invalid", id="empty-list"),
        pytest.param([TRUST_DOMAIN, 7], "txn.claim_invalid", id="list-with-number"),
        pytest.param({"demo.example": True}, "txn.claim_invalid", id="object"),
        pytest.param(None, "txn.claim_invalid", id="null"),
        pytest.param(DROP, "txn.claim_missing", id="missing"),
    ],
)
def test_txn_token_for_another_audience_is_refused(
    gateway: GatewayHarness, forge: Forge, aud: object, reason: str
) -> None:
    txn = forge.txn_token(claims={"aud": aud})
    expect_refused(check(gateway, signed(forge, txn=txn)), reason)


@pytest.mark.parametrize(
    "typ", ["txntoken+jwt", "application/txntoken+jwt", "TXNTOKEN+JWT", "Application/TxnToken+JWT"]
)
def test_control_txn_typ_spellings_are_accepted(
    gateway: GatewayHarness, forge: Forge, typ: str
) -> None:
    accepted(gateway, signed(forge, txn=forge.txn_token(header={"typ": typ})))


@pytest.mark.parametrize(
    "typ",
    [
        pytest.param("JWT", id="JWT"),
        pytest.param("jwt", id="jwt"),
        pytest.param("at+jwt", id="access-token"),
        pytest.param("wit+jwt", id="wit"),
        pytest.param("wpt+jwt", id="wpt"),
        pytest.param("txntoken", id="no-suffix"),
        pytest.param("txntoken+jwt; charset=utf-8", id="parameters"),
        pytest.param(" txntoken+jwt", id="leading-space"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param(["txntoken+jwt"], id="list"),
        pytest.param(DROP, id="missing"),
    ],
)
def test_txn_token_with_wrong_typ_is_refused(
    gateway: GatewayHarness, forge: Forge, typ: object
) -> None:
    txn = forge.txn_token(header={"typ": typ})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.typ_invalid")


@pytest.mark.parametrize("typ", ["txn_token", "application/txn_token", "TXN_TOKEN"])
def test_legacy_txn_typ_without_the_switch_is_refused(
    gateway: GatewayHarness, forge: Forge, typ: str
) -> None:
    txn = forge.txn_token(header={"typ": typ})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.legacy_form_disabled")


def test_control_legacy_txn_typ_with_the_switch_is_accepted_and_marked(
    gateway: GatewayHarness,
) -> None:
    legacy = gateway.rebuild(txn_token={"legacy_names": True})
    forge = Forge(legacy)
    txn = forge.txn_token(header={"typ": "txn_token"})
    assert accepted(legacy, signed(forge, txn=txn))["txn"]["legacy"] is True


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"purp": "checkout", "scope": DROP}, "txn.legacy_form_disabled", id="purp"),
        pytest.param({"sub_id": "user-4711", "sub": DROP}, "txn.legacy_form_disabled", id="sub_id"),
        pytest.param({"azd": {"order": "o-1"}}, "txn.legacy_form_disabled", id="azd"),
        pytest.param(
            {"req_ctx": {"req_ip": "192.0.2.1"}}, "txn.legacy_form_disabled", id="req_ctx"
        ),
        pytest.param(
            {"req_wl": "frontend.demo.example,orders.demo.example"},
            "txn.legacy_form_disabled",
            id="req_wl-comma-joined",
        ),
        pytest.param(
            {"req_wl": DROP, "rctx": {"req_wl": [FRONTEND, OPS]}},
            "txn.legacy_form_disabled",
            id="req_wl-list-in-rctx",
        ),
    ],
)
def test_legacy_txn_claim_names_without_the_switch_are_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any], reason: str
) -> None:
    txn = forge.txn_token(claims=changes)
    expect_refused(check(gateway, signed(forge, txn=txn)), reason)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"iat": T - 900, "exp": T - 300}, "txn.expired", id="expired"),
        pytest.param(
            {"iat": T - 600, "exp": T - CLOCK_SKEW - 1}, "txn.expired", id="expired-past-skew"
        ),
        pytest.param({"exp": T + 3600}, "txn.exp_too_far", id="exp-an-hour-ahead"),
        pytest.param({"iat": T - 300, "exp": T + 301}, "txn.lifetime_exceeded", id="lifetime-601s"),
        pytest.param(
            {"iat": T - 86_400, "exp": T + 60}, "txn.lifetime_exceeded", id="lifetime-a-day"
        ),
        pytest.param({"iat": T + 120, "exp": T + 300}, "txn.iat_in_future", id="iat-in-future"),
        pytest.param({"nbf": T + 120}, "txn.not_yet_valid", id="nbf-in-future"),
        pytest.param({"exp": DROP}, "txn.exp_missing", id="exp-missing"),
        pytest.param({"exp": None}, "txn.claim_invalid", id="exp-null"),
        pytest.param({"exp": str(T + 300)}, "txn.claim_invalid", id="exp-string"),
        pytest.param({"exp": True}, "txn.claim_invalid", id="exp-boolean"),
        pytest.param({"exp": 10**400}, "txn.claim_invalid", id="exp-overflow"),
        pytest.param({"iat": str(T)}, "txn.claim_invalid", id="iat-string"),
    ],
)
def test_txn_token_with_bad_lifetime_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any], reason: str
) -> None:
    txn = forge.txn_token(claims=changes)
    expect_refused(check(gateway, signed(forge, txn=txn)), reason)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iat": T - 300, "exp": T + 300}, id="lifetime-exactly-10-min"),
        pytest.param({"iat": T - 600, "exp": T - CLOCK_SKEW + 1}, id="expired-within-skew"),
        pytest.param({"iat": T + CLOCK_SKEW - 1, "exp": T + 300}, id="iat-ahead-within-skew"),
    ],
)
def test_control_txn_lifetimes_at_the_limits_are_accepted(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any]
) -> None:
    accepted(gateway, signed(forge, txn=forge.txn_token(claims=changes)))


@pytest.mark.parametrize("claim", ["iat", "txn", "sub", "scope", "req_wl"])
def test_txn_token_missing_a_required_claim_is_refused(
    gateway: GatewayHarness, forge: Forge, claim: str
) -> None:
    # `aud` and `exp` are covered with the audience and lifetime attacks.
    txn = forge.txn_token(claims={claim: DROP})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.claim_missing")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"txn": 7}, id="txn-number"),
        pytest.param({"txn": ""}, id="txn-empty"),
        pytest.param({"sub": ""}, id="sub-empty"),
        pytest.param({"sub": {"id": "user-4711"}}, id="sub-object"),
        pytest.param({"sub": "u" * 5000}, id="sub-too-long"),
        pytest.param({"scope": ["checkout"]}, id="scope-list"),
        pytest.param({"req_wl": [FRONTEND]}, id="req_wl-list"),
        pytest.param({"req_wl": ""}, id="req_wl-empty"),
        pytest.param({"req_wl": "front\nend"}, id="req_wl-control-character"),
        pytest.param({"tctx": "order=o-1"}, id="tctx-string"),
        pytest.param({"tctx": [{"order": "o-1"}]}, id="tctx-list"),
        pytest.param({"rctx": ["192.0.2.1"]}, id="rctx-list"),
        pytest.param({"iss": 5}, id="iss-number"),
    ],
)
def test_txn_token_with_a_mistyped_claim_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any]
) -> None:
    txn = forge.txn_token(claims=changes)
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.claim_invalid")


def spliced(claims: dict[str, Any], members: str) -> bytes:
    """`claims` as JSON text with `members` (raw JSON text) appended inside the object."""
    return compact_json(claims)[:-1] + b"," + members.encode() + b"}"


@pytest.mark.parametrize(
    ("drop", "members"),
    [
        pytest.param("aud", '"aud":"partner.example","aud":"demo.example"', id="duplicate-aud"),
        pytest.param("sub", '"sub":"user-4711","sub":"admin"', id="duplicate-sub"),
        pytest.param("exp", '"exp":NaN', id="exp-nan"),
        pytest.param("exp", '"exp":Infinity', id="exp-infinity"),
    ],
)
def test_txn_token_with_ambiguous_json_is_refused(
    gateway: GatewayHarness, forge: Forge, drop: str, members: str
) -> None:
    txn = forge.txn_token(raw_claims=spliced(forge.txn_claims({drop: DROP}), members))
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.malformed")


def test_txn_token_whose_claims_are_not_an_object_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(raw_claims=b'["demo.example"]')
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.malformed")


# =========================================================================================
# Txn-Token: binding by the WPT's `tth`.
# =========================================================================================


def test_txn_token_without_tth_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    headers = signed(forge, unbound={TXN_HEADER: forge.txn_token()})
    expect_refused(check(gateway, headers), "wpt.tth_missing")


@pytest.mark.parametrize("tth", [None, 7, ["x"]], ids=["null", "number", "list"])
def test_txn_token_with_non_string_tth_is_refused(
    gateway: GatewayHarness, forge: Forge, tth: object
) -> None:
    headers = signed(forge, txn=forge.txn_token(), wpt_claims={"tth": tth})
    expect_refused(check(gateway, headers), "wpt.tth_missing")


def test_txn_token_with_tth_of_another_token_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    other = forge.txn_token()
    headers = signed(forge, txn=forge.txn_token(), wpt_claims={"tth": token_hash(other)})
    expect_refused(check(gateway, headers), "wpt.tth_mismatch")


def test_tth_without_a_txn_token_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    headers = signed(forge, wpt_claims={"tth": token_hash(forge.txn_token())})
    expect_refused(check(gateway, headers), "wpt.tth_unbound")


def test_wpt_bound_to_a_txn_token_cannot_carry_another(
    gateway: GatewayHarness, forge: Forge
) -> None:
    # A proof captured with one transaction's token, replayed with another token: a fresh
    # jti, so only the binding can notice.
    bound = forge.txn_token()
    headers = signed(forge, txn=bound)
    headers[TXN_HEADER] = forge.txn_token(claims={"sub": "admin", "scope": "refund"})
    expect_refused(check(gateway, headers), "wpt.tth_mismatch")


# =========================================================================================
# Txn-Token: keys and algorithms (the attacker's key really signs).
# =========================================================================================


def _txn_signers(forge: Forge) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    tts_kid = forge.harness.identities.tts["kid"]
    identities = forge.harness.identities
    fresh = attacker_key("ES256")
    return {
        "fresh-key-with-tts-kid": (fresh, {"kid": tts_kid}),
        "fresh-key-without-kid": (fresh, {"kid": DROP}),
        "wit-issuer-key-with-tts-kid": (identities.issuer, {"kid": tts_kid}),
        "wit-issuer-key-without-kid": (identities.issuer, {"kid": DROP}),
        "idp-key-without-kid": (identities.user_issuer, {"kid": DROP}),
        "verifier-key-with-tts-kid": (identities.attestation_verifier, {"kid": tts_kid}),
        "workload-es256-key-without-kid": (identities.workloads["ops"], {"kid": DROP}),
    }


@pytest.mark.parametrize(
    "signer",
    [
        "fresh-key-with-tts-kid",
        "fresh-key-without-kid",
        "wit-issuer-key-with-tts-kid",
        "wit-issuer-key-without-kid",
        "idp-key-without-kid",
        "verifier-key-with-tts-kid",
        "workload-es256-key-without-kid",
    ],
)
def test_txn_token_signed_by_an_untrusted_key_is_refused(
    gateway: GatewayHarness, forge: Forge, signer: str
) -> None:
    key, changes = _txn_signers(forge)[signer]
    txn = forge.txn_token(header=changes, key=key)
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.signature_invalid")


@pytest.mark.parametrize("signer", ["issuer", "user_issuer", "attestation_verifier"])
def test_txn_token_naming_another_signers_kid_is_refused(
    gateway: GatewayHarness, forge: Forge, signer: str
) -> None:
    # Each of these keys is trusted for something else; the TTS anchors know none of them.
    key = getattr(gateway.identities, signer)
    txn = forge.txn_token(header={"kid": key["kid"]}, key=key)
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.kid_unknown")


def test_txn_token_with_unknown_kid_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    txn = forge.txn_token(header={"kid": "tts-next"})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.kid_unknown")


def test_control_txn_token_without_kid_is_accepted_and_named_by_its_verifying_key(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(header={"kid": DROP})
    tts = gateway.identities.tts["kid"]
    assert accepted(gateway, signed(forge, txn=txn))["txn"]["kid"] == tts


@pytest.mark.parametrize("kid", [None, 7, ["k"]], ids=["null", "number", "list"])
def test_txn_token_with_non_string_kid_is_refused(
    gateway: GatewayHarness, forge: Forge, kid: object
) -> None:
    txn = forge.txn_token(header={"kid": kid})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.malformed")


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_txn_token_with_key_bearing_header_is_refused(
    gateway: GatewayHarness, forge: Forge, name: str
) -> None:
    key = attacker_key("ES256")
    txn = forge.txn_token(header={"kid": DROP, name: key_bearing_header(name, key)}, key=key)
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.header_key_forbidden")


@pytest.mark.parametrize("name", ["jwk", "jku", "x5c"])
def test_txn_token_with_key_bearing_header_and_the_tts_signature_is_refused(
    gateway: GatewayHarness, forge: Forge, name: str
) -> None:
    # Signed by the real TTS key: a header naming a key is refused all the same.
    txn = forge.txn_token(header={name: key_bearing_header(name, attacker_key("ES256"))})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.header_key_forbidden")


def test_unsigned_txn_token_with_alg_none_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    header_bytes = compact_json(forge.txn_header({"alg": "none", "kid": DROP}))
    txn = compact(header_bytes, compact_json(forge.txn_claims()), None)
    assert txn.endswith(".")
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.malformed")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_txn_token_with_alg_none_and_a_signature_is_refused(
    gateway: GatewayHarness, forge: Forge, alg: str
) -> None:
    txn = forge.txn_token(header={"alg": alg})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.alg_not_allowed")


SECRETS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "public-pem": public_pem,
    "public-jwk-json": public_jwk_json,
}


@pytest.mark.parametrize("kid", ["tts-kid", "no-kid"])
@pytest.mark.parametrize("secret", SECRETS)
def test_txn_token_hmac_signed_with_the_tts_public_key_is_refused(
    gateway: GatewayHarness, forge: Forge, secret: str, kid: str
) -> None:
    secret_bytes = SECRETS[secret](gateway.identities.tts)
    changes: dict[str, Any] = {"alg": "HS256"} | ({} if kid == "tts-kid" else {"kid": DROP})
    txn = forge.txn_token(header=changes, key=secret_bytes)
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.alg_not_allowed")


@pytest.mark.parametrize("alg", ["ES384", "ES512", "RS256", "EdDSA", "Ed25519", "ES256K", ""])
def test_txn_token_with_alg_outside_the_tts_list_is_refused(
    gateway: GatewayHarness, forge: Forge, alg: str
) -> None:
    txn = forge.txn_token(header={"alg": alg})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.alg_not_allowed")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"crit": ["exp"]}, "txn.crit_unsupported", id="crit"),
        pytest.param({"crit": []}, "txn.crit_unsupported", id="crit-empty"),
        pytest.param({"b64": False}, "txn.b64_unsupported", id="b64-false"),
    ],
)
def test_txn_token_with_unsupported_extension_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any], reason: str
) -> None:
    txn = forge.txn_token(header=changes)
    expect_refused(check(gateway, signed(forge, txn=txn)), reason)


def test_txn_token_for_a_trust_domain_without_tts_anchors_is_refused(
    gateway: GatewayHarness,
) -> None:
    # demo.example without a `txn_token_service`: no Txn-Token can verify for it.
    trust = gateway.directory / "trust"
    no_tts = gateway.rebuild(
        trust_domains={
            TRUST_DOMAIN: {
                "algorithms": ["ES256"],
                "jwks_file": str(trust / f"{TRUST_DOMAIN}.jwks.json"),
            }
        }
    )
    forge = Forge(no_tts)
    expect_refused(check(no_tts, signed(forge, txn=forge.txn_token())), "txn.trust_domain_unknown")


# =========================================================================================
# Txn-Token: repeated headers and size.
# =========================================================================================


def test_two_txn_tokens_bound_as_one_value_are_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    # Envoy joins repeated headers with a comma; the WPT binds exactly what arrives.
    joined = f"{forge.txn_token()},{forge.txn_token()}"
    expect_refused(check(gateway, signed(forge, txn=joined)), "txn.multiple")


def test_two_txn_tokens_with_tth_of_the_first_are_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    first = forge.txn_token()
    headers = signed(forge, txn=first)
    headers[TXN_HEADER] = f"{first},{forge.txn_token(claims={'sub': 'admin'})}"
    expect_refused(check(gateway, headers), "wpt.tth_mismatch")


def test_two_txn_tokens_without_a_caller_are_refused(gateway: GatewayHarness, forge: Forge) -> None:
    joined = f"{forge.txn_token()},{forge.txn_token()}"
    expect_refused(check(gateway, {TXN_HEADER: joined}), "txn.multiple")


def test_repeated_txn_token_in_raw_header_map_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    first, second = forge.txn_token(), forge.txn_token()
    headers = signed(forge, wpt_claims={"tth": token_hash(f"{first},{second}")})
    request = check_request("/api/hello", {})
    entries = [*headers.items(), ("Txn-Token", first), ("txn-token", second)]
    for name, value in entries:
        request.attributes.request.http.header_map.headers.add(
            key=name, raw_value=value.encode("utf-8")
        )
    expect_refused(gateway.check(request), "txn.multiple")


@pytest.mark.parametrize(
    "mutation",
    [
        pytest.param(lambda t: t + "\u00e9", id="non-ascii"),
        pytest.param(lambda t: t + ".", id="four-segments"),
        pytest.param(lambda t: t.rpartition(".")[0], id="two-segments"),
        pytest.param(lambda t: t + "=", id="padded-signature"),
        pytest.param(lambda t: "Bearer " + t, id="scheme-prefix"),
    ],
)
def test_malformed_txn_token_is_refused(
    gateway: GatewayHarness, forge: Forge, mutation: Callable[[str], str]
) -> None:
    txn = mutation(forge.txn_token())
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.malformed")


def test_oversized_txn_token_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    txn = forge.txn_token(claims={"tctx": {"padding": "t" * 9000}})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.too_large")


def test_oversized_txn_token_without_a_caller_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(claims={"tctx": {"padding": "t" * 9000}})
    expect_refused(check(gateway, {TXN_HEADER: txn}), "txn.too_large")


def test_control_large_txn_token_under_the_limit_is_accepted(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(claims={"tctx": {"padding": "t" * 5000}})
    assert 6000 < len(txn) < 8 * 1024
    wimse = accepted(gateway, signed(forge, txn=txn))
    assert wimse["txn"]["tctx"] == {"padding": "t" * 5000}


# =========================================================================================
# The Txn-Token is context, never a credential: it makes no caller.
# =========================================================================================


def test_txn_token_alone_reaches_policy_without_a_caller(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(claims={"act": {"sub": OPS}})
    verdict, wimse = decide(gateway, {TXN_HEADER: txn})
    assert wimse is not None, "a valid Txn-Token alone should still reach the policy"
    assert wimse["caller"] is None
    assert wimse["txn"]["req_wl"] == FRONTEND
    assert wimse["txn"]["bound_by"] is None
    assert wimse["chain"], "the chain should show what the Txn-Token asserts"
    assert not any(hop["verified"] for hop in wimse["chain"])
    assert {hop["source"] for hop in wimse["chain"]} == {"txn.req_wl", "txn.act"}
    # The permissive policy allows it, but no identity is claimed upstream.
    allowed = expect_allowed(verdict)
    assert not [name for name, _ in allowed.headers if name in IDENTITY_HEADERS]
    assert set(IDENTITY_HEADERS) <= set(allowed.headers_to_remove)


def test_txn_token_alone_does_not_satisfy_a_policy_requiring_a_caller(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    gateway = harness.rebuild(policy=write_policy(tmp_path / "caller", CALLER_REQUIRED))
    forge = Forge(gateway)
    expect_refused(check(gateway, {TXN_HEADER: forge.txn_token()}), "policy.unauthenticated")
    # Control: the same policy allows the same Txn-Token with an authenticated caller.
    txn = forge.txn_token()
    expect_allowed(check(gateway, signed(forge, txn=txn)))


def test_txn_token_alone_makes_no_caller_even_with_mtls_enabled(
    gateway: GatewayHarness,
) -> None:
    mtls = gateway.rebuild(mtls={"authenticate": True})
    wimse = accepted(mtls, {TXN_HEADER: Forge(mtls).txn_token()})
    assert wimse["caller"] is None
    assert not any(hop["verified"] for hop in wimse["chain"])


def test_control_mtls_caller_with_a_txn_token_is_the_caller(gateway: GatewayHarness) -> None:
    mtls = gateway.rebuild(mtls={"authenticate": True})
    txn = Forge(mtls).txn_token(claims={"req_wl": OPS})
    wimse = accepted(mtls, {TXN_HEADER: txn}, principal=FRONTEND)
    assert (wimse["caller"]["id"], wimse["caller"]["authenticated_by"]) == (FRONTEND, "mtls")
    assert wimse["txn"]["bound_by"] is None
    assert [(hop["id"], hop["verified"]) for hop in wimse["chain"]] == [
        (OPS, False),
        (FRONTEND, True),
    ]


def test_txn_token_as_bearer_access_token_is_neither_caller_nor_context(
    gateway: GatewayHarness, forge: Forge
) -> None:
    wimse = accepted(gateway, {AUTHORIZATION: "Bearer " + forge.txn_token()})
    assert wimse["caller"] is None
    assert wimse["txn"] is None
    assert wimse["chain"] == []


def test_txn_token_presented_as_the_wit_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    # Signed by the TTS, for the frontend: still not a WIT.
    txn = forge.txn_token()
    expect_refused(check(gateway, forge.headers(wit=txn)), "wit.typ_invalid")


@pytest.mark.parametrize("token", ["wit", "user", "ear"])
def test_other_tokens_presented_as_the_txn_token_are_refused(
    gateway: GatewayHarness, forge: Forge, token: str
) -> None:
    makers: dict[str, Callable[[], str]] = {
        "wit": forge.wit,
        "user": forge.user_token,
        "ear": forge.ear,
    }
    value = makers[token]()
    expect_refused(check(gateway, signed(forge, txn=value)), "txn.typ_invalid")


def test_act_naming_another_workload_does_not_change_the_caller(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(claims={"act": {"sub": OPS}, "req_wl": OPS})
    wimse = accepted(gateway, signed(forge, txn=txn))
    assert wimse["caller"]["id"] == FRONTEND
    verified = [hop["id"] for hop in wimse["chain"] if hop["verified"]]
    assert verified == [FRONTEND]


# =========================================================================================
# `act` nesting and deep or huge `tctx`.
# =========================================================================================


def test_control_act_at_the_maximum_depth_is_accepted(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(claims={"act": act_chain(MAX_CHAIN_HOPS)})
    wimse = accepted(gateway, signed(forge, txn=txn))
    sources = [hop["source"] for hop in wimse["chain"]]
    assert sources == [
        "txn.req_wl",
        *["txn.act.prior"] * (MAX_CHAIN_HOPS - 1),
        "txn.act",
        "caller.wit",
    ]
    assert wimse["txn"]["act"]["sub"] == "spiffe://demo.example/hop-1"
    assert "act" not in wimse["txn"]["act"]


def test_act_one_level_too_deep_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    txn = forge.txn_token(claims={"act": act_chain(MAX_CHAIN_HOPS + 1)})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.act_too_deep")


def test_act_depth_follows_the_configured_bound(gateway: GatewayHarness) -> None:
    shallow = gateway.rebuild(txn_token={"max_chain_hops": 2})
    forge = Forge(shallow)
    accepted(shallow, signed(forge, txn=forge.txn_token(claims={"act": act_chain(2)})))
    txn = forge.txn_token(claims={"act": act_chain(3)})
    expect_refused(check(shallow, signed(forge, txn=txn)), "txn.act_too_deep")


def _act_bomb(forge: Forge, depth: int) -> str:
    """A Txn-Token whose `act` nests `depth` levels (short `sub`s: about 17 bytes a level)."""
    bomb = nested(depth, '{"sub":"x"}', '{"sub":"x","act":', "}")
    return forge.txn_token(raw_claims=spliced(forge.txn_claims(), '"act":' + bomb))


def test_act_bomb_beyond_json_recursion_is_malformed_not_a_crash(
    gateway: GatewayHarness,
) -> None:
    # Limits raised so the nesting, not the size limit, is what the gateway meets first.
    roomy = gateway.rebuild(
        limits={"token_header_bytes": 256 * 1024, "credential_headers_bytes": 512 * 1024}
    )
    forge = Forge(roomy)
    txn = _act_bomb(forge, 2000)
    expect_refused(check(roomy, signed(forge, txn=txn)), "txn.malformed")
    expect_refused(check(roomy, {TXN_HEADER: txn}), "txn.malformed")


def test_act_bomb_under_default_limits_is_too_large(gateway: GatewayHarness, forge: Forge) -> None:
    txn = _act_bomb(forge, 2000)
    assert 8 * 1024 < len(txn) < 60 * 1024
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.too_large")
    # Bigger still: the whole set of credential headers is over its own limit first.
    huge = _act_bomb(forge, 4000)
    expect_refused(check(gateway, signed(forge, txn=huge)), "credentials.too_large")


@pytest.mark.parametrize(
    "act",
    [
        pytest.param(FRONTEND, id="string"),
        pytest.param([{"sub": FRONTEND}], id="list"),
        pytest.param(7, id="number"),
        pytest.param(True, id="boolean"),
        pytest.param({}, id="empty-object"),
        pytest.param({"iss": "https://tts.demo.example"}, id="without-sub"),
        pytest.param({"sub": 7}, id="sub-number"),
        pytest.param({"sub": ""}, id="sub-empty"),
        pytest.param({"sub": "spiffe://demo.example/x\u0000"}, id="sub-control-character"),
        pytest.param({"sub": "s" * 5000}, id="sub-too-long"),
        pytest.param({"sub": FRONTEND, "act": {"iss": "x"}}, id="nested-without-sub"),
        pytest.param({"sub": FRONTEND, "act": "ops"}, id="nested-string"),
    ],
)
def test_act_of_the_wrong_shape_is_refused(
    gateway: GatewayHarness, forge: Forge, act: object
) -> None:
    txn = forge.txn_token(claims={"act": act})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.claim_invalid")


def test_huge_tctx_over_the_header_limit_is_too_large(
    gateway: GatewayHarness, forge: Forge
) -> None:
    tctx = {f"k{index}": "v" * 40 for index in range(400)}
    txn = forge.txn_token(claims={"tctx": tctx})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.too_large")


@pytest.mark.parametrize(
    ("shape", "depth"),
    [
        *[("arrays", depth) for depth in (100, 500, 900, 1200, 2500)],
        *[("objects", depth) for depth in (100, 500, 900, 960)],
    ],
)
def test_deeply_nested_tctx_within_the_size_limit_is_handled(
    gateway: GatewayHarness, forge: Forge, shape: str, depth: int
) -> None:
    opening, closing = ("[", "]") if shape == "arrays" else ('{"a":', "}")
    deep = nested(depth, '"leaf"', opening, closing)
    txn = forge.txn_token(raw_claims=spliced(forge.txn_claims(), '"tctx":{"deep":' + deep + "}"))
    assert len(txn) <= 8 * 1024, "the nesting must fit under the header limit"
    verdict, wimse = decide(gateway, signed(forge, txn=txn))
    # Parsed and passed to policy intact, or refused as malformed: never a 5xx.
    if isinstance(verdict, Allowed):
        assert wimse is not None
        assert nesting_depth(wimse["txn"]["tctx"]["deep"]) == depth
    else:
        expect_refused(verdict, "txn.malformed")
        assert wimse is None
    if depth >= 1200:
        # Beyond Python's default recursion limit: the parser gives up, cleanly.
        expect_refused(verdict, "txn.malformed")


def nesting_depth(value: object) -> int:
    """How deeply `value` nests lists/objects (iteratively: it may be very deep)."""
    depth = 0
    while isinstance(value, list | dict):
        depth += 1
        value = value[0] if isinstance(value, list) else value["a"]
    return depth


# =========================================================================================
# `oth`: a binding for a header this gateway does not read.
# =========================================================================================


def test_oth_naming_an_unconfigured_header_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    headers = signed(forge, bound={"x-not-configured": "value"})
    expect_refused(check(gateway, headers), "wpt.oth_unknown_header")


def test_oth_naming_an_unconfigured_header_next_to_the_user_token_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    bound = {USER_TOKEN_HEADER: forge.user_token(), "x-not-configured": "value"}
    expect_refused(check(gateway, signed(forge, bound=bound)), "wpt.oth_unknown_header")


@pytest.mark.parametrize("name", ["X-User-Token", "x-user-token ", "txn-token"])
def test_oth_naming_a_context_header_in_another_spelling_is_refused(
    gateway: GatewayHarness, forge: Forge, name: str
) -> None:
    token = forge.user_token()
    headers = signed(
        forge,
        wpt_claims={"oth": {name: token_hash(token)}},
        unbound={USER_TOKEN_HEADER: token},
    )
    expect_refused(check(gateway, headers), "wpt.oth_unknown_header")


# =========================================================================================
# End-user token.
# =========================================================================================


def test_unbound_user_token_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    headers = signed(forge, unbound={USER_TOKEN_HEADER: forge.user_token()})
    expect_refused(check(gateway, headers), "user.unbound")


def test_unbound_user_token_from_a_wpt_caller_is_refused_even_when_mtls_callers_may_skip(
    gateway: GatewayHarness,
) -> None:
    # `accept_from_mtls_callers` is about callers that cannot bind; a WPT caller can.
    lenient = gateway.rebuild(user_token={"accept_from_mtls_callers": True})
    forge = Forge(lenient)
    headers = signed(forge, unbound={USER_TOKEN_HEADER: forge.user_token()})
    expect_refused(check(lenient, headers), "user.unbound")


def test_oversized_user_token_is_refused_before_parsing(
    gateway: GatewayHarness, forge: Forge
) -> None:
    token = forge.user_token(claims={"padding": "u" * 9000})
    expect_refused(
        check(gateway, signed(forge, bound={USER_TOKEN_HEADER: token})), "credentials.too_large"
    )


def test_user_token_bound_by_hash_of_another_token_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    headers = signed(forge, bound={USER_TOKEN_HEADER: forge.user_token()})
    headers[USER_TOKEN_HEADER] = forge.user_token(claims={"sub": "admin", "roles": ["admin"]})
    expect_refused(check(gateway, headers), "wpt.oth_mismatch")


def test_user_token_bound_but_not_sent_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    headers = signed(forge, bound={USER_TOKEN_HEADER: forge.user_token()})
    del headers[USER_TOKEN_HEADER]
    expect_refused(check(gateway, headers), "wpt.oth_header_missing")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"aud": "https://other-api.example"}, "user.aud_mismatch", id="other-aud"),
        pytest.param({"aud": ["a", "b"]}, "user.aud_mismatch", id="aud-list-without"),
        pytest.param({"aud": "demo-client"}, "user.aud_mismatch", id="aud-client-id"),
        pytest.param({"aud": DROP}, "user.claim_missing", id="aud-missing"),
        pytest.param({"aud": 7}, "user.claim_invalid", id="aud-number"),
        pytest.param({"iat": T - 900, "exp": T - 300}, "user.expired", id="expired"),
        pytest.param({"exp": DROP}, "user.exp_missing", id="exp-missing"),
        pytest.param({"exp": T + 7200}, "user.exp_too_far", id="exp-too-far"),
        pytest.param({"iat": T + 120}, "user.iat_in_future", id="iat-in-future"),
        pytest.param({"nbf": T + 120}, "user.not_yet_valid", id="nbf-in-future"),
        pytest.param({"client_id": DROP}, "user.claim_missing", id="client_id-missing"),
        pytest.param({"jti": DROP}, "user.claim_missing", id="jti-missing"),
        pytest.param({"sub": DROP}, "user.claim_missing", id="sub-missing"),
        pytest.param({"sub": None}, "user.claim_invalid", id="sub-null"),
        pytest.param({"roles": "admin"}, "user.claim_invalid", id="roles-string"),
        pytest.param({"scope": ["orders:read"]}, "user.claim_invalid", id="scope-list"),
    ],
)
def test_user_token_with_bad_claims_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any], reason: str
) -> None:
    token = forge.user_token(claims=changes)
    expect_refused(check(gateway, signed(forge, bound={USER_TOKEN_HEADER: token})), reason)


@pytest.mark.parametrize(
    "iss",
    [
        pytest.param("https://idp.evil.example", id="unknown"),
        pytest.param("https://idp.demo.example/", id="trailing-slash"),
        pytest.param("https://IDP.demo.example", id="upper-case"),
        pytest.param(7, id="number"),
        pytest.param(DROP, id="missing"),
    ],
)
def test_user_token_from_an_unknown_issuer_is_refused(
    gateway: GatewayHarness, forge: Forge, iss: object
) -> None:
    # Signed by the attacker's own key, as an issuer of their own would be.
    key = attacker_key("ES256")
    token = forge.user_token(header={"kid": key["kid"]}, claims={"iss": iss}, key=key)
    expect_refused(
        check(gateway, signed(forge, bound={USER_TOKEN_HEADER: token})), "user.issuer_unknown"
    )


@pytest.mark.parametrize(
    ("signer", "kid", "reason"),
    [
        pytest.param("tts", "idp", "user.signature_invalid", id="tts-key-with-idp-kid"),
        pytest.param("tts", "own", "user.kid_unknown", id="tts-key-with-tts-kid"),
        pytest.param("tts", None, "user.signature_invalid", id="tts-key-without-kid"),
        pytest.param("issuer", "idp", "user.signature_invalid", id="wit-issuer-key-with-idp-kid"),
        pytest.param("attacker", "idp", "user.signature_invalid", id="fresh-key-with-idp-kid"),
    ],
)
def test_user_token_signed_by_an_untrusted_key_is_refused(
    gateway: GatewayHarness, forge: Forge, signer: str, kid: str | None, reason: str
) -> None:
    identities = gateway.identities
    key = attacker_key("ES256") if signer == "attacker" else getattr(identities, signer)
    kid_value = {"idp": identities.user_issuer["kid"], "own": key["kid"], None: DROP}[kid]
    token = forge.user_token(header={"kid": kid_value}, key=key)
    expect_refused(check(gateway, signed(forge, bound={USER_TOKEN_HEADER: token})), reason)


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        pytest.param({"alg": "none"}, None, "user.alg_not_allowed", id="alg-none"),
        pytest.param({"alg": "HS256"}, "pem", "user.alg_not_allowed", id="hs256-idp-public-pem"),
        pytest.param({"alg": "HS256"}, "jwk", "user.alg_not_allowed", id="hs256-idp-public-jwk"),
        pytest.param({"alg": "ES384"}, None, "user.alg_not_allowed", id="es384"),
        pytest.param({"jku": "https://attacker.example/jwks"}, None, "user.header_key_forbidden"),
        pytest.param({"crit": ["exp"]}, None, "user.crit_unsupported", id="crit"),
    ],
)
def test_user_token_with_a_forged_header_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any], key: str | None, reason: str
) -> None:
    idp = gateway.identities.user_issuer
    secret = {"pem": public_pem, "jwk": public_jwk_json}[key](idp) if key else None
    token = forge.user_token(header=changes, key=secret)
    expect_refused(check(gateway, signed(forge, bound={USER_TOKEN_HEADER: token})), reason)


@pytest.mark.parametrize(
    "typ",
    [
        pytest.param("JWT", id="id-token-JWT"),
        pytest.param(DROP, id="id-token-untyped"),
        pytest.param("txntoken+jwt", id="txn-token"),
        pytest.param("wit+jwt", id="wit"),
        pytest.param("application/jwt", id="application-jwt"),
    ],
)
def test_user_token_with_another_typ_is_refused(
    gateway: GatewayHarness, forge: Forge, typ: object
) -> None:
    token = forge.user_token(header={"typ": typ})
    expect_refused(
        check(gateway, signed(forge, bound={USER_TOKEN_HEADER: token})), "user.typ_invalid"
    )


@pytest.mark.parametrize("typ", ["JWT", DROP], ids=["JWT", "untyped"])
def test_control_id_token_with_the_switch_is_accepted(gateway: GatewayHarness, typ: object) -> None:
    ids = gateway.rebuild(user_token={"id_tokens": True})
    forge = Forge(ids)
    token = forge.user_token(header={"typ": typ}, claims={"client_id": DROP, "jti": DROP})
    wimse = accepted(ids, signed(forge, bound={USER_TOKEN_HEADER: token}))
    assert wimse["user"]["token"]["type"] == "id_token"


def test_real_txn_token_presented_as_user_token_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token()
    expect_refused(
        check(gateway, signed(forge, bound={USER_TOKEN_HEADER: txn})), "user.typ_invalid"
    )


def test_two_user_tokens_are_refused(gateway: GatewayHarness, forge: Forge) -> None:
    joined = f"{forge.user_token()},{forge.user_token(claims={'sub': 'admin'})}"
    expect_refused(
        check(gateway, signed(forge, bound={USER_TOKEN_HEADER: joined})), "user.multiple"
    )


def test_user_token_from_an_mtls_only_caller_is_refused(gateway: GatewayHarness) -> None:
    mtls = gateway.rebuild(mtls={"authenticate": True})
    headers = {USER_TOKEN_HEADER: Forge(mtls).user_token()}
    expect_refused(check(mtls, headers, principal=FRONTEND), "user.unbound")


def test_control_user_token_from_an_mtls_caller_when_configured_is_accepted(
    gateway: GatewayHarness,
) -> None:
    mtls = gateway.rebuild(
        mtls={"authenticate": True}, user_token={"accept_from_mtls_callers": True}
    )
    wimse = accepted(mtls, {USER_TOKEN_HEADER: Forge(mtls).user_token()}, principal=FRONTEND)
    assert wimse["caller"]["authenticated_by"] == "mtls"
    assert wimse["user"]["token"]["sub"] == "alice"


@pytest.mark.parametrize("mtls_enabled", [False, True], ids=["default", "mtls-enabled"])
def test_user_token_without_any_caller_is_refused(
    gateway: GatewayHarness, mtls_enabled: bool
) -> None:
    overrides: dict[str, Any] = {"user_token": {"accept_from_mtls_callers": True}}
    if mtls_enabled:
        overrides["mtls"] = {"authenticate": True}
    target = gateway.rebuild(**overrides)
    forge = Forge(target)
    expect_refused(check(target, {USER_TOKEN_HEADER: forge.user_token()}), "user.unbound")
    headers = {USER_TOKEN_HEADER: forge.user_token(), TXN_HEADER: forge.txn_token()}
    expect_refused(check(target, headers), "user.unbound")


# =========================================================================================
# Attestation results (EAR).
# =========================================================================================


def _ear_key(gateway: GatewayHarness, signer: str) -> dict[str, Any]:
    identities = gateway.identities
    return {
        "fresh": attacker_key("ES256"),
        "tts": identities.tts,
        "wit-issuer": identities.issuer,
        "idp": identities.user_issuer,
    }[signer]


@pytest.mark.parametrize(
    ("signer", "kid", "reason"),
    [
        pytest.param("fresh", "verifier", "ear.signature_invalid", id="fresh-key-verifier-kid"),
        pytest.param("fresh", None, "ear.signature_invalid", id="fresh-key-without-kid"),
        pytest.param("fresh", "own", "ear.verifier_unknown", id="fresh-key-own-kid"),
        pytest.param("tts", "own", "ear.verifier_unknown", id="tts-key-tts-kid"),
        pytest.param("tts", "verifier", "ear.signature_invalid", id="tts-key-verifier-kid"),
        pytest.param("tts", None, "ear.signature_invalid", id="tts-key-without-kid"),
        pytest.param("wit-issuer", "own", "ear.verifier_unknown", id="wit-issuer-key"),
        pytest.param("idp", "own", "ear.verifier_unknown", id="idp-key"),
    ],
)
def test_ear_from_an_untrusted_signer_is_refused(
    gateway: GatewayHarness, forge: Forge, signer: str, kid: str | None, reason: str
) -> None:
    key = _ear_key(gateway, signer)
    verifier_kid = gateway.identities.attestation_verifier["kid"]
    kid_value = {"verifier": verifier_kid, "own": key["kid"], None: DROP}[kid]
    ear = forge.ear(header={"kid": kid_value}, key=key)
    expect_refused(check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), reason)


def test_ear_with_unknown_kid_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    ear = forge.ear(header={"kid": "verifier-next"})
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.verifier_unknown"
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"alg": "none"}, "ear.alg_not_allowed", id="alg-none"),
        pytest.param({"alg": "ES384"}, "ear.alg_not_allowed", id="es384"),
        pytest.param({"crit": ["iat"]}, "ear.crit_unsupported", id="crit"),
        pytest.param({"b64": False}, "ear.b64_unsupported", id="b64"),
    ],
)
def test_ear_with_a_forged_header_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any], reason: str
) -> None:
    ear = forge.ear(header=changes)
    expect_refused(check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), reason)


@pytest.mark.parametrize("secret", SECRETS)
def test_ear_hmac_signed_with_the_verifier_public_key_is_refused(
    gateway: GatewayHarness, forge: Forge, secret: str
) -> None:
    key = SECRETS[secret](gateway.identities.attestation_verifier)
    ear = forge.ear(header={"alg": "HS256"}, key=key)
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.alg_not_allowed"
    )


@pytest.mark.parametrize("name", ["jwk", "jku", "x5c"])
def test_ear_with_key_bearing_header_is_refused(
    gateway: GatewayHarness, forge: Forge, name: str
) -> None:
    key = attacker_key("ES256")
    ear = forge.ear(header={"kid": DROP, name: key_bearing_header(name, key)}, key=key)
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.header_key_forbidden"
    )


def test_unsigned_ear_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    header_bytes = compact_json(forge.ear_header({"alg": "none"}))
    ear = compact(header_bytes, compact_json(forge.ear_claims()), None)
    expect_refused(check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.malformed")


def test_unbound_ear_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    headers = signed(forge, unbound={ATTESTATION_HEADER: forge.ear()})
    expect_refused(check(gateway, headers), "ear.unbound")


def test_ear_bound_by_hash_of_another_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    headers = signed(forge, bound={ATTESTATION_HEADER: forge.ear(claims={"iat": T - 10})})
    headers[ATTESTATION_HEADER] = forge.ear()
    expect_refused(check(gateway, headers), "wpt.oth_mismatch")


def test_ear_from_an_mtls_only_caller_is_refused(gateway: GatewayHarness) -> None:
    mtls = gateway.rebuild(mtls={"authenticate": True})
    headers = {ATTESTATION_HEADER: Forge(mtls).ear()}
    expect_refused(check(mtls, headers, principal=FRONTEND), "ear.unbound")


def test_ear_without_any_caller_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    expect_refused(check(gateway, {ATTESTATION_HEADER: forge.ear()}), "ear.unbound")


def test_two_ears_are_refused(gateway: GatewayHarness, forge: Forge) -> None:
    joined = f"{forge.ear()},{forge.ear()}"
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: joined})), "ear.multiple"
    )


@pytest.mark.parametrize(
    ("changes", "fresh", "status"),
    [
        pytest.param({"iat": T - EAR_MAX_AGE}, True, "affirming", id="control-at-max-age"),
        pytest.param({"iat": T - EAR_MAX_AGE - CLOCK_SKEW - 1}, False, "none", id="stale"),
        pytest.param({"iat": T - 30 * 86_400}, False, "none", id="a-month-old"),
        pytest.param({"iat": T - 60, "exp": T - CLOCK_SKEW - 1}, False, "none", id="past-exp"),
    ],
)
def test_stale_ear_is_accepted_with_status_none(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any], fresh: bool, status: str
) -> None:
    wimse = accepted(gateway, signed(forge, bound={ATTESTATION_HEADER: forge.ear(claims=changes)}))
    assert wimse["attestation"]["status"] == status
    [result] = wimse["attestation"]["results"]
    assert (result["fresh"], result["status"]) == (fresh, status)
    # The appraisal itself is still reported as the verifier wrote it.
    assert result["submods"]["CPU"]["status"] == "affirming"


def test_ear_issued_in_the_future_is_refused(gateway: GatewayHarness, forge: Forge) -> None:
    ear = forge.ear(claims={"iat": T + 600})
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.iat_in_future"
    )


@pytest.mark.parametrize("subject", [OPS, "spiffe://evil.example/frontend", FRONTEND + "/"])
def test_ear_about_another_workload_is_refused(
    gateway: GatewayHarness, forge: Forge, subject: str
) -> None:
    ear = forge.ear(claims={"sub": subject})
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.subject_mismatch"
    )


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        pytest.param(DROP, "ear.subject_missing", id="no-sub"),
        pytest.param(None, "ear.subject_missing", id="null-sub"),
        pytest.param("", "ear.subject_mismatch", id="empty-sub"),
    ],
)
@pytest.mark.parametrize("presenter", ["frontend", "ops"])
def test_ear_naming_no_workload_is_refused_whoever_presents_it(
    gateway: GatewayHarness, forge: Forge, subject: object, reason: str, presenter: str
) -> None:
    """An EAR about nobody in particular, obtained by any workload, binds to its own WPT as
    well as to the attested one's: refused unless it names the caller."""
    ear = forge.ear(claims={"sub": subject})
    headers = signed(forge, bound={ATTESTATION_HEADER: ear}, workload=presenter)
    expect_refused(check(gateway, headers), reason)


def test_control_ear_about_the_caller_is_accepted(gateway: GatewayHarness, forge: Forge) -> None:
    ear = forge.ear(claims={"sub": FRONTEND})
    wimse = accepted(gateway, signed(forge, bound={ATTESTATION_HEADER: ear}))
    assert wimse["attestation"]["status"] == "affirming"


def test_ear_in_a_wit_claim_about_another_workload_is_refused(gateway: GatewayHarness) -> None:
    claim = "https://demo.example/claims/ear"
    wit_ear = gateway.rebuild(attestation={"wit_claim": claim})
    forge = Forge(wit_ear)
    bad = forge.wit(claims={claim: forge.ear_claims({"sub": OPS})})
    expect_refused(check(wit_ear, forge.headers(wit=bad)), "ear.subject_mismatch")
    good = forge.wit(claims={claim: forge.ear_claims({"sub": FRONTEND})})
    wimse = accepted(wit_ear, forge.headers(wit=good))
    assert [r["source"] for r in wimse["attestation"]["results"]] == ["wit"]


@pytest.mark.parametrize(
    ("ear", "reason"),
    [
        pytest.param("object-about-ops", "ear.subject_mismatch", id="object-about-another"),
        pytest.param("jwt-fresh-key", "ear.signature_invalid", id="nested-jwt-fresh-key"),
        pytest.param("jwt-tts-key", "ear.verifier_unknown", id="nested-jwt-tts-key"),
        pytest.param("number", "ear.malformed", id="number"),
        pytest.param("mixed-names", "ear.claim_invalid", id="mixed-names"),
    ],
)
def test_bad_ear_in_the_txn_token_rctx_is_refused(
    gateway: GatewayHarness, forge: Forge, ear: str, reason: str
) -> None:
    tts = gateway.identities.tts
    value: object = {
        "object-about-ops": forge.ear_claims({"sub": OPS}),
        "jwt-fresh-key": forge.ear(
            header={"kid": gateway.identities.attestation_verifier["kid"]},
            key=attacker_key("ES256"),
        ),
        "jwt-tts-key": forge.ear(header={"kid": tts["kid"]}, key=tts),
        "number": 2,
        "mixed-names": forge.ear_claims({"ear.verifier-id": {"build": "x"}}),
    }[ear]
    txn = forge.txn_token(claims={"rctx": {"ear": value}})
    expect_refused(check(gateway, signed(forge, txn=txn)), reason)


def test_control_ear_in_the_txn_token_rctx_about_the_origin_is_accepted(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(claims={"rctx": {"ear": forge.ear_claims({"sub": FRONTEND})}})
    wimse = accepted(gateway, signed(forge, txn=txn))
    [result] = wimse["attestation"]["results"]
    assert (result["source"], result["status"], result["signed_by"]) == ("txn", "affirming", None)


AFFIRMING: dict[str, Any] = {
    "ear_status": "affirming",
    "ear_trustworthiness_vector": {"hardware": 2},
}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"submods": {"CPU": {**AFFIRMING, "ear.status": "affirming"}}}, id="status"),
        pytest.param(
            {"submods": {"CPU": {**AFFIRMING, "ear.status": "contraindicated"}}},
            id="status-disagreeing",
        ),
        pytest.param(
            {"submods": {"CPU": {**AFFIRMING, "ear.trustworthiness-vector": {"hardware": 96}}}},
            id="vector",
        ),
        pytest.param(
            {
                "submods": {
                    "CPU": {
                        **AFFIRMING,
                        "ear_appraisal_policy_ids": ["p1"],
                        "ear.appraisal-policy-id": "p2",
                    }
                }
            },
            id="policy-ids",
        ),
        pytest.param(
            {"ear_status": "affirming", "ear.status": "contraindicated"}, id="top-level-status"
        ),
        pytest.param({"ear.verifier-id": {"build": "legacy"}}, id="verifier-id"),
    ],
)
def test_ear_with_mixed_current_and_legacy_names_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any]
) -> None:
    ear = forge.ear(claims=changes)
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.claim_invalid"
    )


def test_control_ear_in_legacy_names_is_accepted(gateway: GatewayHarness, forge: Forge) -> None:
    legacy = {
        "ear.status": "affirming",
        "ear.trustworthiness-vector": {"hardware": 2},
        "ear.appraisal-policy-id": "policy-1",
    }
    ear = forge.ear(
        claims={"ear_verifier_id": DROP, "ear.verifier-id": {"build": "legacy"}},
        submods={"CPU": legacy},
    )
    wimse = accepted(gateway, signed(forge, bound={ATTESTATION_HEADER: ear}))
    [result] = wimse["attestation"]["results"]
    assert result["status"] == "affirming"
    assert result["submods"]["CPU"]["policy_ids"] == ["policy-1"]


@pytest.mark.parametrize(
    ("submods", "top_level", "overall"),
    [
        pytest.param(
            {"CPU": AFFIRMING, "GPU": {"ear_status": "contraindicated"}},
            None,
            "contraindicated",
            id="contraindicated-next-to-affirming",
        ),
        pytest.param(
            {"CPU": AFFIRMING, "GPU": {"ear_status": 96}},
            None,
            "contraindicated",
            id="contraindicated-as-integer",
        ),
        pytest.param(
            {"CPU": AFFIRMING, "GPU": {"ear_trustworthiness_vector": {"hardware": 2}}},
            None,
            "none",
            id="submod-without-status",
        ),
        pytest.param({"CPU": AFFIRMING, "GPU": {}}, None, "none", id="empty-submod"),
        pytest.param(
            {"CPU": AFFIRMING, "GPU": {"ear_status": "warning"}},
            None,
            "warning",
            id="warning-next-to-affirming",
        ),
        pytest.param(
            {"CPU": {"ear_status": "none"}, "GPU": {"ear_status": "warning"}},
            None,
            "warning",
            id="warning-worse-than-none",
        ),
        pytest.param(
            {"CPU": {"ear_status": "contraindicated"}},
            "affirming",
            "contraindicated",
            id="affirming-top-level-over-contraindicated",
        ),
        pytest.param({"CPU": AFFIRMING}, "none", "none", id="none-top-level"),
        pytest.param({"CPU": AFFIRMING, "GPU": AFFIRMING}, None, "affirming", id="control"),
    ],
)
def test_nothing_hides_behind_an_affirming_submod(
    gateway: GatewayHarness,
    forge: Forge,
    submods: dict[str, Any],
    top_level: str | None,
    overall: str,
) -> None:
    changes = {"ear_status": top_level} if top_level is not None else {}
    ear = forge.ear(claims=changes, submods=submods)
    wimse = accepted(gateway, signed(forge, bound={ATTESTATION_HEADER: ear}))
    assert wimse["attestation"]["status"] == overall
    [result] = wimse["attestation"]["results"]
    assert result["status"] == overall


def test_worst_result_wins_across_sources(gateway: GatewayHarness, forge: Forge) -> None:
    # An affirming header EAR does not hide a contraindicated one the TTS asserted.
    bad = forge.ear_claims(submods={"CPU": {"ear_status": "contraindicated"}})
    txn = forge.txn_token(claims={"rctx": {"ear": bad}})
    wimse = accepted(gateway, signed(forge, txn=txn, bound={ATTESTATION_HEADER: forge.ear()}))
    assert wimse["attestation"]["status"] == "contraindicated"
    assert sorted((r["source"], r["status"]) for r in wimse["attestation"]["results"]) == [
        ("header", "affirming"),
        ("txn", "contraindicated"),
    ]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"submods": {}}, id="no-submods"),
        pytest.param({"submods": DROP}, id="submods-missing"),
        pytest.param({"submods": {"CPU": {"ear_status": "trusted"}}}, id="unknown-status"),
        pytest.param({"submods": {"CPU": {"ear_status": 1}}}, id="status-off-tier"),
        pytest.param({"submods": {"CPU": {"ear_status": True}}}, id="status-boolean"),
        pytest.param(
            {"submods": {"CPU": {"ear_trustworthiness_vector": {"hardware": 300}}}},
            id="vector-out-of-range",
        ),
        pytest.param({"submods": {"CPU": "affirming"}}, id="submod-string"),
        pytest.param({"eat_profile": DROP}, id="profile-missing"),
        pytest.param({"iat": DROP}, id="iat-missing"),
        pytest.param({"iat": 10**400}, id="iat-overflow"),
        pytest.param({"sub": 7}, id="sub-number"),
        pytest.param({"submods": {f"m{n}": AFFIRMING for n in range(65)}}, id="too-many-submods"),
    ],
)
def test_ear_with_invalid_claims_is_refused(
    gateway: GatewayHarness, forge: Forge, changes: dict[str, Any]
) -> None:
    ear = forge.ear(claims=changes)
    expect_refused(
        check(gateway, signed(forge, bound={ATTESTATION_HEADER: ear})), "ear.claim_invalid"
    )


# =========================================================================================
# Across trust domains: a Txn-Token is valid only in its own `aud` trust domain.
# =========================================================================================

PARTNER = "partner.example"
PARTNER_CLIENT = f"spiffe://{PARTNER}/client"


@pytest.fixture(scope="module")
def partner_keys() -> dict[str, dict[str, Any]]:
    """partner.example's own WIT issuer, TTS and one workload key (module-wide)."""
    return {
        "issuer": generate_private_jwk("ES256", kid="partner-issuer"),
        "tts": generate_private_jwk("ES256", kid="partner-tts"),
        "client": generate_private_jwk("ES256", kid="partner-client"),
    }


@pytest.fixture
def two_domains(gateway: GatewayHarness, partner_keys: dict[str, dict[str, Any]]) -> GatewayHarness:
    """demo.example (the service's) plus partner.example, each with its own anchors."""
    partner = {
        "algorithms": ["ES256"],
        "jwks": {"keys": [public_jwk(partner_keys["issuer"])]},
        "txn_token_service": {
            "algorithms": ["ES256"],
            "jwks": {"keys": [public_jwk(partner_keys["tts"])]},
        },
    }
    return gateway.rebuild(trust_domains={PARTNER: partner})


def _partner_headers(
    gateway: GatewayHarness, keys: dict[str, dict[str, Any]], txn: str
) -> dict[str, str]:
    now = gateway.clock.now
    wit = mint_wit(keys["issuer"], PARTNER_CLIENT, keys["client"], now=now)
    wpt = mint_wpt(keys["client"], wit, ORIGIN + "/api/hello", now=now, txn_token=txn)
    return {WIT_HEADER: wit, AUTHORIZATION: "WPT " + wpt, TXN_HEADER: txn}


def test_txn_token_of_another_trust_domain_is_refused(
    gateway: GatewayHarness, forge: Forge
) -> None:
    # Minted by our own TTS with a valid key, but for partner.example.
    txn = forge.txn_token(claims={"aud": PARTNER, "req_wl": f"spiffe://{PARTNER}/edge"})
    expect_refused(check(gateway, signed(forge, txn=txn)), "txn.aud_mismatch")


def test_partner_txn_token_for_its_own_domain_is_refused_here(
    two_domains: GatewayHarness, partner_keys: dict[str, dict[str, Any]]
) -> None:
    # The partner caller is authenticated, but its transaction's token is partner-only.
    forge = Forge(two_domains)
    txn = forge.txn_token(
        header={"kid": "partner-tts"}, claims={"aud": PARTNER}, key=partner_keys["tts"]
    )
    verdict = check(two_domains, _partner_headers(two_domains, partner_keys, txn))
    expect_refused(verdict, "txn.kid_unknown")


@pytest.mark.parametrize("kid", ["partner-tts", None], ids=["partner-kid", "no-kid"])
def test_partner_tts_cannot_mint_txn_tokens_for_us(
    two_domains: GatewayHarness, partner_keys: dict[str, dict[str, Any]], kid: str | None
) -> None:
    # `aud` names demo.example, but only demo.example's own TTS may vouch for that.
    forge = Forge(two_domains)
    txn = forge.txn_token(header={"kid": kid or DROP}, key=partner_keys["tts"])
    reason = "txn.kid_unknown" if kid else "txn.signature_invalid"
    expect_refused(check(two_domains, _partner_headers(two_domains, partner_keys, txn)), reason)


def test_control_partner_caller_with_our_txn_token_is_accepted(
    two_domains: GatewayHarness, partner_keys: dict[str, dict[str, Any]]
) -> None:
    txn = Forge(two_domains).txn_token()
    wimse = accepted(two_domains, _partner_headers(two_domains, partner_keys, txn))
    assert (wimse["caller"]["id"], wimse["caller"]["trust_domain"]) == (PARTNER_CLIENT, PARTNER)
    assert [(hop["trust_domain"], hop["verified"]) for hop in wimse["chain"]] == [
        (TRUST_DOMAIN, False),
        (PARTNER, True),
    ]


def test_control_txn_token_naming_both_domains_is_accepted(
    gateway: GatewayHarness, forge: Forge
) -> None:
    txn = forge.txn_token(claims={"aud": [PARTNER, TRUST_DOMAIN]})
    assert accepted(gateway, signed(forge, txn=txn))["txn"]["aud"] == [PARTNER, TRUST_DOMAIN]
