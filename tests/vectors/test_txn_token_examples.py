"""The published Txn-Token, `act` and EAR examples (published/txn-token-examples.json).

The file holds claim sets, not tokens: each is signed here with a test key and verified "as
of" its own `iat`. Sources: draft-ietf-oauth-transaction-tokens-10 (and the -06/-08 forms
it replaced), RFC 8693 section 4.1, draft-ietf-rats-ear.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from authz.clock import fixed_clock
from authz.config import parse_config
from authz.credentials.algorithms import public_key_from_jwk
from authz.credentials.attestation import AttestationSource, EarRules, EarStatus, EarVerifier
from authz.credentials.chain import build_chain
from authz.credentials.txn_token import TxnRules, TxnTokenVerifier, VerifiedTxnToken
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import sign_jws
from authz.errors import CredentialError
from authz.gateway import build_gateway
from authz.reasons import Reason
from authz.trust.key_sets import build_key_set
from tests.support import check_request, hook_engine
from tests.vectors.published_vectors import load_published

VECTORS: dict[str, Any] = load_published("txn-token-examples.json")
DRAFT10 = VECTORS["txn_token_draft10"]
TRUST_DOMAIN = DRAFT10["claims"]["aud"]
ISSUED_AT = DRAFT10["claims"]["iat"]
# The example header names RS256 and kid "identifier-to-key": a test key is made to match.
TTS = generate_private_jwk(DRAFT10["header"]["alg"], kid=DRAFT10["header"]["kid"])
EAR_VERIFIER = generate_private_jwk("ES256", kid="veraison-test")
EAR_EXAMPLES = {
    name: example for name, example in VECTORS.items() if "expect_overall_status" in example
}


def sign_txn_token(claims: dict[str, Any]) -> str:
    return sign_jws(claims, TTS, DRAFT10["header"])


def verify(
    claims: dict[str, Any], *, legacy_names: bool = False, at: float = ISSUED_AT
) -> VerifiedTxnToken:
    """Sign `claims` with the example header and verify them as of `at`."""
    algorithms = frozenset({DRAFT10["header"]["alg"]})
    services = {
        TRUST_DOMAIN: build_key_set(
            TRUST_DOMAIN, algorithms, [public_key_from_jwk(public_jwk(TTS), algorithms)]
        )
    }
    rules = TxnRules(clock_skew=30, max_lifetime=600, legacy_names=legacy_names, max_chain_hops=8)
    verifier = TxnTokenVerifier(services, rules, fixed_clock(at), 16)
    return verifier.verify(sign_txn_token(claims), TRUST_DOMAIN)


def with_fragment(fragment: dict[str, Any], replaces: tuple[str, ...]) -> dict[str, Any]:
    """The -10 body without the names `fragment` replaces, with `fragment` merged on top."""
    body = {name: value for name, value in DRAFT10["claims"].items() if name not in replaces}
    return {**body, **fragment}


# --- the draft -10 Txn-Token --------------------------------------------------------------


def test_draft10_example_verifies_with_its_header() -> None:
    verified = verify(DRAFT10["claims"])
    claims = DRAFT10["claims"]
    assert verified.txn_id == claims["txn"]
    assert verified.subject == claims["sub"]
    assert verified.scopes == ("trade.stocks",)
    assert verified.tctx == claims["tctx"]
    assert verified.rctx == claims["rctx"]
    assert verified.requesting_workloads == ("apigateway.trust-domain.example",)
    assert (verified.signing_key.kid, verified.alg) == ("identifier-to-key", "RS256")
    assert verified.legacy is False


def test_draft10_example_host_name_req_wl_is_a_hop_in_the_tokens_trust_domain() -> None:
    [hop] = build_chain(verify(DRAFT10["claims"]), None)
    assert (hop.id, hop.trust_domain, hop.source.value, hop.verified) == (
        "apigateway.trust-domain.example",
        "trust-domain.example",
        "txn.req_wl",
        False,
    )


def test_draft10_example_is_refused_once_expired() -> None:
    with pytest.raises(CredentialError) as caught:
        verify(DRAFT10["claims"], at=DRAFT10["claims"]["exp"] + 31)
    assert caught.value.reason is Reason.TXN_EXPIRED


ALLOW_ANY = "package envoy.authz\nimport rego.v1\ndefault allow := true\n"


def test_draft10_example_reaches_policy_through_a_gateway_of_that_trust_domain(
    tmp_path: Path,
) -> None:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "allow.rego").write_text(ALLOW_ANY)
    wit_issuer = generate_private_jwk("ES256", kid="wit-issuer")
    document = {
        "server": {"listeners": [{"address": "127.0.0.1:9191"}]},
        "trust_domains": {
            TRUST_DOMAIN: {
                "algorithms": ["ES256"],
                "jwks": {"keys": [public_jwk(wit_issuer)]},
                "txn_token_service": {
                    "algorithms": ["RS256"],
                    "jwks": {"keys": [public_jwk(TTS)]},
                },
            }
        },
        "services": {
            "trading": {
                "id": f"spiffe://{TRUST_DOMAIN}/trading",
                "origins": ["https://trading.trust-domain.example"],
            }
        },
        "mtls": {"authenticate": True},
        "policy": {"directory": "policy"},
    }
    gateway = build_gateway(parse_config(document, "vectors", tmp_path), fixed_clock(ISSUED_AT))
    seen: list[dict[str, Any]] = []

    async def record(input_document: dict[str, Any]) -> None:
        seen.append(input_document)

    hook_engine(gateway.pipeline, record)
    caller = f"spiffe://{TRUST_DOMAIN}/orders"
    request = check_request(
        "/trade",
        {"txn-token": sign_txn_token(DRAFT10["claims"])},
        service="trading",
        principal=caller,
    )
    asyncio.run(gateway.pipeline.check(request.attributes))
    [document_seen] = seen
    wimse = document_seen["wimse"]
    assert wimse["txn"]["sub"] == DRAFT10["claims"]["sub"]
    assert wimse["txn"]["tctx"]["customer_type"] == {"geo": "US", "level": "VIP"}
    assert wimse["chain"] == [
        {
            "id": "apigateway.trust-domain.example",
            "trust_domain": TRUST_DOMAIN,
            "source": "txn.req_wl",
            "verified": False,
            "authenticated_by": None,
        },
        {
            "id": caller,
            "trust_domain": TRUST_DOMAIN,
            "source": "caller.mtls",
            "verified": True,
            "authenticated_by": "mtls",
        },
    ]


# --- the -06 and -08 forms ----------------------------------------------------------------

LEGACY_06 = with_fragment(
    VECTORS["txn_token_legacy_06_rctx_req_wl_array"]["claims_fragment"],
    replaces=("scope", "req_wl"),
)
LEGACY_08 = with_fragment(
    VECTORS["txn_token_legacy_08_req_wl_comma"]["claims_fragment"], replaces=("req_wl",)
)
LEGACY_HOPS = ("apigateway.trust-domain.example", "workload3.trust-domain.example")


@pytest.mark.parametrize("claims", [LEGACY_06, LEGACY_08], ids=["-06", "-08"])
def test_legacy_example_is_refused_without_legacy_names(claims: dict[str, Any]) -> None:
    with pytest.raises(CredentialError) as caught:
        verify(claims)
    assert caught.value.reason is Reason.TXN_LEGACY_FORM_DISABLED


@pytest.mark.parametrize("claims", [LEGACY_06, LEGACY_08], ids=["-06", "-08"])
def test_legacy_example_verifies_with_legacy_names_listing_every_hop(
    claims: dict[str, Any],
) -> None:
    verified = verify(claims, legacy_names=True)
    assert verified.legacy is True
    assert verified.scopes == ("trade.stocks",)
    assert verified.requesting_workloads == LEGACY_HOPS
    hops = build_chain(verified, None)
    assert [(hop.id, hop.trust_domain) for hop in hops] == [
        (hop, TRUST_DOMAIN) for hop in LEGACY_HOPS
    ]


# --- RFC 8693 `act` ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "current", "prior"),
    [
        ("rfc8693_act_simple", "admin@example.com", []),
        ("rfc8693_act_nested", "https://service16.example.com", ["https://service77.example.com"]),
    ],
)
def test_rfc8693_act_example_yields_the_current_and_prior_actors(
    example: str, current: str, prior: list[str]
) -> None:
    act = VECTORS[example]["claims"]["act"]
    verified = verify({**DRAFT10["claims"], "act": act})
    assert [actor.sub for actor in verified.actors] == [current, *prior]
    sources = [(hop.id, hop.source.value) for hop in build_chain(verified, None)]
    assert sources == [
        ("apigateway.trust-domain.example", "txn.req_wl"),
        *[(sub, "txn.act.prior") for sub in reversed(prior)],
        (current, "txn.act"),
    ]


# --- EAR examples -----------------------------------------------------------------------------


def ear_verifier(at: float) -> EarVerifier:
    algorithms = frozenset({"ES256"})
    keys = build_key_set(
        "veraison", algorithms, [public_key_from_jwk(public_jwk(EAR_VERIFIER), algorithms)]
    )
    return EarVerifier((keys,), EarRules(clock_skew=30, max_age=3600), fixed_clock(at))


def test_the_ear_examples_are_all_found() -> None:
    assert set(EAR_EXAMPLES) == {
        "ear_current_contraindicated",
        "ear_current_affirming",
        "ear_legacy_dotted",
    }


@pytest.mark.parametrize("name", sorted(EAR_EXAMPLES))
def test_ear_example_object_normalises_to_its_expected_status(name: str) -> None:
    example = EAR_EXAMPLES[name]
    verifier = ear_verifier(example["claims"]["iat"])
    result = verifier.from_claim(example["claims"], AttestationSource.WIT)
    assert result.status is EarStatus(example["expect_overall_status"])
    assert result.fresh is True
    assert set(result.submods) == set(example["claims"]["submods"])


@pytest.mark.parametrize("name", sorted(EAR_EXAMPLES))
def test_ear_example_as_signed_jwt_normalises_to_its_expected_status(name: str) -> None:
    example = EAR_EXAMPLES[name]
    token = sign_jws(example["claims"], EAR_VERIFIER, {"typ": "JWT", "kid": "veraison-test"})
    result = ear_verifier(example["claims"]["iat"]).from_claim(token, AttestationSource.TXN)
    assert result.status is EarStatus(example["expect_overall_status"])
    assert result.signed_by == "veraison"


def test_legacy_dotted_ear_example_reads_like_the_current_one() -> None:
    legacy = EAR_EXAMPLES["ear_legacy_dotted"]["claims"]
    current = EAR_EXAMPLES["ear_current_contraindicated"]["claims"]
    verifier = ear_verifier(legacy["iat"])
    from_legacy = verifier.from_claim(legacy, AttestationSource.WIT)
    from_current = verifier.from_claim(current, AttestationSource.WIT)
    assert from_legacy.submods == from_current.submods
    assert from_legacy.verifier == from_current.verifier
