"""A deny-listed key stays denied whatever the token's header says about it.

The holder of a stolen issuer key writes the JOSE header of every token it mints: it can
leave `kid` out (every key of the algorithm is then tried) or name another kid under which
the same key material is published. The deny-list must match the key that verified, by its
configured kid(s) and its RFC 7638 thumbprint, for every token type it covers, and a
thumbprint entry also revokes a workload's own key (the WIT's `cnf.jwk`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, public_key_from_jwk
from authz.deny_list import DenyList, dump_deny_list
from authz.devtools.keys import public_jwk
from authz.devtools.stack import ATTESTATION_HEADER, TRUST_DOMAIN, USER_TOKEN_HEADER
from authz.reasons import Reason
from tests.security.forgery import DROP, Forge
from tests.support import GatewayHarness, expect_allowed, expect_denied, hook_engine

LISTED, UNLISTED = "issuer-listed", "issuer-unlisted"
TXN_HEADER = "txn-token"


def thumbprint(private_jwk: dict[str, Any]) -> str:
    return public_key_from_jwk(public_jwk(private_jwk), SUPPORTED_ALGORITHMS).thumbprint


def with_deny_list(harness: GatewayHarness, directory: Path, deny_list: DenyList) -> Forge:
    path = directory / "deny.json"
    path.write_text(dump_deny_list(deny_list), encoding="utf-8")
    return Forge(harness.rebuild(deny_list={"file": str(path)}))


def check(forge: Forge, headers: dict[str, str]) -> Any:
    return forge.harness.check_path("/api/hello", headers)


@pytest.fixture
def twice_published(harness: GatewayHarness, tmp_path: Path) -> GatewayHarness:
    """The demo gateway whose trust domain publishes its one issuer key under two kids."""
    issuer = public_jwk(harness.identities.issuer)
    jwks = {"keys": [{**issuer, "kid": LISTED}, {**issuer, "kid": UNLISTED}]}
    jwks_file = tmp_path / "issuer-twice.jwks.json"
    jwks_file.write_text(json.dumps(jwks), encoding="utf-8")
    domain = harness.config().trust_domains[TRUST_DOMAIN]
    tts = domain.txn_token_service
    assert tts is not None
    return harness.rebuild(
        trust_domains={
            TRUST_DOMAIN: {
                "algorithms": ["ES256"],
                "jwks_file": str(jwks_file),
                "txn_token_service": {
                    "algorithms": list(tts.algorithms),
                    "jwks_file": str(tts.jwks_file),
                },
            }
        }
    )


@pytest.mark.parametrize("named_kid", [LISTED, UNLISTED, DROP], ids=["listed", "other", "none"])
def test_a_key_listed_under_one_kid_is_refused_under_either_kid_and_under_none(
    twice_published: GatewayHarness, tmp_path: Path, named_kid: object
) -> None:
    control = Forge(twice_published)
    expect_allowed(check(control, control.headers(wit=control.wit(header={"kid": named_kid}))))

    forge = with_deny_list(twice_published, tmp_path, DenyList(kids=frozenset({LISTED})))
    wit = forge.wit(header={"kid": named_kid})
    expect_denied(check(forge, forge.headers(wit=wit)), Reason.DENYLIST_KID, 403)


def test_a_wit_without_kid_from_a_deny_listed_issuer_key_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """The reproduced hole: no `kid`, so nothing named the listed kid, and it was allowed."""
    kid = harness.identities.issuer["kid"]
    forge = with_deny_list(harness, tmp_path, DenyList(kids=frozenset({kid})))
    wit = forge.wit(header={"kid": DROP})
    expect_denied(check(forge, forge.headers(wit=wit)), Reason.DENYLIST_KID, 403)


def test_a_txn_token_without_kid_from_a_deny_listed_tts_key_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    forge = with_deny_list(
        harness, tmp_path, DenyList(kids=frozenset({harness.identities.tts["kid"]}))
    )
    txn = forge.txn_token(header={"kid": DROP})
    expect_denied(check(forge, forge.bound_headers(txn)), Reason.DENYLIST_KID, 403)


def test_a_user_token_without_kid_from_a_deny_listed_issuer_key_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    kid = harness.identities.user_issuer["kid"]
    forge = with_deny_list(harness, tmp_path, DenyList(kids=frozenset({kid})))
    user = forge.user_token(header={"kid": DROP})
    headers = forge.bound_headers(others={USER_TOKEN_HEADER: user})
    expect_denied(check(forge, headers), Reason.DENYLIST_KID, 403)


def test_an_attestation_result_without_kid_from_a_deny_listed_verifier_key_is_refused(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    kid = harness.identities.attestation_verifier["kid"]
    forge = with_deny_list(harness, tmp_path, DenyList(kids=frozenset({kid})))
    ear = forge.ear(header={"kid": DROP}, claims={"sub": "spiffe://demo.example/frontend"})
    headers = forge.bound_headers(others={ATTESTATION_HEADER: ear})
    expect_denied(check(forge, headers), Reason.DENYLIST_KID, 403)


@pytest.mark.parametrize("named_kid", [LISTED, UNLISTED, DROP], ids=["listed", "other", "none"])
def test_a_deny_listed_issuer_thumbprint_refuses_its_wits_under_any_kid(
    twice_published: GatewayHarness, tmp_path: Path, named_kid: object
) -> None:
    listed = DenyList(thumbprints=frozenset({thumbprint(twice_published.identities.issuer)}))
    forge = with_deny_list(twice_published, tmp_path, listed)
    wit = forge.wit(header={"kid": named_kid})
    expect_denied(check(forge, forge.headers(wit=wit)), Reason.DENYLIST_KEY, 403)


def test_a_deny_listed_tts_thumbprint_refuses_its_txn_tokens(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    listed = DenyList(thumbprints=frozenset({thumbprint(harness.identities.tts)}))
    forge = with_deny_list(harness, tmp_path, listed)
    txn = forge.txn_token(header={"kid": DROP})
    expect_denied(check(forge, forge.bound_headers(txn)), Reason.DENYLIST_KEY, 403)


def test_a_deny_listed_workload_key_thumbprint_revokes_every_wit_confirming_it(
    harness: GatewayHarness, tmp_path: Path
) -> None:
    """A stolen workload key: the WIT is genuine, the issuer key fine, but `cnf.jwk` is the
    listed key; other workloads keep working."""
    stolen = harness.identities.workloads["frontend"]
    forge = with_deny_list(harness, tmp_path, DenyList(thumbprints=frozenset({thumbprint(stolen)})))
    expect_denied(check(forge, forge.headers()), Reason.DENYLIST_KEY, 403)
    expect_allowed(check(forge, forge.headers(workload="ops")))


def test_an_unlisted_kid_or_thumbprint_blocks_nothing(
    twice_published: GatewayHarness, tmp_path: Path
) -> None:
    listed = DenyList(kids=frozenset({"some-other-kid"}), thumbprints=frozenset({"A" * 43}))
    forge = with_deny_list(twice_published, tmp_path, listed)
    for named_kid in (LISTED, UNLISTED, DROP):
        expect_allowed(check(forge, forge.headers(wit=forge.wit(header={"kid": named_kid}))))


def test_policy_sees_the_verifying_keys_kid_and_thumbprints_not_the_headers_kid(
    twice_published: GatewayHarness,
) -> None:
    seen: list[dict[str, Any]] = []

    async def record(document: dict[str, Any]) -> None:
        seen.append(document["wimse"]["caller"]["wit"])

    forge = Forge(twice_published)
    hook_engine(twice_published.gateway.pipeline, record)
    expect_allowed(check(forge, forge.headers(wit=forge.wit(header={"kid": DROP}))))
    wit = seen[-1]
    assert wit["issuer_kid"] in (LISTED, UNLISTED)
    assert wit["issuer_key_thumbprint"] == thumbprint(twice_published.identities.issuer)
    assert wit["proof_key_thumbprint"] == thumbprint(
        twice_published.identities.workloads["frontend"]
    )
