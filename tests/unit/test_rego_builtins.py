"""The io.jwt and crypto.x509 extensions, exercised through a real regorus engine.

Every test evaluates a small Rego policy, so what is pinned is what a policy author sees:
OPA's names, argument order, result shapes and error behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt as pyjwt
import pytest
import regorus
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz.policy.builtins import EXTENSIONS, register_extensions

SECONDS = 1_000_000_000  # nanoseconds per second, the unit of decode_verify's `time`
NOW = 1_700_000_000  # the fixed verification time, in seconds
SECRET = "an HMAC secret long enough for HS512 (64 bytes or more, RFC 7518)"


# -- helpers ------------------------------------------------------------------------------


def evaluate(expression: str, **values: Any) -> Any:
    """Evaluate ``expression`` in a policy whose ``input`` holds ``values``."""
    engine = regorus.Engine()
    register_extensions(engine)
    engine.add_policy("test.rego", f"package t\n\nresult := {expression}\n")
    engine.set_input(values)
    return engine.eval_rule("data.t.result")


def evaluation_error(expression: str, **values: Any) -> str:
    with pytest.raises(RuntimeError) as caught:
        evaluate(expression, **values)
    return str(caught.value)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: Any, signature: bytes = b"sig") -> str:
    return (
        ".".join(b64url(json.dumps(part).encode()) for part in (header, claims))
        + f".{b64url(signature)}"
    )


def hmac_token(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 signed by hand: pyjwt refuses key-shaped secrets, which one test needs."""
    signing_input = unsigned_token(header, claims).rsplit(".", 1)[0]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def public_pem(key: Any) -> str:
    encoded: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded.decode()


def certificate_for(key: Any, common_name: str = "signer") -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2034, 1, 1, tzinfo=UTC))
        .sign(key, algorithm)
    )


def certificate_pem(key: Any) -> str:
    return certificate_for(key).public_bytes(serialization.Encoding.PEM).decode()


def jwk(key: Any, **members: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        document = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        document = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        document = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**document, **members}


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    p256: ec.EllipticCurvePrivateKey
    p384: ec.EllipticCurvePrivateKey
    p521: ec.EllipticCurvePrivateKey
    ed25519: ed25519.Ed25519PrivateKey

    def for_alg(self, alg: str) -> Any:
        if alg.startswith(("RS", "PS")):
            return self.rsa
        return {"ES256": self.p256, "ES384": self.p384, "ES512": self.p521}.get(alg, self.ed25519)


def make_keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(65537, 2048),
        p256=ec.generate_private_key(ec.SECP256R1()),
        p384=ec.generate_private_key(ec.SECP384R1()),
        p521=ec.generate_private_key(ec.SECP521R1()),
        ed25519=ed25519.Ed25519PrivateKey.generate(),
    )


# Generated once per module: key generation dominates the run time otherwise.
@pytest.fixture(scope="module")
def keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
def other_keys() -> Keys:
    return make_keys()


def sign(keys: Keys, alg: str, claims: dict[str, Any], **headers: Any) -> str:
    return pyjwt.encode(claims, keys.for_alg(alg), algorithm=alg, headers=headers or None)


ASYMMETRIC = [
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]


def verify_call(alg: str) -> str:
    return "io.jwt.verify_eddsa" if alg == "EdDSA" else f"io.jwt.verify_{alg.lower()}"


# -- registration -------------------------------------------------------------------------


def test_every_extension_is_registered_once_under_its_opa_name() -> None:
    paths = [extension.path for extension in EXTENSIONS]
    assert len(paths) == len(set(paths))
    assert {"io.jwt.decode", "io.jwt.decode_verify", "crypto.x509.parse_certificates"} <= set(paths)
    assert all(path.startswith(("io.jwt.", "crypto.x509.")) for path in paths)


# -- io.jwt.decode ------------------------------------------------------------------------


def test_decode_returns_header_claims_and_hex_signature() -> None:
    token = unsigned_token({"alg": "HS256", "typ": "JWT"}, {"sub": "0"}, b"\x01\xab")
    assert evaluate("io.jwt.decode(input.token)", token=token) == [
        {"alg": "HS256", "typ": "JWT"},
        {"sub": "0"},
        "01ab",
    ]


def test_decode_destructures_in_policy_without_verifying() -> None:
    token = unsigned_token({"alg": "RS256"}, {"iss": "anyone"})
    expression = "claims.iss if { [_, claims, _] := io.jwt.decode(input.token) }"
    assert evaluate(expression, token=token) == "anyone"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("abc", "encoded JWT had no period separators"),
        ("a.b", "encoded JWT must have 3 sections, found 2"),
        ("a.b.c.d", "encoded JWT must have 3 sections, found 4"),
        ("eyJ+.e30.", "JWT header had invalid encoding: illegal base64 data at input byte 3"),
    ],
)
def test_decode_errors_on_malformed_tokens(token: str, message: str) -> None:
    assert message in evaluation_error("io.jwt.decode(input.token)", token=token)


def test_decode_errors_on_jwe() -> None:
    token = unsigned_token({"alg": "RSA-OAEP", "enc": "A256GCM"}, {})
    assert "JWE" in evaluation_error("io.jwt.decode(input.token)", token=token)


def test_decode_errors_when_claims_are_not_an_object() -> None:
    token = unsigned_token({"alg": "HS256"}, ["not", "an", "object"])
    assert "not an Object" in evaluation_error("io.jwt.decode(input.token)", token=token)


def test_decode_errors_on_non_string_argument() -> None:
    assert "operand 1 must be string" in evaluation_error("io.jwt.decode(42)")


def test_decode_returns_innermost_token_of_nested_jwt() -> None:
    inner = unsigned_token({"alg": "HS256", "typ": "JWT"}, {"iss": "inner"})
    # jwt.io and OPA carry the inner token as a quoted JSON string.
    outer = unsigned_token({"alg": "HS256", "cty": "JWT"}, inner)
    header, claims, _ = evaluate("io.jwt.decode(input.token)", token=outer)
    assert (header, claims) == ({"alg": "HS256", "typ": "JWT"}, {"iss": "inner"})


def test_decode_keeps_the_last_of_duplicate_claims() -> None:
    header, payload = b64url(b'{"alg": "HS256"}'), b64url(b'{"iss": "first", "iss": "last"}')
    token = f"{header}.{payload}.{b64url(b'x')}"
    assert evaluate("io.jwt.decode(input.token)[1]", token=token) == {"iss": "last"}


def test_errors_do_not_quote_the_token() -> None:
    secret_claims = b64url(b'{"secret": "do-not-log-me"')  # truncated JSON
    token = f"{b64url(b'{}')}.{secret_claims}.c2ln"
    message = evaluation_error("io.jwt.decode(input.token)", token=token)
    assert secret_claims not in message
    assert "do-not-log-me" not in message


# -- io.jwt.verify_* ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_verify_accepts_a_valid_signature_with_a_pem_public_key(keys: Keys, alg: str) -> None:
    token = sign(keys, alg, {"sub": "alice"})
    key = public_pem(keys.for_alg(alg))
    assert evaluate(f"{verify_call(alg)}(input.token, input.key)", token=token, key=key) is True


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_verify_rejects_a_signature_by_another_key(keys: Keys, other_keys: Keys, alg: str) -> None:
    token = sign(keys, alg, {"sub": "alice"})
    key = public_pem(other_keys.for_alg(alg))
    assert evaluate(f"{verify_call(alg)}(input.token, input.key)", token=token, key=key) is False


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
@pytest.mark.parametrize(
    "key_format",
    [
        pytest.param(certificate_pem, id="certificate"),
        pytest.param(lambda key: json.dumps(jwk(key)), id="jwk"),
        pytest.param(lambda key: json.dumps({"keys": [jwk(key)]}), id="jwks"),
    ],
)
def test_verify_accepts_certificates_jwks_and_jwk_sets(
    keys: Keys, alg: str, key_format: Callable[[Any], str]
) -> None:
    token = sign(keys, alg, {"sub": "alice"})
    key = key_format(keys.for_alg(alg))
    assert evaluate(f"{verify_call(alg)}(input.token, input.key)", token=token, key=key) is True


def test_verify_rejects_a_tampered_payload(keys: Keys) -> None:
    header, _, signature = sign(keys, "RS256", {"role": "user"}).split(".")
    forged = f"{header}.{b64url(json.dumps({'role': 'admin'}).encode())}.{signature}"
    key = public_pem(keys.rsa)
    assert evaluate("io.jwt.verify_rs256(input.token, input.key)", token=forged, key=key) is False


def test_verify_checks_its_own_algorithm_not_the_header(keys: Keys) -> None:
    token = sign(keys, "PS256", {"sub": "alice"})
    key = public_pem(keys.rsa)
    assert evaluate("io.jwt.verify_rs256(input.token, input.key)", token=token, key=key) is False


def test_verify_never_uses_a_key_from_the_token_header(keys: Keys) -> None:
    attacker = rsa.generate_private_key(65537, 2048)
    token = pyjwt.encode(
        {"sub": "admin"},
        attacker,
        algorithm="RS256",
        headers={"jwk": jwk(attacker), "jku": "https://attacker.example/jwks", "x5c": ["AAAA"]},
    )
    key = public_pem(keys.rsa)
    assert evaluate("io.jwt.verify_rs256(input.token, input.key)", token=token, key=key) is False


def test_verify_tries_only_the_jwks_key_whose_kid_matches(keys: Keys, other_keys: Keys) -> None:
    token = sign(keys, "RS256", {"sub": "alice"}, kid="stale")
    jwks = {"keys": [jwk(other_keys.rsa, kid="stale"), jwk(keys.rsa, kid="current")]}
    expression = "io.jwt.verify_rs256(input.token, input.key)"
    assert evaluate(expression, token=token, key=json.dumps(jwks)) is False
    jwks["keys"][0]["kid"] = "unrelated"  # no kid match: every key is tried
    assert evaluate(expression, token=token, key=json.dumps(jwks)) is True


def test_verify_skips_jwks_keys_declared_for_another_alg(keys: Keys) -> None:
    token = sign(keys, "RS256", {"sub": "alice"})
    jwks = json.dumps({"keys": [jwk(keys.rsa, alg="PS256")]})
    assert evaluate("io.jwt.verify_rs256(input.token, input.key)", token=token, key=jwks) is False


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("-----BEGIN CERT-----\nAAAA\n-----END CERT-----", "failed to extract a Key"),
        ('{"kty": "bogus"}', "failed to parse a JWK key (set)"),
        ("not a key", "failed to parse a JWK key (set)"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "PEM certificate"),
    ],
)
def test_verify_errors_on_unusable_keys(keys: Keys, key: str, message: str) -> None:
    token = sign(keys, "RS256", {})
    error = evaluation_error("io.jwt.verify_rs256(input.token, input.key)", token=token, key=key)
    assert message in error


def test_verify_errors_on_data_after_the_pem_block(keys: Keys) -> None:
    token = sign(keys, "RS256", {})
    key = public_pem(keys.rsa) + "EXTRA"
    error = evaluation_error("io.jwt.verify_rs256(input.token, input.key)", token=token, key=key)
    assert "extra data after a PEM certificate block" in error


def test_verify_errors_on_a_malformed_token(keys: Keys) -> None:
    error = evaluation_error(
        "io.jwt.verify_rs256(input.token, input.key)", token="a.b", key=public_pem(keys.rsa)
    )
    assert "encoded JWT must have 3 sections, found 2" in error


@pytest.mark.parametrize("bits", ["256", "384", "512"])
def test_verify_hs_accepts_only_the_right_secret(bits: str) -> None:
    token = pyjwt.encode({"sub": "alice"}, SECRET, algorithm=f"HS{bits}")
    expression = f"io.jwt.verify_hs{bits}(input.token, input.secret)"
    assert evaluate(expression, token=token, secret=SECRET) is True
    assert evaluate(expression, token=token, secret="wrong") is False


def test_verify_hs_rejects_an_unsigned_token() -> None:
    token = unsigned_token({"alg": "none"}, {"sub": "admin"}, b"")
    assert evaluate('io.jwt.verify_hs256(input.token, "secret")', token=token) is False


# -- io.jwt.decode_verify -----------------------------------------------------------------


def decode_verify(token: str, **constraints: Any) -> list[Any]:
    result: list[Any] = evaluate(
        "io.jwt.decode_verify(input.token, input.constraints)",
        token=token,
        constraints=constraints,
    )
    return result


UNVERIFIED = [False, {}, {}]


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_decode_verify_returns_header_and_claims_for_a_valid_token(keys: Keys, alg: str) -> None:
    token = sign(keys, alg, {"iss": "issuer", "exp": NOW + 60})
    result = decode_verify(token, cert=public_pem(keys.for_alg(alg)), time=NOW * SECONDS)
    assert result == [True, {"alg": alg, "typ": "JWT"}, {"iss": "issuer", "exp": NOW + 60}]


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_decode_verify_accepts_a_secret_for_hmac_tokens(alg: str) -> None:
    token = pyjwt.encode({"sub": "alice"}, SECRET, algorithm=alg)
    assert decode_verify(token, secret=SECRET)[0] is True
    assert decode_verify(token, secret="other") == UNVERIFIED


def test_decode_verify_rejects_alg_none(keys: Keys) -> None:
    token = unsigned_token({"alg": "none"}, {"sub": "admin"}, b"")
    assert decode_verify(token, secret="secret") == UNVERIFIED
    assert decode_verify(token, cert=public_pem(keys.rsa)) == UNVERIFIED


def test_decode_verify_does_not_use_a_public_key_as_hmac_secret(keys: Keys) -> None:
    # The classic algorithm-confusion forgery: HS256 keyed with the verifier's public key.
    pem = public_pem(keys.rsa)
    token = hmac_token({"alg": "HS256"}, {"sub": "admin"}, pem.encode())
    assert decode_verify(token, cert=pem) == UNVERIFIED


def test_decode_verify_does_not_verify_asymmetric_tokens_with_a_secret(keys: Keys) -> None:
    token = sign(keys, "RS256", {"sub": "alice"})
    assert decode_verify(token, secret=public_pem(keys.rsa)) == UNVERIFIED


def test_decode_verify_enforces_the_alg_constraint(keys: Keys) -> None:
    token = sign(keys, "RS256", {})
    assert decode_verify(token, cert=public_pem(keys.rsa), alg="RS256")[0] is True
    assert decode_verify(token, cert=public_pem(keys.rsa), alg="PS256") == UNVERIFIED


@pytest.mark.parametrize(
    ("claims", "valid"),
    [
        ({"iss": "expected"}, True),
        ({"iss": "someone-else"}, False),
        ({}, False),
    ],
)
def test_decode_verify_enforces_the_iss_constraint(
    keys: Keys, claims: dict[str, Any], valid: bool
) -> None:
    token = sign(keys, "ES256", claims)
    assert decode_verify(token, cert=public_pem(keys.p256), iss="expected")[0] is valid


@pytest.mark.parametrize(
    ("token_aud", "constraint", "valid"),
    [
        ("svc", "svc", True),
        (["other", "svc"], "svc", True),
        ("other", "svc", False),
        (["other"], "svc", False),
        (None, "svc", False),  # constrained audience, token has none
        ("svc", None, False),  # OPA: a token with aud needs an aud constraint
        (None, None, True),
    ],
)
def test_decode_verify_applies_opa_audience_rules(
    keys: Keys, token_aud: Any, constraint: str | None, valid: bool
) -> None:
    claims = {} if token_aud is None else {"aud": token_aud}
    token = sign(keys, "ES256", claims)
    constraints: dict[str, Any] = {"cert": public_pem(keys.p256)}
    if constraint is not None:
        constraints["aud"] = constraint
    assert decode_verify(token, **constraints)[0] is valid


AT = NOW * SECONDS


@pytest.mark.parametrize(
    ("claims", "time_ns", "valid"),
    [
        ({"exp": NOW + 1}, AT, True),
        ({"exp": NOW}, AT, False),  # expired at exp itself
        ({"exp": NOW - 1}, AT, False),
        ({"nbf": NOW}, AT, True),  # valid from nbf itself
        ({"nbf": NOW + 1}, AT, False),
        ({"nbf": NOW + 0.5}, AT + 400_000_000, False),  # fractional seconds count
        ({"nbf": NOW + 0.5}, AT + 500_000_000, True),
        ({"exp": NOW + 0.5}, AT + 400_000_000, True),
    ],
)
def test_decode_verify_checks_exp_and_nbf_against_the_time_constraint(
    claims: dict[str, Any], time_ns: int, valid: bool
) -> None:
    token = pyjwt.encode(claims, SECRET, algorithm="HS256")
    assert decode_verify(token, secret=SECRET, time=time_ns)[0] is valid


def test_decode_verify_uses_the_current_time_without_a_time_constraint() -> None:
    expired = pyjwt.encode({"exp": 1000}, SECRET, algorithm="HS256")
    fresh = pyjwt.encode({"exp": 4_000_000_000}, SECRET, algorithm="HS256")
    assert decode_verify(expired, secret=SECRET) == UNVERIFIED
    assert decode_verify(fresh, secret=SECRET)[0] is True


def test_decode_verify_rejects_an_unknown_critical_header(keys: Keys) -> None:
    token = sign(keys, "RS256", {}, crit=["junk"], junk="x")
    assert decode_verify(token, cert=public_pem(keys.rsa)) == UNVERIFIED


def test_decode_verify_accepts_any_matching_key_of_a_jwks(keys: Keys, other_keys: Keys) -> None:
    token = sign(keys, "RS256", {"sub": "alice"})
    jwks = {"keys": [jwk(keys.p256, kid="ec"), jwk(other_keys.rsa), jwk(keys.rsa, alg="RS256")]}
    assert decode_verify(token, cert=json.dumps(jwks))[0] is True
    jwks["keys"].pop()
    assert decode_verify(token, cert=json.dumps(jwks)) == UNVERIFIED


def test_decode_verify_verifies_every_level_of_a_nested_token(keys: Keys) -> None:
    inner = sign(keys, "ES256", {"iss": "inner"})
    outer = pyjwt.api_jws.encode(
        inner.encode(), keys.p256, algorithm="ES256", headers={"cty": "JWT"}
    )
    result = decode_verify(outer, cert=public_pem(keys.p256), iss="inner")
    assert result == [True, {"alg": "ES256", "typ": "JWT"}, {"iss": "inner"}]
    forged_inner = unsigned_token({"alg": "ES256"}, {"iss": "inner"}).encode()
    outer = pyjwt.api_jws.encode(forged_inner, keys.p256, algorithm="ES256", headers={"cty": "JWT"})
    assert decode_verify(outer, cert=public_pem(keys.p256)) == UNVERIFIED


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        ({"secret": "s", "issuer": "x"}, "unknown token validation constraint: issuer"),
        ({"secret": "s", "cert": '{"keys": []}'}, "duplicate key constraints"),
        ({"iss": "x"}, "no key constraint"),
        ({"secret": "s", "time": -1}, "must not be negative"),
        ({"secret": "s", "time": "now"}, "must be a number"),
    ],
)
def test_decode_verify_errors_on_bad_constraints(constraints: dict[str, Any], message: str) -> None:
    token = pyjwt.encode({}, SECRET, algorithm="HS256")
    error = evaluation_error(
        "io.jwt.decode_verify(input.token, input.constraints)",
        token=token,
        constraints=constraints,
    )
    assert message in error


@pytest.mark.parametrize("claim", ["exp", "nbf"])
def test_decode_verify_errors_on_a_non_numeric_time_claim(claim: str) -> None:
    token = pyjwt.api_jws.encode(json.dumps({claim: None}).encode(), SECRET, algorithm="HS256")
    error = evaluation_error(
        "io.jwt.decode_verify(input.token, input.constraints)",
        token=token,
        constraints={"secret": SECRET},
    )
    assert f"{claim} value must be a number" in error


# -- crypto.x509.parse_certificates -------------------------------------------------------

SPIFFE_ID = "spiffe://example.org/ns/default/sa/web"


@dataclass(frozen=True)
class Chain:
    ca: x509.Certificate
    leaf: x509.Certificate


@pytest.fixture(scope="module")
def chain(keys: Keys) -> Chain:
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Example CA"),
        ]
    )
    ca_key = keys.p384
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(7)
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2034, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )
    leaf_key = keys.p256
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "web"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "web.default"),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(2**70 + 5)
        .not_valid_before(datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))
        .not_valid_after(datetime(2025, 3, 5, 5, 6, 7, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(SPIFFE_ID),
                    x509.DNSName("web.default.svc"),
                    x509.RFC822Name("web@example.org"),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
                    x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Chain(ca, leaf)


def pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def parse(certs: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = evaluate(
        "crypto.x509.parse_certificates(input.certs)", certs=certs
    )
    return result


def test_parse_certificates_exposes_the_spiffe_id_in_uri_strings(chain: Chain) -> None:
    expression = "crypto.x509.parse_certificates(input.certs)[0].URIStrings"
    assert evaluate(expression, certs=pem(chain.leaf)) == [SPIFFE_ID]


def test_parse_certificates_reports_names_like_go_pkix_name(chain: Chain) -> None:
    [leaf] = parse(pem(chain.leaf))
    assert leaf["Subject"] == {
        "CommonName": "web.default",
        "SerialNumber": "",
        "Country": None,
        "Organization": None,
        "OrganizationalUnit": ["web"],
        "Locality": None,
        "Province": None,
        "StreetAddress": None,
        "PostalCode": None,
        "Names": [
            {"Type": [2, 5, 4, 11], "Value": "web"},
            {"Type": [2, 5, 4, 3], "Value": "web.default"},
        ],
        "ExtraNames": None,
    }
    assert leaf["Issuer"]["CommonName"] == "Example CA"
    assert leaf["Issuer"]["Country"] == ["DE"]
    assert leaf["Issuer"]["Organization"] == ["Example"]


def test_parse_certificates_reports_the_documented_fields(chain: Chain) -> None:
    [leaf] = parse(pem(chain.leaf))
    ski = x509.SubjectKeyIdentifier.from_public_key(chain.leaf.public_key()).digest
    aki = chain.ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    expected = {
        "Version": 3,
        "SerialNumber": str(2**70 + 5),  # beyond 64 bits: a decimal string, never a float
        "NotBefore": "2025-03-04T05:06:07Z",
        "NotAfter": "2025-03-05T05:06:07Z",
        "KeyUsage": 1 | 4,  # DigitalSignature | KeyEncipherment
        "ExtKeyUsage": [1, 2],  # ServerAuth, ClientAuth
        "UnknownExtKeyUsage": None,
        "BasicConstraintsValid": True,
        "IsCA": False,
        "MaxPathLen": -1,
        "MaxPathLenZero": False,
        "SubjectKeyId": base64.b64encode(ski).decode(),
        "AuthorityKeyId": base64.b64encode(aki).decode(),
        "DNSNames": ["web.default.svc"],
        "EmailAddresses": ["web@example.org"],
        "IPAddresses": ["10.0.0.7", "2001:db8::7"],
        "OCSPServer": None,
        "IssuingCertificateURL": None,
        "CRLDistributionPoints": None,
        "PolicyIdentifiers": None,
        "PublicKeyAlgorithm": 3,  # ECDSA
        "SignatureAlgorithm": 10,  # ECDSAWithSHA256
        "Raw": base64.b64encode(chain.leaf.public_bytes(serialization.Encoding.DER)).decode(),
    }
    assert {name: leaf[name] for name in expected} == expected


def test_parse_certificates_reports_ca_constraints_and_absent_lists_as_null(chain: Chain) -> None:
    [ca] = parse(pem(chain.ca))
    assert (ca["IsCA"], ca["MaxPathLen"], ca["MaxPathLenZero"]) == (True, 0, True)
    assert (ca["SerialNumber"], ca["SignatureAlgorithm"]) == (7, 11)  # ECDSAWithSHA384
    assert ca["DNSNames"] is ca["URIStrings"] is ca["ExtKeyUsage"] is ca["AuthorityKeyId"] is None
    assert ca["KeyUsage"] == 0


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda chain: pem(chain.leaf, chain.ca), id="pem"),
        pytest.param(
            lambda chain: base64.b64encode(pem(chain.leaf, chain.ca).encode()).decode(),
            id="base64-pem",
        ),
        pytest.param(
            lambda chain: base64.b64encode(
                b"".join(c.public_bytes(serialization.Encoding.DER) for c in (chain.leaf, chain.ca))
            ).decode(),
            id="base64-der",
        ),
    ],
)
def test_parse_certificates_accepts_every_opa_encoding_of_a_chain(
    chain: Chain, encode: Callable[[Chain], str]
) -> None:
    expression = "[c.Subject.CommonName | some c in crypto.x509.parse_certificates(input.certs)]"
    assert evaluate(expression, certs=encode(chain)) == ["web.default", "Example CA"]


@pytest.mark.parametrize(
    ("certs", "message"),
    [
        ("foobar", "illegal base64"),
        (base64.b64encode(b"badstring").decode(), "x509: malformed certificate"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PEM block type"),
    ],
)
def test_parse_certificates_errors_on_invalid_input(certs: str, message: str) -> None:
    error = evaluation_error("crypto.x509.parse_certificates(input.certs)", certs=certs)
    assert message in error


def test_parse_certificates_errors_on_non_string_argument() -> None:
    assert "operand 1 must be string" in evaluation_error("crypto.x509.parse_certificates([])")
