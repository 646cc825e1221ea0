from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.credentials.algorithms import (
    SUPPORTED_ALGORITHMS,
    InvalidKey,
    public_key_from_jwk,
)
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import sign_jws
from authz.errors import ConfigError
from authz.trust.key_sets import build_trust_store, read_jwks_file


def test_no_symmetric_or_unsigned_algorithm_is_representable() -> None:
    assert not {"none", "HS256", "HS384", "HS512"} & set(SUPPORTED_ALGORITHMS)
    assert {"ES256", "ES384", "EdDSA", "Ed25519", "RS256", "PS256"} <= set(SUPPORTED_ALGORITHMS)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "EdDSA", "Ed25519", "RS256", "PS256"])
def test_each_algorithm_verifies_its_own_signature_and_rejects_a_tampered_one(alg: str) -> None:
    private = generate_private_jwk(alg, kid="k")
    key = public_key_from_jwk(public_jwk(private), [alg])
    token = sign_jws({"n": 1}, private, {"typ": "x"})
    signing_input, signature = token.rsplit(".", 1)
    from authz.credentials.jose import b64url_decode

    raw = b64url_decode(signature)
    algorithm = SUPPORTED_ALGORITHMS[alg]
    assert key.verify(algorithm, signing_input.encode(), raw)
    assert not key.verify(algorithm, signing_input.encode() + b"x", raw)
    assert not key.verify(algorithm, signing_input.encode(), raw[:-1])


def test_ed25519_name_only_fits_ed25519_keys_and_eddsa_key_verifies_both_names() -> None:
    private = generate_private_jwk("EdDSA")
    jwk = public_jwk(private)
    jwk.pop("alg")
    key = public_key_from_jwk(jwk, ["EdDSA", "Ed25519"])
    assert key.algorithms == {"EdDSA", "Ed25519"}


def test_key_alg_narrows_what_it_may_verify() -> None:
    jwk = public_jwk(generate_private_jwk("RS256"))
    key = public_key_from_jwk(jwk, ["RS256", "PS256"])
    assert key.algorithms == {"RS256"}
    assert not key.verify(SUPPORTED_ALGORITHMS["PS256"], b"x", b"y")


def test_key_without_alg_may_verify_every_allowed_algorithm_of_its_type() -> None:
    jwk = public_jwk(generate_private_jwk("RS256"))
    del jwk["alg"]
    key = public_key_from_jwk(jwk, ["RS256", "PS256", "ES256"])
    assert key.algorithms == {"RS256", "PS256"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda j: j.update(d="AAAA"), "private"),
        (lambda j: j.update(k="c2VjcmV0", kty="oct"), "private"),
        (lambda j: j.update(use="enc"), "use"),
        (lambda j: j.update(key_ops=["encrypt"]), "key_ops"),
        (lambda j: j.update(alg="HS256"), "not a supported algorithm"),
        (lambda j: j.update(alg="RS256"), "is for RSA keys; this key is EC"),
        (lambda j: j.update(y=j["x"]), "parameters are invalid"),
        (lambda j: j.update(x="AAAA"), "parameters are invalid"),
        (lambda j: j.pop("kty"), "kty"),
        (lambda j: j.update(kid=7), "kid"),
    ],
)
def test_unusable_keys_are_refused(mutate: object, message: str) -> None:
    jwk = public_jwk(generate_private_jwk("ES256", kid="k"))
    assert callable(mutate)
    mutate(jwk)
    with pytest.raises(InvalidKey, match=message):
        public_key_from_jwk(jwk, ["ES256", "RS256"])


def test_key_outside_the_allow_list_is_refused() -> None:
    jwk = public_jwk(generate_private_jwk("ES384"))
    with pytest.raises(InvalidKey, match="none of the allowed"):
        public_key_from_jwk(jwk, ["ES256"])


def test_short_rsa_keys_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    small = RSAAlgorithm.to_jwk(
        rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(), as_dict=True
    )
    with pytest.raises(InvalidKey, match="2048"):
        public_key_from_jwk(small, ["RS256"])


def test_trust_store_indexes_keys_by_kid_and_by_algorithm() -> None:
    first = public_jwk(generate_private_jwk("ES256", kid="a"))
    second = public_jwk(generate_private_jwk("EdDSA", kid="b"))
    store = build_trust_store(
        {"example.org": (frozenset({"ES256", "EdDSA"}), {"keys": [first, second]}, "here")}
    )
    holder = store.get("example.org")
    assert holder is not None
    domain = holder.current
    assert domain.key_for_kid("a") is not None
    assert domain.key_for_kid("zz") is None
    assert [k.kid for k in domain.keys_for_alg("EdDSA")] == ["b"]
    assert store.get("other.org") is None


def test_trust_store_revision_changes_with_its_keys() -> None:
    jwks = {"keys": [public_jwk(generate_private_jwk("ES256", kid="a"))]}
    one = build_trust_store({"e.org": (frozenset({"ES256"}), jwks, "x")})
    same = build_trust_store({"e.org": (frozenset({"ES256"}), jwks, "x")})
    other = build_trust_store(
        {
            "e.org": (
                frozenset({"ES256"}),
                {"keys": [public_jwk(generate_private_jwk("ES256"))]},
                "x",
            )
        }
    )
    assert one.revision == same.revision != other.revision


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"nokeys": []}, "not a JWKS"),
        ({"keys": []}, "holds no keys"),
        ({"keys": ["x"]}, "key #0"),
    ],
)
def test_bad_jwks_documents_are_config_errors_naming_where(document: object, message: str) -> None:
    with pytest.raises(ConfigError, match=f"trust_domains.e.org: .*{message}|{message}"):
        build_trust_store({"e.org": (frozenset({"ES256"}), document, "trust_domains.e.org")})


def test_duplicate_kids_in_one_domain_are_a_config_error() -> None:
    a = public_jwk(generate_private_jwk("ES256", kid="same"))
    b = public_jwk(generate_private_jwk("ES256", kid="same"))
    with pytest.raises(ConfigError, match="share kid"):
        build_trust_store({"e.org": (frozenset({"ES256"}), {"keys": [a, b]}, "td")})


def test_unreadable_jwks_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_jwks_file(tmp_path / "missing.json", "trust_domains.e.org.jwks_file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        read_jwks_file(bad, "trust_domains.e.org.jwks_file")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"keys": []}))
    assert read_jwks_file(good, "w") == {"keys": []}


# RFC 7638 section 3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_matches_the_rfc7638_example() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert public_key_from_jwk(jwk, ["RS256"]).thumbprint == RFC7638_THUMBPRINT


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "RS256"])
def test_thumbprint_names_the_key_material_not_its_kid_or_other_members(alg: str) -> None:
    public = public_jwk(generate_private_jwk(alg, kid="one"))
    relabelled = {**public, "kid": "two", "use": "sig"}
    relabelled.pop("alg")
    assert (
        public_key_from_jwk(public, [alg]).thumbprint
        == public_key_from_jwk(relabelled, [alg]).thumbprint
    )
    other = public_jwk(generate_private_jwk(alg, kid="one"))
    assert (
        public_key_from_jwk(other, [alg]).thumbprint
        != public_key_from_jwk(public, [alg]).thumbprint
    )


def test_a_key_set_knows_every_kid_one_key_is_published_under() -> None:
    private = generate_private_jwk("ES256")
    public = public_jwk(private)
    lone = public_jwk(generate_private_jwk("ES256", kid="lone"))
    store = build_trust_store(
        {
            "example.org": (
                frozenset({"ES256"}),
                {"keys": [{**public, "kid": "a"}, {**public, "kid": "b"}, lone]},
                "test",
            )
        }
    )
    domain = store.domains["example.org"].current
    twice = domain.key_for_kid("a")
    assert twice is not None
    assert domain.kids_of(twice) == {"a", "b"}
    single = domain.key_for_kid("lone")
    assert single is not None
    assert domain.kids_of(single) == {"lone"}
