"""Ed25519 through libsodium gives OpenSSL's verdicts: a differential test on the edge cases.

The gateway verifies every Ed25519 signature with libsodium (`authz.credentials.ed25519`).
Here each case is judged by that path and by OpenSSL (`cryptography`) after the same point
checks; the two must agree on every one: valid signatures, every single-bit mutation of a
signature, non-canonical `S`, small-order `R` (also one the key holder can make OpenSSL
accept), wrong lengths, other messages and keys. Keys that are small-order or non-canonical
points are refused when loaded, whichever way they would later be checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from authz.credentials import ed25519
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, InvalidKey, public_key_from_jwk
from authz.credentials.jose import b64url_encode

L = 2**252 + 27742317777372353535851937790883648493
P = 2**255 - 19
SMALL_ORDER_ENCODINGS = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    P.to_bytes(32, "little").hex(),
    (P + 1).to_bytes(32, "little").hex(),
]


def openssl_verdict(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """OpenSSL's verdict after the same point checks the libsodium path makes."""
    if len(signature) != 64 or ed25519.has_small_order(signature[:32]):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def secret_scalar(private: Ed25519PrivateKey) -> int:
    digest = bytearray(hashlib.sha512(private.private_bytes_raw()).digest()[:32])
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    return int.from_bytes(digest, "little")


def with_small_order_r(private: Ed25519PrivateKey, message: bytes) -> bytes:
    """A signature with R = the identity that satisfies OpenSSL's (cofactorless) equation:
    S = H(R || A || M) * a. Only the key holder can make it; libsodium refuses it."""
    identity = (1).to_bytes(32, "little")
    k = int.from_bytes(hashlib.sha512(identity + raw(private) + message).digest(), "little") % L
    return identity + (k * secret_scalar(private) % L).to_bytes(32, "little")


def cases() -> Iterator[tuple[str, bytes, bytes, bytes]]:
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    messages = [b"", b"eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ4In0", bytes(range(256)) * 4]
    for index, (key, message) in enumerate(zip(keys, messages, strict=True)):
        public, signature = raw(key), key.sign(message)
        s = int.from_bytes(signature[32:], "little")
        yield f"valid-{index}", public, message, signature
        for bit in range(0, 512, 7):
            mutated = bytearray(signature)
            mutated[bit // 8] ^= 1 << (bit % 8)
            yield f"bit-{bit}-{index}", public, message, bytes(mutated)
        yield f"s-plus-l-{index}", public, message, signature[:32] + (s + L).to_bytes(32, "little")
        yield f"s-is-l-{index}", public, message, signature[:32] + L.to_bytes(32, "little")
        yield f"other-message-{index}", public, message + b"!", signature
        yield f"other-key-{index}", raw(keys[index - 1]), message, signature
        yield f"short-{index}", public, message, signature[:63]
        yield f"long-{index}", public, message, signature + b"\0"
        yield f"r-small-order-crafted-{index}", public, message, with_small_order_r(key, message)
        for n, encoding in enumerate(SMALL_ORDER_ENCODINGS):
            forged = bytes.fromhex(encoding) + signature[32:]
            yield f"r-small-order-{n}-{index}", public, message, forged


CASES = list(cases())


def test_libsodium_and_openssl_agree_on_every_edge_case() -> None:
    disagreements = [
        name
        for name, public, message, signature in CASES
        if ed25519.verify(public, message, signature)
        is not openssl_verdict(public, message, signature)
    ]
    assert disagreements == []
    assert len(CASES) > 250


def test_the_corpus_holds_valid_signatures_and_the_crafted_small_order_one_openssl_takes() -> None:
    """The differential test is not vacuous: some cases verify, and OpenSSL alone would take
    the key holder's small-order-R signature."""
    assert sum(ed25519.verify(*case[1:]) for case in CASES) == 3
    key = Ed25519PrivateKey.generate()
    crafted = with_small_order_r(key, b"m")
    key.public_key().verify(crafted, b"m")  # OpenSSL, without our point checks: accepted
    assert not ed25519.verify(raw(key), b"m", crafted)


@pytest.mark.parametrize("encoding", SMALL_ORDER_ENCODINGS)
def test_a_small_order_or_non_canonical_ed25519_key_is_refused_at_load(encoding: str) -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes.fromhex(encoding))}
    with pytest.raises(InvalidKey, match="small-order or non-canonical"):
        public_key_from_jwk(jwk, SUPPORTED_ALGORITHMS)


def test_an_ed25519_key_verifies_under_both_names_through_libsodium() -> None:
    private = Ed25519PrivateKey.generate()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw(private))}
    key = public_key_from_jwk(jwk, ("EdDSA", "Ed25519"))
    assert key.ed25519_raw == raw(private)
    for name in ("EdDSA", "Ed25519"):
        algorithm = SUPPORTED_ALGORITHMS[name]
        assert key.verify(algorithm, b"input", private.sign(b"input"))
        assert not key.verify(algorithm, b"input!", private.sign(b"input"))
