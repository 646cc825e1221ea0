"""The four published draft-ietf-wimse-http-signature-07 messages (section 3.7).

The two requests go through the full signature verifier (`SignatureVerifier`, and the
`Authenticator` in front of it) as of their `verify_at` time. Their WIT issuer key is not
published, so the WIT's issuer signature cannot be checked: these tests inject that trust
(`injected_wit`, a test-only stand-in for `WitVerifier` that decodes the WIT and takes its
`cnf.jwk` as given). Everything after the WIT is the production code path. The two
responses are checked through the signature base, as ext_authz never sees a response.
Mutated copies of each must fail, each for its own reason.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from authz.clock import Clock
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, public_key_from_jwk
from authz.credentials.authenticator import Authenticator, AuthnMethod, MtlsRules, ProofTarget
from authz.credentials.claims import token_hash
from authz.credentials.httpsig.message import HttpRequest, HttpResponse, signature_base
from authz.credentials.httpsig.structured_fields import InnerList, Item, parse_dictionary
from authz.credentials.httpsig.verifier import SignatureRules, SignatureVerifier
from authz.credentials.identifiers import parse_workload_id
from authz.credentials.jose import b64url_decode
from authz.credentials.presentation import ProofStyle, SizeLimits
from authz.credentials.signature import SigningKey
from authz.credentials.wit import VerifiedWit, WitRules, WitVerifier
from authz.credentials.wpt import WptRules, WptVerifier
from authz.errors import CredentialError
from authz.replay.memory import InMemoryReplayCache
from tests.vectors.published_vectors import load_published

VECTORS = load_published("wimse-draft-examples.json")["http_signature_07"]
VERIFY_AT = float(VECTORS["verify_at"])
REQUESTS = ("request1_svcA_to_svcB", "request2_svcB_to_svcC")
RESPONSES = ("response1_svcB", "response2_svcC")


def fixed_clock(now: float = VERIFY_AT) -> Clock:
    return lambda: now


def injected_wit(token: str) -> VerifiedWit:
    """The WIT as if its (unpublished) issuer key had verified it: test-only trust."""
    claims = json.loads(b64url_decode(token.split(".")[1]))
    jwk = claims["cnf"]["jwk"]
    key = public_key_from_jwk(jwk, (jwk["alg"],))
    return VerifiedWit(
        subject=parse_workload_id(claims["sub"]),
        claims=claims,
        # The drafts do not publish the issuer key: a stand-in name for it.
        issuer_key=SigningKey("issuer-key", token_hash("unpublished"), frozenset({"issuer-key"})),
        issuer_alg="Ed25519",
        expires_at=float(claims["exp"]),
        proof_key=key,
        proof_alg=jwk["alg"],
        token_hash=token_hash(token),
    )


class InjectedWitVerifier(WitVerifier):
    """Test-only: accepts any WIT's claims without its issuer signature (see the module
    docstring: the examples' issuer key is not published)."""

    def verify(self, token: str) -> VerifiedWit:
        return injected_wit(token)


def as_request(example: dict[str, Any]) -> HttpRequest:
    headers = dict(example["headers"])
    return HttpRequest(
        method=example["method"],
        path=example["path"],
        query=example["query"],
        headers=headers,
        authority=headers["host"],
        scheme="https",
        body=example["body"].encode(),
    )


def verifier() -> SignatureVerifier:
    rules = SignatureRules(clock_skew=30, max_lifetime=600, bindable_headers=frozenset())
    return SignatureVerifier(rules, fixed_clock(), InMemoryReplayCache(100, fixed_clock()))


def verify(example: dict[str, Any], signature_verifier: SignatureVerifier | None = None) -> Any:
    request = as_request(example)
    wit = injected_wit(request.headers["workload-identity-token"])
    target = example["target_uri"]
    return asyncio.run((signature_verifier or verifier()).verify(request, wit, (target,)))


@pytest.mark.parametrize("name", REQUESTS)
def test_published_request_verifies_at_its_time(name: str) -> None:
    example = VECTORS[name]
    verified = verify(example)
    assert verified.audience == example["target_uri"]
    assert verified.label == "sig1"
    assert verified.sign_response is True


@pytest.mark.parametrize("name", REQUESTS)
def test_published_request_authenticates_its_caller_through_the_authenticator(name: str) -> None:
    example = VECTORS[name]
    clock = fixed_clock()
    wit_verifier = InjectedWitVerifier(
        None,  # type: ignore[arg-type]  # never consulted: trust is injected
        WitRules(30, 86400, frozenset(SUPPORTED_ALGORITHMS)),
        clock,
        10,
    )
    replay = InMemoryReplayCache(100, clock)
    authenticator = Authenticator(
        wit_verifier,
        WptVerifier(WptRules(30, 300, frozenset()), clock, replay),
        SignatureVerifier(SignatureRules(30, 600, frozenset()), clock, replay),
        SizeLimits(8192, 65536),
        MtlsRules(authenticate=False, trust_domains=frozenset()),
        legacy_wpt=False,
        context_headers=(),
    )
    target = ProofTarget(
        (example["target_uri"],), frozenset({ProofStyle.HTTP_SIGNATURE}), body_forwarded=True
    )
    authentication = asyncio.run(authenticator.authenticate(as_request(example), "", target))
    caller = authentication.caller
    assert caller is not None
    assert caller.authenticated_by is AuthnMethod.HTTP_SIGNATURE
    assert (
        caller.id.uri
        == json.loads(
            b64url_decode(dict(example["headers"])["workload-identity-token"].split(".")[1])
        )["sub"]
    )


def test_published_request_replayed_is_refused() -> None:
    shared = verifier()
    verify(VECTORS["request1_svcA_to_svcB"], shared)
    with pytest.raises(CredentialError) as refused:
        verify(VECTORS["request1_svcA_to_svcB"], shared)
    assert refused.value.reason == "httpsig.replayed"


def _set_header(name: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(example: dict[str, Any]) -> None:
        example["headers"] = [[k, value if k == name else v] for k, v in example["headers"]]

    return mutate


def _set(field: str, value: str) -> Callable[[dict[str, Any]], None]:
    def mutate(example: dict[str, Any]) -> None:
        example[field] = value

    return mutate


def _flip_signature_byte(example: dict[str, Any]) -> None:
    headers = dict(example["headers"])
    signature = parse_dictionary(headers["signature"])["sig1"]
    assert isinstance(signature, Item)
    assert isinstance(signature.value, bytes)
    flipped = bytes([signature.value[0] ^ 1]) + signature.value[1:]
    _set_header("signature", "sig1=:" + base64.b64encode(flipped).decode() + ":")(example)


def _edit_input(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(example: dict[str, Any]) -> None:
        value = dict(example["headers"])["signature-input"]
        assert old in value
        _set_header("signature-input", value.replace(old, new))(example)

    return mutate


REQUEST_MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "method": (_set("method", "DELETE"), "httpsig.signature_invalid"),
    "path": (_set("path", "/gimme-ice-cream-too"), "httpsig.signature_invalid"),
    "audience configured elsewhere": (
        _set("target_uri", "https://svcb.example.com/other"),
        "httpsig.audience_mismatch",
    ),
    "signature byte": (_flip_signature_byte, "httpsig.signature_invalid"),
    "nonce": (_edit_input('nonce="abcd', 'nonce="abce'), "httpsig.signature_invalid"),
    "created": (
        _edit_input("created=1789405135", "created=1789405136"),
        "httpsig.signature_invalid",
    ),
    "tag": (_edit_input("wimse-workload-to-workload", "wimse-other"), "httpsig.missing"),
    "keyid added": (_edit_input(";tag=", ';keyid="svc-a-key";tag='), "httpsig.param_forbidden"),
    "alg added": (_edit_input(";tag=", ';alg="ed25519";tag='), "httpsig.param_forbidden"),
    "nonce dropped": (_edit_input(';nonce="abcd1111"', ""), "httpsig.param_missing"),
    "wit not covered": (
        _edit_input(' "workload-identity-token"', ""),
        "httpsig.coverage_missing",
    ),
    "label renamed in Signature only": (
        lambda e: _set_header("signature", dict(e["headers"])["signature"].replace("sig1", "sig2"))(
            e
        ),
        "httpsig.signature_missing",
    ),
}


@pytest.mark.parametrize("mutation", sorted(REQUEST_MUTATIONS))
def test_mutated_request_one_is_refused(mutation: str) -> None:
    mutate, reason = REQUEST_MUTATIONS[mutation]
    example = copy.deepcopy(VECTORS["request1_svcA_to_svcB"])
    mutate(example)
    with pytest.raises(CredentialError) as refused:
        verify(example)
    assert refused.value.reason == reason


def test_request_one_with_another_query_does_not_verify() -> None:
    example = copy.deepcopy(VECTORS["request1_svcA_to_svcB"])
    example["query"] = "flavor=chocolate"
    with pytest.raises(CredentialError) as refused:
        verify(example)
    assert refused.value.reason == "httpsig.signature_invalid"


BODY_MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "body byte": (_set("body", '{"flavor":"vanilla","amount":9}'), "httpsig.digest_mismatch"),
    "content-type": (_set_header("content-type", "text/plain"), "httpsig.signature_invalid"),
    "digest replaced": (
        _set_header("content-digest", "sha-256=:" + base64.b64encode(bytes(32)).decode() + ":"),
        "httpsig.signature_invalid",
    ),
    "body shorter than content-length": (
        _set("body", '{"flavor":"vanilla"}'),
        "httpsig.body_partial",
    ),
    "digest not covered": (
        _edit_input(' "content-digest"', ""),
        "httpsig.coverage_missing",
    ),
    "expired by then": (
        _edit_input("expires=1789405437", "expires=1789405140"),
        "httpsig.expired",
    ),
}


@pytest.mark.parametrize("mutation", sorted(BODY_MUTATIONS))
def test_mutated_request_two_is_refused(mutation: str) -> None:
    mutate, reason = BODY_MUTATIONS[mutation]
    example = copy.deepcopy(VECTORS["request2_svcB_to_svcC"])
    mutate(example)
    with pytest.raises(CredentialError) as refused:
        verify(example)
    assert refused.value.reason == reason


# --- responses: signature base and signature only -------------------------------------


def response_and_signature(
    example: dict[str, Any], request: dict[str, Any] | None = None
) -> tuple[HttpResponse, InnerList, bytes]:
    """The response, its covered components and signature; `request` replaces the
    request it answers (the published one by default)."""
    headers = dict(example["headers"])
    answered = as_request(request or VECTORS[example["request"]])
    covered = parse_dictionary(headers["signature-input"])["sig1"]
    signature = parse_dictionary(headers["signature"])["sig1"]
    assert isinstance(covered, InnerList)
    assert isinstance(signature, Item)
    assert isinstance(signature.value, bytes)
    return HttpResponse(example["status"], headers, answered), covered, signature.value


def response_verifies(example: dict[str, Any], request: dict[str, Any] | None = None) -> bool:
    response, covered, signature = response_and_signature(example, request)
    jwk = VECTORS["keys_public"][example["signer"]]
    key = public_key_from_jwk(jwk, (jwk["alg"],))
    return key.verify(
        SUPPORTED_ALGORITHMS[jwk["alg"]], signature_base(response, covered), signature
    )


@pytest.mark.parametrize("name", RESPONSES)
def test_published_response_signature_base_verifies(name: str) -> None:
    assert response_verifies(VECTORS[name])


def test_response_signature_base_reads_request_components_with_req() -> None:
    response, covered, _ = response_and_signature(VECTORS["response1_svcB"])
    lines = signature_base(response, covered).decode().split("\n")
    assert lines[0] == '"@status": 404'
    assert '"@method";req: GET' in lines
    assert '"@query";req: ?flavor=vanilla' in lines
    assert lines[-1].startswith('"@signature-params": ("@status" "workload-identity-token"')


RESPONSE_MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "status": lambda e: e.update(status=200),
    "content-type": _set_header("content-type", "text/html"),
    "content-digest": _set_header(
        "content-digest", "sha-256=:" + base64.b64encode(bytes(32)).decode() + ":"
    ),
    "request nonce parameter": _edit_input('wimse-req-nonce="abcd', 'wimse-req-nonce="abce'),
    "signature byte": _flip_signature_byte,
}


@pytest.mark.parametrize("name", RESPONSES)
@pytest.mark.parametrize("mutation", sorted(RESPONSE_MUTATIONS))
def test_mutated_response_does_not_verify(name: str, mutation: str) -> None:
    example = copy.deepcopy(VECTORS[name])
    RESPONSE_MUTATIONS[mutation](example)
    assert not response_verifies(example)


@pytest.mark.parametrize("name", RESPONSES)
def test_response_to_another_request_path_does_not_verify(name: str) -> None:
    example = VECTORS[name]
    moved = copy.deepcopy(VECTORS[example["request"]])
    moved["path"] = "/elsewhere"
    assert not response_verifies(example, moved)
