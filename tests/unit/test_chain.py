"""The caller chain given to policy: oldest first, the authenticated caller last."""

from __future__ import annotations

from typing import Any

import pytest

from authz.credentials.algorithms import public_key_from_jwk
from authz.credentials.authenticator import AuthnMethod, Caller
from authz.credentials.chain import Hop, HopSource, build_chain
from authz.credentials.claims import token_hash
from authz.credentials.identifiers import parse_workload_id
from authz.credentials.signature import SigningKey
from authz.credentials.txn_token import Actor, TxnRules, TxnTokenVerifier, VerifiedTxnToken
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_txn_token
from authz.trust.key_sets import build_key_set
from tests.support import GatewayHarness, MutableClock
from tests.unit.test_http_signature import accepting, policy_input, signed

NOW = 1_800_000_000
TRUST_DOMAIN = "demo.example"
GATEWAY = "spiffe://demo.example/gateway"
FRONTEND = "spiffe://demo.example/frontend"
ORDERS = "spiffe://demo.example/orders"
CART = "spiffe://demo.example/cart"
SEARCH = "spiffe://demo.example/search"
PAYMENTS = "spiffe://demo.example/payments"


def txn(
    requesting_workloads: tuple[str, ...] = (FRONTEND,),
    actors: tuple[str, ...] = (),
    trust_domain: str = TRUST_DOMAIN,
) -> VerifiedTxnToken:
    """A verified Txn-Token as the verifier reports it (`actors` outermost first)."""
    return VerifiedTxnToken(
        txn_id="t-1",
        subject="user-4711",
        scopes=("checkout",),
        tctx=None,
        rctx=None,
        requesting_workloads=requesting_workloads,
        audiences=(trust_domain,),
        trust_domain=trust_domain,
        issuer=None,
        issued_at=NOW,
        expires_at=NOW + 300,
        actors=tuple(Actor(sub, {"sub": sub}) for sub in actors),
        signing_key=SigningKey("tts-1", token_hash("tts-1"), frozenset({"tts-1"})),
        alg="ES256",
        legacy=False,
        claims={},
        token_hash="h",
    )


def caller(uri: str = PAYMENTS, method: AuthnMethod = AuthnMethod.WPT) -> Caller:
    return Caller(parse_workload_id(uri), method)


def rows(hops: tuple[Hop, ...]) -> list[tuple[str, str, str, bool]]:
    return [(hop.id, hop.trust_domain, hop.source.value, hop.verified) for hop in hops]


def test_no_txn_and_no_caller_is_an_empty_chain() -> None:
    assert build_chain(None, None) == ()


def test_a_wpt_caller_alone_is_one_verified_caller_wit_hop() -> None:
    assert rows(build_chain(None, caller())) == [(PAYMENTS, TRUST_DOMAIN, "caller.wit", True)]


def test_an_mtls_caller_is_a_caller_mtls_hop() -> None:
    hops = build_chain(None, caller(PAYMENTS, AuthnMethod.MTLS))
    assert rows(hops) == [(PAYMENTS, TRUST_DOMAIN, "caller.mtls", True)]
    assert hops[-1].authenticated_by is AuthnMethod.MTLS


@pytest.mark.parametrize("method", [AuthnMethod.WPT, AuthnMethod.HTTP_SIGNATURE])
def test_a_wit_caller_is_a_caller_wit_hop_saying_how_it_proved_its_key(
    method: AuthnMethod,
) -> None:
    [hop] = build_chain(None, caller(PAYMENTS, method))
    assert (hop.source, hop.verified, hop.authenticated_by) == (HopSource.CALLER_WIT, True, method)


def test_asserted_hops_say_nothing_about_how_they_were_proven() -> None:
    hops = build_chain(txn(actors=(ORDERS, CART)), caller())
    assert [hop.authenticated_by for hop in hops[:-1]] == [None, None, None]


def test_an_http_signature_caller_reaches_policy_as_a_caller_wit_hop(
    harness: GatewayHarness,
) -> None:
    """Hole 6 of issue 11: HTTP-signature callers were labelled `caller.mtls`."""
    gateway = accepting(harness, "wpt", "http_signature")
    wimse = policy_input(gateway, signed(gateway))
    assert wimse["chain"][-1] == {
        "id": "spiffe://demo.example/frontend",
        "trust_domain": TRUST_DOMAIN,
        "source": "caller.wit",
        "verified": True,
        "authenticated_by": "http_signature",
    }


def test_txn_without_a_caller_lists_only_what_the_tts_asserted() -> None:
    hops = build_chain(txn(actors=(ORDERS,)), None)
    assert rows(hops) == [
        (FRONTEND, TRUST_DOMAIN, "txn.req_wl", False),
        (ORDERS, TRUST_DOMAIN, "txn.act", False),
    ]


def test_chain_is_req_wl_then_prior_actors_deepest_first_then_current_actor_then_caller() -> None:
    # `actors` is outermost first: ORDERS is the current actor, SEARCH the deepest one.
    hops = build_chain(txn((GATEWAY, FRONTEND), actors=(ORDERS, CART, SEARCH)), caller())
    assert [(hop.id, hop.source) for hop in hops] == [
        (GATEWAY, HopSource.TXN_REQ_WL),
        (FRONTEND, HopSource.TXN_REQ_WL),
        (SEARCH, HopSource.TXN_ACT_PRIOR),
        (CART, HopSource.TXN_ACT_PRIOR),
        (ORDERS, HopSource.TXN_ACT),
        (PAYMENTS, HopSource.CALLER_WIT),
    ]


def test_only_the_caller_hop_is_verified() -> None:
    hops = build_chain(txn((GATEWAY, FRONTEND), actors=(ORDERS, CART)), caller())
    assert [hop.verified for hop in hops] == [False, False, False, False, True]


def test_a_single_actor_is_current_and_there_is_no_prior_hop() -> None:
    hops = build_chain(txn(actors=(ORDERS,)), caller())
    assert [hop.source for hop in hops] == [
        HopSource.TXN_REQ_WL,
        HopSource.TXN_ACT,
        HopSource.CALLER_WIT,
    ]


def test_a_host_name_req_wl_keeps_its_raw_id_and_takes_the_tokens_trust_domain() -> None:
    hops = build_chain(
        txn(("apigateway.trust-domain.example",), trust_domain="trust-domain.example"), None
    )
    assert rows(hops) == [
        ("apigateway.trust-domain.example", "trust-domain.example", "txn.req_wl", False)
    ]


def test_a_non_uri_actor_takes_the_tokens_trust_domain() -> None:
    hops = build_chain(txn(actors=("admin@example.com",)), None)
    assert rows(hops)[-1] == ("admin@example.com", TRUST_DOMAIN, "txn.act", False)


def test_a_workload_uri_hop_keeps_the_trust_domain_it_names() -> None:
    hops = build_chain(txn(("spiffe://partner.example/reseller",), actors=(ORDERS,)), None)
    assert rows(hops)[0] == (
        "spiffe://partner.example/reseller",
        "partner.example",
        "txn.req_wl",
        False,
    )


def test_a_non_canonical_uri_hop_is_kept_raw_under_the_tokens_trust_domain() -> None:
    # Not a canonical identifier (upper-case trust domain): never normalised into one.
    hops = build_chain(txn(("spiffe://Partner.example/x",)), None)
    assert rows(hops) == [("spiffe://Partner.example/x", TRUST_DOMAIN, "txn.req_wl", False)]


def test_a_foreign_caller_hop_has_its_own_trust_domain() -> None:
    hops = build_chain(txn(), caller("wimse://partner.example/reseller"))
    assert rows(hops)[-1] == (
        "wimse://partner.example/reseller",
        "partner.example",
        "caller.wit",
        True,
    )


def test_chain_from_a_verified_legacy_token_with_nested_act() -> None:
    tts = generate_private_jwk("ES256", kid="tts")
    algorithms = frozenset({"ES256"})
    services = {
        TRUST_DOMAIN: build_key_set(
            TRUST_DOMAIN, algorithms, [public_key_from_jwk(public_jwk(tts), algorithms)]
        )
    }
    verifier = TxnTokenVerifier(services, TxnRules(30, 600, True, 8), MutableClock(NOW), 16)
    act: dict[str, Any] = {"sub": ORDERS, "act": {"sub": CART}}
    minted = mint_txn_token(
        tts,
        audience=TRUST_DOMAIN,
        requesting_workload=f"apigateway.demo.example,{FRONTEND}",
        subject="user-4711",
        scope="checkout",
        actor=act,
        now=NOW,
    )
    hops = build_chain(verifier.verify(minted, TRUST_DOMAIN), caller())
    assert rows(hops) == [
        ("apigateway.demo.example", TRUST_DOMAIN, "txn.req_wl", False),
        (FRONTEND, TRUST_DOMAIN, "txn.req_wl", False),
        (CART, TRUST_DOMAIN, "txn.act.prior", False),
        (ORDERS, TRUST_DOMAIN, "txn.act", False),
        (PAYMENTS, TRUST_DOMAIN, "caller.wit", True),
    ]
