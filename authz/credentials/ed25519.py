"""Ed25519 signature checks through libsodium (PyNaCl), with the point checks both libraries
must agree on.

libsodium verifies an Ed25519 signature in about half the CPU time OpenSSL takes here, and
most WPTs and HTTP signatures are Ed25519, so every Ed25519 check goes through it. The two
libraries differ only on degenerate points, which no honest signer produces; those are
refused here before either library is asked, so a signature verifies through this module
exactly when it verifies through OpenSSL after the same checks (a differential test pins
it):

- a public key that is not a canonically encoded point of the prime-order subgroup (a small-
  order key lets anyone sign for it under OpenSSL's rules) is refused when the key is loaded;
- a signature whose `R` is a small-order point is refused, as libsodium does and OpenSSL
  does not;
- `S` must be below the group order (RFC 8032, both libraries check it).
"""

from __future__ import annotations

from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign_open
from nacl.exceptions import BadSignatureError

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32

_P = 2**255 - 19
# The small-order points' encodings with the sign bit cleared: the orders 1, 2 and 4
# (y = 1, -1, 0), the two points of order 8, and the non-canonical encodings of y = 0, 1.
_SMALL_ORDER = frozenset(
    (
        (0).to_bytes(32, "little"),
        (1).to_bytes(32, "little"),
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        (_P - 1).to_bytes(32, "little"),
        _P.to_bytes(32, "little"),
        (_P + 1).to_bytes(32, "little"),
    )
)


def is_valid_public_key(raw: bytes) -> bool:
    """A canonical encoding of a point of the prime-order subgroup (checked once per key)."""
    return len(raw) == PUBLIC_KEY_BYTES and bool(crypto_core_ed25519_is_valid_point(raw))


def has_small_order(point: bytes) -> bool:
    """Whether an encoded point is one of the small-order points, in any encoding."""
    return len(point) == 32 and point[:31] + bytes((point[31] & 0x7F,)) in _SMALL_ORDER


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key` (a key
    `is_valid_public_key` accepted)."""
    if len(signature) != SIGNATURE_BYTES or has_small_order(signature[:32]):
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, ValueError):
        return False
    return True
