from __future__ import annotations

import base64
import json

import pytest

from authz.credentials.jose import (
    JoseReasons,
    b64url_decode,
    b64url_encode,
    parse_compact_jws,
    typ_matches,
)
from authz.errors import CredentialError
from authz.reasons import Reason

REASONS = JoseReasons(
    malformed=Reason.WIT_MALFORMED,
    header_key_forbidden=Reason.WIT_HEADER_KEY_FORBIDDEN,
    crit_unsupported=Reason.WIT_CRIT_UNSUPPORTED,
    b64_unsupported=Reason.WIT_B64_UNSUPPORTED,
)


def segment(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return b64url_encode(raw)


def token(header: object, claims: object = None, signature: bytes = b"sig") -> str:
    claims = {"sub": "x"} if claims is None else claims
    return f"{segment(header)}.{segment(claims)}.{b64url_encode(signature)}"


def reason_of(value: str) -> Reason:
    with pytest.raises(CredentialError) as caught:
        parse_compact_jws(value, REASONS)
    return caught.value.reason


def test_well_formed_token_is_split_into_header_claims_and_signature() -> None:
    jws = parse_compact_jws(token({"alg": "ES256", "typ": "wit+jwt"}), REASONS)
    assert jws.header == {"alg": "ES256", "typ": "wit+jwt"}
    assert jws.claims == {"sub": "x"}
    assert jws.signature == b"sig"
    assert jws.signing_input == token({"alg": "ES256", "typ": "wit+jwt"}).rsplit(".", 1)[0].encode()


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_headers_that_carry_keys_are_refused(name: str) -> None:
    assert reason_of(token({"alg": "ES256", name: "anything"})) is Reason.WIT_HEADER_KEY_FORBIDDEN


def test_crit_is_refused_because_no_extension_is_understood() -> None:
    assert reason_of(token({"alg": "ES256", "crit": ["exp"]})) is Reason.WIT_CRIT_UNSUPPORTED


@pytest.mark.parametrize("b64", [False, True])
def test_b64_header_is_refused(b64: bool) -> None:
    assert reason_of(token({"alg": "ES256", "b64": b64})) is Reason.WIT_B64_UNSUPPORTED


@pytest.mark.parametrize(
    "value",
    [
        "a.b",
        "a.b.c.d",
        "..",
        "." * 5,
        token({"alg": "ES256"}) + "=",
        token({"alg": "ES256"}).replace(".", ". ", 1),
        "é" + token({"alg": "ES256"}),
        token([1, 2]),
        token("header"),
        token({"alg": 5}),
        token({"typ": "JWT"}),
        token({"alg": "ES256"}, claims=[1]),
        token({"alg": "ES256"}, claims=b"not json"),
        token({"alg": "ES256"}, claims=b'{"sub":"a","sub":"b"}'),
        token({"alg": "ES256"}, claims=b'{"exp": NaN}'),
        token({"alg": "ES256"}, claims=b"\xff\xfe"),
        segment(b'{"alg":"ES256","alg":"none"}') + "." + segment({"a": 1}) + ".c2ln",
        token({"alg": "ES256"}).rsplit(".", 1)[0] + ".+/==",
    ],
)
def test_malformed_tokens_are_refused_as_malformed(value: str) -> None:
    assert reason_of(value) is Reason.WIT_MALFORMED


def test_standard_base64_alphabet_is_not_base64url() -> None:
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(base64.b64encode(b"\xfb\xff").decode())


def test_base64url_round_trips_without_padding() -> None:
    for raw in (b"", b"a", b"ab", b"abc", bytes(range(256))):
        encoded = b64url_encode(raw)
        assert "=" not in encoded
        assert b64url_decode(encoded) == raw


@pytest.mark.parametrize(
    ("typ", "expected"),
    [
        ("wit+jwt", True),
        ("WIT+JWT", True),
        ("application/wit+jwt", True),
        ("Application/WIT+jwt", True),
        ("JWT", False),
        ("wpt+jwt", False),
        ("application/wit+jwt; charset=x", False),
        (None, False),
        (["wit+jwt"], False),
    ],
)
def test_typ_comparison_is_case_insensitive_with_optional_application_prefix(
    typ: object, expected: bool
) -> None:
    assert typ_matches(typ, "wit+jwt") is expected
