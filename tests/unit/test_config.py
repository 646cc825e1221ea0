from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.config import load_config, parse_config
from authz.errors import ConfigError


def minimal(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "server": {"listeners": [{"address": "127.0.0.1:9191"}]},
        "trust_domains": {
            "example.org": {"algorithms": ["ES256"], "jwks_file": "keys/example.org.json"}
        },
        "services": {
            "orders": {
                "id": "spiffe://example.org/orders",
                "origins": ["https://orders.example.org"],
            }
        },
        "policy": {"directory": "policies"},
    }
    document.update(overrides)
    return document


def error_for(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "gateway.yaml", Path("/etc/wimse"))
    return str(caught.value)


def test_minimal_config_has_safe_defaults() -> None:
    config = parse_config(minimal(), "gateway.yaml", Path("/etc/wimse"))
    assert config.clock_skew_seconds == 30
    assert config.limits.token_header_bytes == 8 * 1024
    assert config.limits.credential_headers_bytes == 64 * 1024
    assert config.wpt.max_lifetime_seconds == 300
    assert config.wit.max_lifetime_seconds == 24 * 3600
    assert config.wpt.legacy_header is False
    assert config.mtls.authenticate is False
    assert config.policy.decision == "data.envoy.authz.allow"
    assert config.default_service == "orders", "a single service is the default"
    assert config.responses.unavailable.status == 503
    assert config.responses.policy_denied_status == 403
    assert config.upstream.strip_proof_headers is True


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "gateway.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(minimal()))
    config = load_config(path)
    assert config.policy.directory == tmp_path / "conf" / "policies"
    assert (
        config.trust_domains["example.org"].jwks_file == tmp_path / "conf" / "keys/example.org.json"
    )


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        ("envoy/authz/allow", "data.envoy.authz.allow"),
        ("data.envoy.authz.decision", "data.envoy.authz.decision"),
        ("/mesh/policy/result", "data.mesh.policy.result"),
    ],
)
def test_decision_rule_accepts_opa_paths_and_data_refs(decision: str, expected: str) -> None:
    document = minimal(policy={"directory": "p", "decision": decision})
    assert parse_config(document, "g", Path("/")).policy.decision == expected


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (
            {"trust_domains": {"example.org": {"algorithms": ["none"], "jwks": {"keys": []}}}},
            "trust_domains.example.org.algorithms",
            "not an allowed algorithm",
        ),
        (
            {"trust_domains": {"example.org": {"algorithms": ["HS256"], "jwks": {"keys": []}}}},
            "trust_domains.example.org.algorithms",
            "not an allowed algorithm",
        ),
        (
            {"trust_domains": {"example.org": {"algorithms": [], "jwks": {"keys": []}}}},
            "trust_domains.example.org.algorithms",
            "at least one",
        ),
        (
            {"trust_domains": {"example.org": {"algorithms": ["ES256"]}}},
            "trust_domains.example.org",
            "exactly one of",
        ),
        (
            {"trust_domains": {"Example.org": {"algorithms": ["ES256"], "jwks": {"keys": []}}}},
            "trust_domains",
            "canonical",
        ),
        (
            {
                "services": {
                    "orders": {
                        "id": "spiffe://example.org/orders/",
                        "origins": ["https://o.example"],
                    }
                }
            },
            "services.orders.id",
            "trailing slash",
        ),
        (
            {
                "services": {
                    "orders": {
                        "id": "spiffe://example.org/o",
                        "origins": ["https://o.example/path"],
                    }
                }
            },
            "services.orders.origins",
            "lower-case origin",
        ),
        (
            {
                "services": {
                    "orders": {"id": "spiffe://example.org/o", "origins": ["https://O.example"]}
                }
            },
            "services.orders.origins",
            "lower-case origin",
        ),
        (
            {"services": {"orders": {"id": "spiffe://example.org/o", "origins": []}}},
            "services.orders.origins",
            "at least 1",
        ),
        (
            {"server": {"listeners": [{"address": "localhost"}]}},
            "server.listeners.0.address",
            "host:port",
        ),
        ({"server": {"listeners": []}}, "server.listeners", "at least 1"),
        (
            {"responses": {"policy_denied_status": 299}},
            "responses.policy_denied_status",
            "not an HTTP status",
        ),
        ({"responses": {"reason_header": "X-Reason"}}, "responses.reason_header", "lower-case"),
        (
            {"upstream": {"identity_headers": {"caller": "authorization"}}},
            "upstream.identity_headers.caller",
            "credential header",
        ),
        ({"wpt": {"bindable_headers": ["txn-token"]}}, "wpt.bindable_headers", "own binding"),
        ({"wpt": {"replay_cache_entries": 0}}, "wpt.replay_cache_entries", "greater than 0"),
        ({"clock_skew_seconds": 3600}, "clock_skew_seconds", "less than or equal"),
        ({"policy": {"directory": "p", "decision": "allow"}}, "policy.decision", "rule path"),
        ({"default_service": "billing"}, "(top level)", "not under 'services'"),
        ({"unexpected": 1}, "unexpected", "unknown key unexpected"),
        (
            {"mtls": {"authenticate": True, "trust_domains": ["Bad.Domain"]}},
            "mtls.trust_domains",
            "canonical",
        ),
    ],
)
def test_invalid_configuration_names_the_key(
    change: dict[str, Any], key: str, message: str
) -> None:
    text = error_for(minimal(**change))
    assert f"  {key}: " in text, text
    assert message in text, text


def test_reason_header_may_not_be_an_identity_header() -> None:
    document = minimal(responses={"reason_header": "x-wimse-caller"})
    assert "collides with an identity header" in error_for(document)


def test_several_services_need_an_explicit_default_or_none() -> None:
    services = {
        "a": {"id": "spiffe://example.org/a", "origins": ["https://a.example"]},
        "b": {"id": "spiffe://example.org/b", "origins": ["https://b.example"]},
    }
    config = parse_config(minimal(services=services), "g", Path("/"))
    assert config.default_service is None


def test_non_mapping_documents_and_bad_yaml_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_config(["x"], "g", tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_mtls_trust_domains_default_to_the_configured_ones() -> None:
    config = parse_config(minimal(mtls={"authenticate": True}), "g", Path("/"))
    assert config.mtls_trust_domains == {"example.org"}


def test_a_misspelt_key_is_named_with_its_line_and_the_key_it_was_meant_to_be(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "server:\n"
        "  listeners:\n"
        "    - address: 127.0.0.1:9191\n"
        "      allow_plaintxt: true\n"
        "trust_domains:\n"
        "  demo.example:\n"
        "    algorithms: [ES256]\n"
        "    jwks_flie: trust.json\n"
        "services:\n"
        "  echo: {id: 'spiffe://demo.example/echo', origins: ['https://echo.example']}\n"
        "policy: {directory: policies}\n"
        "outbund: {}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    lines = str(raised.value).splitlines()
    assert lines[0] == f"{path}: invalid configuration"
    assert (
        "  server.listeners.0.allow_plaintxt (line 4, column 7): "
        "unknown key allow_plaintxt (did you mean allow_plaintext?)"
    ) in lines
    assert (
        "  trust_domains.demo.example.jwks_flie (line 8, column 5): "
        "unknown key jwks_flie (did you mean jwks_file?)"
    ) in lines
    assert "  outbund (line 12, column 1): unknown key outbund (did you mean outbound?)" in lines


def test_a_key_like_nothing_known_gets_no_guess(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"zzz_qqq": 1}, "test", tmp_path)
    assert "  zzz_qqq: unknown key zzz_qqq" in str(raised.value).splitlines()


def test_a_key_on_the_wrong_curve_for_its_alg_is_named_with_its_file(tmp_path: Path) -> None:
    """The error says which file to open, which key, and what does not fit."""
    from authz.devtools.keys import generate_private_jwk, public_jwk
    from authz.gateway import build_gateway

    key = public_jwk(generate_private_jwk("ES256", kid="k1")) | {"alg": "ES384"}
    jwks = tmp_path / "trust.jwks.json"
    jwks.write_text(json.dumps({"keys": [key]}))
    document = {
        "server": {"listeners": [{"address": "127.0.0.1:9191"}]},
        "trust_domains": {"demo.example": {"algorithms": ["ES384"], "jwks_file": str(jwks)}},
        "services": {"echo": {"id": "spiffe://demo.example/echo", "origins": ["https://e.x"]}},
        "policy": {"directory": str(Path(__file__).parents[2] / "policies")},
    }
    with pytest.raises(ConfigError) as raised:
        build_gateway(parse_config(document, "test", tmp_path))
    message = str(raised.value)
    assert str(jwks) in message
    assert "key 'alg' ES384 needs curve P-384; this EC key is on P-256" in message
