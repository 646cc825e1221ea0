"""Configuration of the context stage (Txn-Tokens, user tokens, attestation): invalid
settings are refused with an error that names the offending key."""

from __future__ import annotations

from typing import Any

import pytest

from authz.credentials.presentation import CREDENTIAL_HEADERS
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.stack import ATTESTATION_HEADER, USER_TOKEN_HEADER
from authz.errors import ConfigError
from authz.gateway import build_gateway
from tests.support import GatewayHarness


def config_error(harness: GatewayHarness, **overrides: Any) -> str:
    """The error for the demo config with `overrides` merged into its top-level keys."""
    with pytest.raises(ConfigError) as caught:
        harness.rebuild(**overrides).config()
    return str(caught.value)


def build_error(harness: GatewayHarness, **overrides: Any) -> str:
    """The error building a gateway from a config that validates but cannot be assembled."""
    config = harness.rebuild(**overrides).config()
    with pytest.raises(ConfigError) as caught:
        build_gateway(config, harness.clock)
    return str(caught.value)


def inline_key_set(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"algorithms": ["ES256"], "jwks": {"keys": [public_jwk(key) for key in keys]}}


def test_the_demo_context_configuration_is_valid(harness: GatewayHarness) -> None:
    config = harness.config()
    assert config.context_token_headers == {
        "user_token.header": USER_TOKEN_HEADER,
        "attestation.header": ATTESTATION_HEADER,
    }
    assert config.bindable_headers == {USER_TOKEN_HEADER, ATTESTATION_HEADER}
    assert config.txn_token.max_chain_hops == 8
    assert config.txn_token.legacy_names is False
    assert config.user_token is not None
    assert config.user_token.accept_from_mtls_callers is False
    assert config.user_token.id_tokens is False


# --- attestation ----------------------------------------------------------------------------


def test_attestation_without_any_source_is_refused(harness: GatewayHarness) -> None:
    text = config_error(harness, attestation={"header": None, "txn_rctx_claim": None})
    assert "  attestation: set at least one of 'header', 'wit_claim', 'txn_rctx_claim'" in text


def test_an_attestation_header_without_verifiers_is_refused(harness: GatewayHarness) -> None:
    text = config_error(harness, attestation={"verifiers": {}})
    assert "  attestation: an attestation 'header' needs at least one of 'verifiers'" in text


def test_claim_sources_alone_need_no_verifiers(harness: GatewayHarness) -> None:
    config = harness.rebuild(
        attestation={"header": None, "wit_claim": "ear", "verifiers": {}}
    ).config()
    assert config.attestation is not None
    assert config.context_token_headers == {"user_token.header": USER_TOKEN_HEADER}


def test_an_attestation_header_must_be_a_lower_case_header_name(harness: GatewayHarness) -> None:
    text = config_error(harness, attestation={"header": "X-Attestation"})
    assert "  attestation.header: must be a lower-case HTTP header name" in text


def test_attestation_max_age_must_be_positive(harness: GatewayHarness) -> None:
    assert "  attestation.max_age_seconds: " in config_error(
        harness, attestation={"max_age_seconds": 0}
    )


def test_a_kid_shared_by_two_attestation_verifiers_is_refused(harness: GatewayHarness) -> None:
    first = generate_private_jwk("ES256", kid="shared")
    second = generate_private_jwk("ES256", kid="shared")
    text = build_error(
        harness,
        attestation={"verifiers": {"a": inline_key_set(first), "b": inline_key_set(second)}},
    )
    assert text == "attestation.verifiers: kid 'shared' is used by two verifiers"


def test_distinct_kids_across_attestation_verifiers_build(harness: GatewayHarness) -> None:
    first = generate_private_jwk("ES256", kid="a-1")
    second = generate_private_jwk("ES256", kid="b-1")
    verifiers = {"a": inline_key_set(first), "b": inline_key_set(second)}
    config = harness.rebuild(attestation={"verifiers": verifiers}).config()
    build_gateway(config, harness.clock)


def test_a_kid_shared_within_one_verifier_is_refused(harness: GatewayHarness) -> None:
    first = generate_private_jwk("ES256", kid="shared")
    second = generate_private_jwk("ES256", kid="shared")
    text = build_error(harness, attestation={"verifiers": {"a": inline_key_set(first, second)}})
    assert "attestation.verifiers.a: two keys share kid 'shared'" in text


# --- user tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("header", CREDENTIAL_HEADERS)
def test_a_user_token_header_may_not_be_a_credential_header(
    harness: GatewayHarness, header: str
) -> None:
    text = config_error(harness, user_token={"header": header})
    assert f"'{header}' is a credential header, not a context token header" in text


@pytest.mark.parametrize("header", CREDENTIAL_HEADERS)
def test_an_attestation_header_may_not_be_a_credential_header(
    harness: GatewayHarness, header: str
) -> None:
    text = config_error(harness, attestation={"header": header})
    assert f"'{header}' is a credential header, not a context token header" in text


@pytest.mark.parametrize("key", ["user_token", "attestation"])
def test_a_context_header_colliding_with_a_credential_header_names_its_key(
    harness: GatewayHarness, key: str
) -> None:
    text = config_error(harness, **{key: {"header": "authorization"}})
    assert f"{key}.header" in text, text


def test_user_token_and_attestation_headers_must_differ(harness: GatewayHarness) -> None:
    text = config_error(harness, user_token={"header": ATTESTATION_HEADER})
    assert "user_token.header and attestation.header must differ" in text


def test_a_user_token_header_must_be_a_lower_case_header_name(harness: GatewayHarness) -> None:
    text = config_error(harness, user_token={"header": "X-User-Token"})
    assert "  user_token.header: must be a lower-case HTTP header name" in text


def test_user_tokens_need_an_issuer_with_an_audience(harness: GatewayHarness) -> None:
    assert "  user_token.issuers: " in config_error(harness, user_token={"issuers": {}})
    idp = generate_private_jwk("ES256", kid="idp")
    issuers = {"https://idp.example": {**inline_key_set(idp), "audiences": []}}
    text = config_error(harness, user_token={"issuers": issuers})
    assert "  user_token.issuers.https://idp.example.audiences: " in text


# --- Txn-Tokens ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hops", [0, -1, 65])
def test_max_chain_hops_out_of_range_is_refused(harness: GatewayHarness, hops: int) -> None:
    text = config_error(harness, txn_token={"max_chain_hops": hops})
    assert "  txn_token.max_chain_hops: " in text, text


@pytest.mark.parametrize("hops", [1, 64])
def test_max_chain_hops_at_the_range_ends_is_accepted(harness: GatewayHarness, hops: int) -> None:
    assert harness.rebuild(
        txn_token={"max_chain_hops": hops}
    ).config().txn_token.max_chain_hops == (hops)


def test_txn_max_lifetime_must_be_positive(harness: GatewayHarness) -> None:
    text = config_error(harness, txn_token={"max_lifetime_seconds": 0})
    assert "  txn_token.max_lifetime_seconds: " in text


def test_a_service_txn_token_setting_is_required_or_optional(harness: GatewayHarness) -> None:
    service = {"id": "spiffe://demo.example/echo", "origins": ["https://echo.demo.example"]}
    text = config_error(harness, services={"echo": {**service, "txn_token": "always"}})
    assert "  services.echo.txn_token: " in text


def test_a_tts_key_set_needs_exactly_one_key_source(harness: GatewayHarness) -> None:
    domain = harness.config().trust_domains["demo.example"].model_dump(exclude_none=True)
    domain["txn_token_service"] = {"algorithms": ["ES256"]}
    text = config_error(harness, trust_domains={"demo.example": domain})
    assert "  trust_domains.demo.example.txn_token_service: set exactly one of" in text


def test_an_unreadable_tts_jwks_file_names_the_txn_token_service_key(
    harness: GatewayHarness,
) -> None:
    domain = harness.config().trust_domains["demo.example"].model_dump(exclude_none=True)
    domain["txn_token_service"]["jwks_file"] = str(harness.directory / "missing.jwks.json")
    text = build_error(harness, trust_domains={"demo.example": domain})
    assert "trust_domains.demo.example.txn_token_service.jwks_file" in text, text
