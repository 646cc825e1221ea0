"""The WIMSE drafts' published examples (published/wimse-draft-examples.json; SOURCES.md).

Each is checked "as of" its `verify_at` time through the full pipeline: real config, real
trust anchors from the example's issuer JWKS, the real embedded engine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from authz.clock import fixed_clock
from authz.config import parse_config
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, public_key_from_jwk
from authz.credentials.claims import token_hash
from authz.credentials.jose import JoseReasons, b64url_decode, parse_compact_jws
from authz.credentials.wit import WitRules, WitVerifier
from authz.errors import CredentialError
from authz.gateway import build_gateway
from authz.reasons import Reason
from authz.trust.key_sets import build_trust_store
from tests.support import check_request, expect_allowed, expect_denied, header
from tests.vectors.published_vectors import load_published

VECTORS: dict[str, Any] = load_published("wimse-draft-examples.json")
WPT02 = VECTORS["wpt02_request"]
LEGACY = VECTORS["wpt01_legacy_request"]

ALLOW_ANY_CALLER = """package envoy.authz
import rego.v1
default allow := false
allow if input.wimse.caller.id != null
"""


def example_gateway(tmp_path: Path, **overrides: Any) -> Any:
    (tmp_path / "policy").mkdir(exist_ok=True)
    (tmp_path / "policy" / "allow.rego").write_text(ALLOW_ANY_CALLER)
    document: dict[str, Any] = {
        "server": {"listeners": [{"address": "127.0.0.1:9191"}]},
        "trust_domains": {
            WPT02["trust_domain"]: {"algorithms": ["ES256"], "jwks": WPT02["issuer_jwks"]}
        },
        "services": {
            "workload": {
                "id": "wimse://example.com/target-workload",
                "origins": ["https://workload.example.com"],
            }
        },
        "policy": {"directory": "policy"},
        **overrides,
    }
    config = parse_config(document, "vectors", tmp_path)
    return build_gateway(config, fixed_clock(WPT02["verify_at"]))


def request_from(example: dict[str, Any]) -> Any:
    headers = {name: value for name, value in example["headers"]}
    path = example["path"] + (f"?{example['query']}" if example["query"] else "")
    return check_request(
        path, headers, method=example["method"], body=example.get("body", ""), service="workload"
    )


def test_wpt02_example_request_verifies_at_its_time(tmp_path: Path) -> None:
    gateway = example_gateway(tmp_path)
    verdict = asyncio.run(gateway.pipeline.check(request_from(WPT02["request"]).attributes))
    allowed = expect_allowed(verdict)
    assert header(allowed, "x-wimse-caller") == WPT02["expect"]["caller"]
    assert allowed.headers_to_remove[-1] == "authorization", "the WPT is stripped upstream"


def test_wpt02_example_binds_the_wit_by_its_published_hash() -> None:
    wit = dict(WPT02["request"]["headers"])["workload-identity-token"]
    assert token_hash(wit) == WPT02["expect"]["wth"]


def test_wpt02_example_proof_is_rejected_ten_minutes_later(tmp_path: Path) -> None:
    gateway = example_gateway(tmp_path)
    late = build_gateway(gateway.config, fixed_clock(WPT02["verify_at"] + 600))
    verdict = asyncio.run(late.pipeline.check(request_from(WPT02["request"]).attributes))
    expect_denied(verdict, Reason.WPT_EXPIRED, 401)


def test_wpt02_example_is_rejected_for_another_target(tmp_path: Path) -> None:
    gateway = example_gateway(tmp_path)
    request = request_from({**WPT02["request"], "path": "/other"})
    verdict = asyncio.run(gateway.pipeline.check(request.attributes))
    expect_denied(verdict, Reason.WPT_AUD_MISMATCH, 401)


def test_wpt02_example_replayed_is_rejected(tmp_path: Path) -> None:
    gateway = example_gateway(tmp_path)
    attributes = request_from(WPT02["request"]).attributes
    expect_allowed(asyncio.run(gateway.pipeline.check(attributes)))
    expect_denied(asyncio.run(gateway.pipeline.check(attributes)), Reason.WPT_REPLAYED, 401)


def test_workload_creds_example_wit_verifies_between_iat_and_exp() -> None:
    example = VECTORS["wit_example_workload_creds"]
    store = build_trust_store(
        {"example.com": (frozenset({"ES256"}), WPT02["issuer_jwks"], "vectors")}
    )
    rules = WitRules(30, 86400, frozenset(SUPPORTED_ALGORITHMS))
    for at, valid in (
        (example["claims"]["iat"], True),
        (example["claims"]["exp"] - 1, True),
        (example["claims"]["exp"] + 31, False),
    ):
        verifier = WitVerifier(store, rules, fixed_clock(at), 10)
        if valid:
            verified = verifier.verify(example["token"])
            assert verified.subject.uri == example["claims"]["sub"]
            assert verified.proof_alg == "EdDSA"
        else:
            with pytest.raises(CredentialError, match=r"wit\.expired"):
                verifier.verify(example["token"])


def legacy_request() -> Any:
    return check_request(
        "/path",
        {
            "workload-identity-token": LEGACY["wit"],
            "workload-proof-token": LEGACY["wpt"],
            "authorization": f"Bearer {LEGACY['bearer_access_token']}",
            "content-type": "application/json",
        },
        method="POST",
        service="workload",
    )


def test_obsolete_pre02_request_is_rejected_by_default(tmp_path: Path) -> None:
    gateway = example_gateway(tmp_path)
    verdict = asyncio.run(gateway.pipeline.check(legacy_request().attributes))
    expect_denied(verdict, Reason.WPT_LEGACY_FORM_DISABLED, 401)


def test_obsolete_pre02_request_verifies_only_behind_the_compatibility_switch(
    tmp_path: Path,
) -> None:
    gateway = example_gateway(tmp_path, wpt={"legacy_header": True})
    verdict = asyncio.run(gateway.pipeline.check(legacy_request().attributes))
    allowed = expect_allowed(verdict)
    assert "workload-proof-token" in allowed.headers_to_remove
    assert "authorization" not in allowed.headers_to_remove, "the bound access token is kept"


def test_obsolete_pre02_request_with_another_access_token_fails_its_ath_binding(
    tmp_path: Path,
) -> None:
    gateway = example_gateway(tmp_path, wpt={"legacy_header": True})
    request = legacy_request()
    request.attributes.request.http.headers["authorization"] = "Bearer someone-elses-token"
    verdict = asyncio.run(gateway.pipeline.check(request.attributes))
    expect_denied(verdict, Reason.WPT_ATH_MISMATCH, 401)


@pytest.mark.parametrize("name", ["request1_svcA_to_svcB", "request2_svcB_to_svcC"])
def test_http_signature_07_wits_carry_ed25519_confirmation_keys(name: str) -> None:
    """The http-signature-07 examples use RFC 9864's `Ed25519` name; their WIT issuer key is
    unpublished, so only the confirmation keys are checked here (signatures: mesh issue)."""
    examples = VECTORS["http_signature_07"]
    wit = dict(examples[name]["headers"])["workload-identity-token"]
    reasons = JoseReasons(
        Reason.WIT_MALFORMED,
        Reason.WIT_HEADER_KEY_FORBIDDEN,
        Reason.WIT_CRIT_UNSUPPORTED,
        Reason.WIT_B64_UNSUPPORTED,
    )
    jws = parse_compact_jws(wit, reasons)
    assert jws.alg == "Ed25519"
    cnf = jws.claims["cnf"]["jwk"]
    key = public_key_from_jwk(cnf, [cnf["alg"]])
    assert cnf == examples["keys_public"][examples[name]["signer"]]
    assert key.algorithms == {"Ed25519"}
    assert b64url_decode(cnf["x"])
