"""An independent checker of issued Transaction Tokens, written from the draft's text.

It exists to test the gateway's Transaction Token Service (TTS) -- the component that
*issues* Txn-Tokens at the edge and by token exchange -- against the specifications
rather than against our own code, so it deliberately shares no code with ``authz`` and
imports only the standard library and ``cryptography``.

Sources (section numbers are those of draft-ietf-oauth-transaction-tokens-10, 29 July
2026, counted from the working group's kramdown source of that revision, commit
``dbdf43e`` of github.com/oauth-wg/oauth-transaction-tokens, 6 July 2026; -11 changes
text only, not the wire format, so each citation also gives the section's title):

* ``draft-ietf-oauth-transaction-tokens`` (cited "TXN") -- 7 "Txn-Token Lifetime",
  10.1 "JWT Header", 10.2 "JWT Body Claims" (10.2.1 "Scope claim", 10.2.2 "Request
  Context", 10.2.3 "Transaction Context", 10.2.4 "Example"), 12.3 "Txn-Token Request
  Processing", 12.4 "Txn-Token Response", 13.1 '"Txn-Token" HTTP Header', 13.2
  "Txn-Token Validation", 14.3 "Refresh Tokens", 14.4 "Access Tokens", 14.6 "Scope
  Processing", 14.15 "Txn-Token as a ``subject_token``".
* RFC 8693 (OAuth 2.0 Token Exchange) -- 2.2.1 "Successful Response", 2.2.2 "Error
  Response", 3 "Token Type Identifiers", 4.1 '"act" (Actor) Claim', 4.2 '"scope"
  (Scopes) Claim'.
* RFC 6749 (OAuth 2.0) -- 3.3 "Access Token Scope" (the scope grammar), 5.1 "Successful
  Response", 5.2 "Error Response" (the error codes and the character sets of
  ``error_description`` and ``error_uri``).
* RFC 7515/7517/7518/7519 (JWS, JWK, JWA, JWT), RFC 8037 and RFC 9864 (EdDSA,
  ``Ed25519``), RFC 8725 sections 3.1 and 3.11 (algorithm verification, explicit
  typing), RFC 8259 (JSON), RFC 9110 sections 5.1, 5.3 (field names and combined field
  lines) and 15.5.2 (a 401 carries ``WWW-Authenticate``), RFC 9111 section 5.2.2.5
  (``Cache-Control: no-store``).

Where the texts leave something open, this module's choices are listed in the
docstrings of the functions that make them (``max_lifetime``, the call-chain profile of
:func:`check_replacement`, the strictness of ``req_wl``).

Every failure raises :class:`TxnCheckFailed` whose ``rule`` names the rule that failed;
the rule strings, with their sources, are the keys of :data:`RULES`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = [
    "ISSUED_TOKEN_TYPE",
    "REGISTERED_ERRORS",
    "REQUIRED_CLAIMS",
    "RULES",
    "SUPPORTED_ALGS",
    "TxnCheckFailed",
    "check_exchange_error",
    "check_exchange_response",
    "check_issued_from",
    "check_replacement",
    "check_txn_token",
]

ISSUED_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:txn_token"
"""The token type URI of a Txn-Token (TXN 12.1, 12.4; registered in TXN 17.1)."""

REQUIRED_CLAIMS: Final = ("iat", "aud", "exp", "txn", "sub", "scope", "req_wl")
"""The claims TXN 10.2 marks REQUIRED (``iss`` is OPTIONAL, ``tctx``/``rctx`` RECOMMENDED)."""

REGISTERED_ERRORS: Final = frozenset(
    {
        # RFC 6749 section 5.2
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        # RFC 8693 section 2.2.2
        "invalid_target",
    }
)
"""The ``error`` codes a token endpoint answering a token exchange may use."""

SUPPORTED_ALGS: Final = frozenset(
    {
        "ES256",
        "ES384",
        "ES512",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)
"""Asymmetric JWS algorithms (RFC 7518 section 3, RFC 8037, RFC 9864). Never ``none``
nor ``HS*``: a Txn-Token is verified by every workload of the trust domain with the TTS's
public keys (TXN 13.2), so a shared secret would let any of them forge tokens."""

#: Every rule string this module can raise, with the text it enforces and its source.
RULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # --- the token (TXN 10, 13.1, 13.2; RFC 7515, 7519)
        "txn.format": "exactly one compact JWS: three base64url parts without padding or "
        "whitespace, JSON-object header and claims, unique member names (TXN 13.1 'exactly "
        "one Txn-Token'; RFC 7515 sections 3.1, 5.2; RFC 7519 section 7.2)",
        "txn.typ": "`typ` present and equal to txntoken+jwt, case-insensitive, optionally "
        "with the application/ prefix (TXN 10.1; RFC 7515 section 4.1.9; RFC 8725 3.11)",
        "txn.alg": "`alg` an asymmetric JWS algorithm, never none or HS* (TXN 10; RFC 7518 "
        "section 3.1; RFC 8725 section 3.1)",
        "txn.crit": "no `crit` header parameter: this checker understands no JWS extension "
        "(RFC 7515 section 4.1.11)",
        "txn.kid": "`kid`, when present, a string naming a key of the TTS's JWKS (TXN 10.1; "
        "RFC 7515 section 4.1.4)",
        "txn.key": "a verification key fit for `alg` exists: kty/crv match, `use` sig, "
        "`key_ops` verify, `alg` equal, RSA of 2048 bits or more (RFC 7517 section 4; RFC "
        "7518 sections 3.3, 3.4, 6)",
        "txn.signature": "the JWS signature verifies (TXN 13.2; RFC 7515 section 5.2)",
        "txn.iat": "`iat` REQUIRED, a NumericDate, not after `now` (TXN 10.2, 12.3; RFC 7519 "
        "section 4.1.6)",
        "txn.exp": "`exp` REQUIRED, a NumericDate (TXN 10.2; RFC 7519 section 4.1.4)",
        "txn.expired": "`now` before `exp` (TXN 13.2 'Verify the Txn-Token is not expired')",
        "txn.nbf": "`nbf`, when present, a NumericDate not after `now` (RFC 7519 4.1.5)",
        "txn.lifetime": "`exp` after `iat` and `exp - iat` at most max_lifetime: minutes or "
        "less (TXN 7, 14.1)",
        "txn.aud": "`aud` REQUIRED, a string or non-empty array of strings identifying "
        "the trust domain (TXN 10.2, 13.2; RFC 7519 section 4.1.3)",
        "txn.txn": "`txn` REQUIRED, a non-empty string (TXN 10.2; RFC 8417 section 2.2)",
        "txn.sub": "`sub` REQUIRED, a non-empty string (TXN 10.2; RFC 7519 section 4.1.2)",
        "txn.scope": "`scope` REQUIRED, a string of space-delimited scope tokens (TXN 10.2, "
        "10.2.1; RFC 8693 section 4.2; RFC 6749 section 3.3)",
        "txn.req_wl": "`req_wl` REQUIRED, one non-empty string naming one workload, not the "
        "legacy array or comma-joined list (TXN 10.2)",
        "txn.tctx": "`tctx`, when present, a JSON object (TXN 10.2, 10.2.3)",
        "txn.rctx": "`rctx`, when present, a JSON object (TXN 10.2, 10.2.2)",
        "txn.iss": "`iss`, when present, a string (TXN 10.2; RFC 7519 section 4.1.1)",
        "txn.act": "`act`, when present, a JSON object of identity claims (no exp, nbf, "
        "aud), nested `act` likewise (RFC 8693 section 4.1)",
        "txn.embedded_token": "no member named access_token, refresh_token, id_token, "
        "subject_token or actor_token anywhere in the claims (TXN 14.3, 14.4)",
        # --- issuance (TXN 12.3, 14.6, 14.14)
        "issue.sub": "`sub` is the subject the TTS was given (TXN 12.3; TXN 12.2.1, 12.2.2)",
        "issue.scope": "every `scope` value is within the subject token's grant, never "
        "wider (TXN 12.3, 14.6, 14.14)",
        "issue.req_wl": "`req_wl` is the workload that requested the token (TXN 10.2)",
        "issue.aud": "`aud` is or contains the TTS's trust domain (TXN 12.3)",
        # --- replacement (TXN 14.15; RFC 8693 section 4.1)
        "replace.txn_changed": "`txn` unchanged (TXN 14.15)",
        "replace.sub_changed": "`sub` unchanged (TXN 14.15)",
        "replace.aud_changed": "`aud` unchanged (TXN 14.15)",
        "replace.scope_wider": "`scope` never wider than the replaced token's (TXN 14.15 'MUST "
        "NOT enable modification to asserted values that expand the scope')",
        "replace.original_expired": "the replaced token was not expired when the "
        "replacement was issued (TXN 14.15)",
        "replace.req_wl_changed": "`req_wl` keeps the replaced token's requester, the "
        "origin of the Call Chain (TXN 14.15 'MUST maintain the Call Chain'; this profile)",
        "replace.act_missing": "the replacement carries an `act` object naming the "
        "requester of the replacement (TXN 14.15; RFC 8693 section 4.1; this profile)",
        "replace.act_requester": "the outermost `act.sub` is the replacement's requester "
        "(RFC 8693 section 4.1 'the outermost act claim represents the current actor')",
        "replace.act_chain": "the replaced token's `act` (if any) is nested unchanged "
        "inside the new outermost `act`, and nothing else is (RFC 8693 section 4.1; TXN "
        "14.15 'MUST maintain the Call Chain')",
        "replace.exp_extended": "`exp` not beyond the replaced token's `exp` plus the "
        "allowed extension (TXN 14.15 'SHOULD limit' lifetime extensions)",
        # --- the token-exchange response (TXN 12.4; RFC 8693 section 2.2.1; RFC 6749 5.1)
        "response.status": "HTTP 200 (RFC 6749 section 5.1)",
        "response.content_type": "Content-Type application/json (RFC 6749 section 5.1)",
        "response.cache_control": "Cache-Control with no-store (RFC 6749 section 5.1; TXN "
        "12.4 example)",
        "response.json": "the body is one UTF-8 JSON object with unique member names "
        "(RFC 6749 section 5.1; RFC 8259)",
        "response.token_type": "`token_type` N_A (TXN 12.4; RFC 8693 section 2.2.1; case-"
        "insensitive per RFC 6749 section 5.1)",
        "response.issued_token_type": "`issued_token_type` "
        "urn:ietf:params:oauth:token-type:txn_token (TXN 12.4; RFC 8693 section 2.2.1)",
        "response.access_token": "`access_token` a string holding the Txn-Token, a compact "
        "JWS (TXN 12.4; RFC 8693 section 2.2.1)",
        "response.refresh_token": "no `refresh_token` (TXN 12.4, 14.3)",
        "response.expires_in": "`expires_in`, when present, a non-negative integer "
        "(RFC 8693 section 2.2.1; RFC 6749 section 5.1)",
        "response.scope": "`scope`, when present, a scope string (RFC 8693 section 2.2.1; "
        "RFC 6749 section 3.3)",
        # --- the token-exchange error response (TXN 12.4; RFC 6749 5.2; RFC 8693 2.2.2)
        "error.status": "HTTP 400, or 401 for invalid_client (RFC 6749 section 5.2)",
        "error.www_authenticate": "a 401 carries WWW-Authenticate (RFC 6749 section 5.2; "
        "RFC 9110 section 15.5.2)",
        "error.content_type": "Content-Type application/json (RFC 6749 section 5.2)",
        "error.cache_control": "Cache-Control with no-store (RFC 6749 section 5.1, whose "
        "rules section 5.2 keeps; the error carries request-specific detail)",
        "error.json": "the body is one UTF-8 JSON object with unique member names "
        "(RFC 6749 section 5.2; RFC 8259)",
        "error.code": "`error` a string from the registered set (RFC 6749 section 5.2; "
        "RFC 8693 section 2.2.2)",
        "error.expected": "`error` is the code the test expected",
        "error.description": "`error_description`, when present, a string of %x20-21 / "
        "%x23-5B / %x5D-7E (RFC 6749 section 5.2)",
        "error.uri": "`error_uri`, when present, a URI-reference string of %x21 / %x23-5B / "
        "%x5D-7E (RFC 6749 section 5.2)",
        "error.token": "an error response carries no access_token or refresh_token (this "
        "checker's rule: RFC 6749 section 5.2 defines no such members for errors)",
    }
)


class TxnCheckFailed(Exception):
    """A Txn-Token, an issuance or an exchange response failed a rule.

    ``rule`` names it (a key of :data:`RULES`); ``detail`` says what was seen.
    """

    def __init__(self, rule: str, detail: str = "") -> None:
        if rule not in RULES:  # pragma: no cover - guards this module's own consistency
            raise ValueError(f"unknown rule {rule!r}")
        super().__init__(f"{rule}: {detail}" if detail else rule)
        self.rule = rule
        self.detail = detail


# --------------------------------------------------------------------------------------
# Encodings and JSON


_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")

# RFC 6749 section 3.3: scope = scope-token *( SP scope-token ),
# scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN: Final = r"[\x21\x23-\x5B\x5D-\x7E]+"
_SCOPE_RE: Final = re.compile(rf"{_SCOPE_TOKEN}(?: {_SCOPE_TOKEN})*")
# RFC 6749 section 5.2: error_description and error_uri character sets.
_ERROR_DESCRIPTION_RE: Final = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]*")
_ERROR_URI_RE: Final = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]*")

_EMBEDDED_TOKEN_NAMES: Final = frozenset(
    {"access_token", "refresh_token", "id_token", "subject_token", "actor_token"}
)
_ACT_NON_IDENTITY: Final = frozenset({"exp", "nbf", "aud"})


def _b64url_decode(text: str) -> bytes:
    """base64url without padding (RFC 7515 section 2); raises ValueError otherwise."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


def _json_object(data: bytes) -> dict[str, Any]:
    """Strict JSON object: UTF-8, unique member names, no NaN/Infinity (RFC 8259)."""
    parsed = json.loads(
        data.decode("utf-8"),
        object_pairs_hook=_reject_duplicates,
        parse_constant=_reject_constant,
    )
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


def _numeric_date(value: object) -> float | None:
    """A JWT NumericDate (RFC 7519 section 2): a finite JSON number, never a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _is_scope(value: object) -> bool:
    return isinstance(value, str) and _SCOPE_RE.fullmatch(value) is not None


def _scope_set(value: object) -> frozenset[str]:
    """The scope values of a checked ``scope`` string (RFC 6749 section 3.3)."""
    return frozenset(value.split(" ")) if isinstance(value, str) else frozenset()


def _audiences(value: object) -> frozenset[str] | None:
    """``aud`` as a set: a string or a non-empty array of strings (RFC 7519 4.1.3)."""
    if isinstance(value, str):
        return frozenset({value}) if value else None
    if isinstance(value, list) and value and all(isinstance(a, str) and a for a in value):
        return frozenset(value)
    return None


# --------------------------------------------------------------------------------------
# Keys and signatures (RFC 7517, RFC 7518, RFC 8037, RFC 9864)

_PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | Ed25519PublicKey | Ed448PublicKey

_EC_ALGS: Final[Mapping[str, tuple[str, ec.EllipticCurve, hashes.HashAlgorithm, int]]] = (
    MappingProxyType(
        {
            # alg: (crv, curve, hash, coordinate octets) -- RFC 7518 section 3.4
            "ES256": ("P-256", ec.SECP256R1(), hashes.SHA256(), 32),
            "ES384": ("P-384", ec.SECP384R1(), hashes.SHA384(), 48),
            "ES512": ("P-521", ec.SECP521R1(), hashes.SHA512(), 66),
        }
    )
)
_RSA_HASHES: Final[Mapping[str, hashes.HashAlgorithm]] = MappingProxyType(
    {
        "256": hashes.SHA256(),
        "384": hashes.SHA384(),
        "512": hashes.SHA512(),
    }
)
_OKP_CURVES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "EdDSA": frozenset({"Ed25519", "Ed448"}),  # RFC 8037 section 3.1
        "Ed25519": frozenset({"Ed25519"}),  # RFC 9864, fully specified
        "Ed448": frozenset({"Ed448"}),  # RFC 9864, fully specified
    }
)


def _jwk_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"JWK member {name!r} missing")
    return _b64url_decode(value)


def _public_key(jwk: Mapping[str, Any], alg: str) -> _PublicKey:
    """The public key of ``jwk`` usable with ``alg``; ValueError when it is not."""
    if jwk.get("use", "sig") != "sig":
        raise ValueError("JWK `use` is not sig")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise ValueError("JWK `key_ops` lacks verify")
    if "alg" in jwk and jwk["alg"] != alg:
        raise ValueError(f"JWK `alg` is {jwk['alg']!r}, not {alg!r}")
    kty = jwk.get("kty")
    if alg in _EC_ALGS:
        crv, curve, _, size = _EC_ALGS[alg]
        if kty != "EC" or jwk.get("crv") != crv:
            raise ValueError(f"{alg} needs an EC {crv} key")
        x, y = _jwk_bytes(jwk, "x"), _jwk_bytes(jwk, "y")
        if len(x) != size or len(y) != size:  # RFC 7518 section 6.2.1.2
            raise ValueError("EC coordinates are not the full size")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        )
        return numbers.public_key()
    if alg[:2] in {"RS", "PS"} and alg[2:] in _RSA_HASHES:
        if kty != "RSA":
            raise ValueError(f"{alg} needs an RSA key")
        n = int.from_bytes(_jwk_bytes(jwk, "n"), "big")
        e = int.from_bytes(_jwk_bytes(jwk, "e"), "big")
        if n.bit_length() < 2048:  # RFC 7518 sections 3.3, 3.5
            raise ValueError("RSA key shorter than 2048 bits")
        return rsa.RSAPublicNumbers(e, n).public_key()
    if alg in _OKP_CURVES:
        okp_crv = jwk.get("crv")
        if kty != "OKP" or okp_crv not in _OKP_CURVES[alg]:
            raise ValueError(f"{alg} needs an OKP key on {sorted(_OKP_CURVES[alg])}")
        raw = _jwk_bytes(jwk, "x")
        if okp_crv == "Ed25519":
            return Ed25519PublicKey.from_public_bytes(raw)
        return Ed448PublicKey.from_public_bytes(raw)
    raise ValueError(f"unsupported alg {alg!r}")  # pragma: no cover - filtered earlier


def _signature_valid(alg: str, key: _PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            _, _, hash_alg, size = _EC_ALGS[alg]
            if len(signature) != 2 * size:  # RFC 7518 section 3.4: R || S, fixed size
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hash_alg))
        elif isinstance(key, rsa.RSAPublicKey):
            hash_alg = _RSA_HASHES[alg[2:]]
            if alg.startswith("PS"):  # RFC 7518 section 3.5: MGF1 same hash, salt = hash
                pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
                key.verify(signature, message, pss, hash_alg)
            else:
                key.verify(signature, message, padding.PKCS1v15(), hash_alg)
        else:
            key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _candidate_keys(jwks: Mapping[str, Any], kid: str | None, alg: str) -> list[_PublicKey]:
    """The keys of ``jwks`` (a JWK Set, or one JWK) that ``kid`` and ``alg`` select."""
    raw_keys: object = jwks.get("keys") if "keys" in jwks else [jwks]
    if not isinstance(raw_keys, list):
        raise TxnCheckFailed("txn.key", "the JWK Set's `keys` is not an array")
    jwk_list = [k for k in raw_keys if isinstance(k, Mapping)]
    if kid is not None:
        jwk_list = [k for k in jwk_list if k.get("kid") == kid]
        if not jwk_list:
            raise TxnCheckFailed("txn.kid", f"no key with kid {kid!r} in the JWK Set")
    keys: list[_PublicKey] = []
    reasons: list[str] = []
    for jwk in jwk_list:
        try:
            keys.append(_public_key(jwk, alg))
        except ValueError as exc:
            reasons.append(str(exc))
    if not keys:
        raise TxnCheckFailed("txn.key", f"no key usable with {alg}: {reasons or 'no keys'}")
    return keys


def _typ_is_txntoken(typ: object) -> bool:
    """RFC 7515 section 4.1.9: media types compare case-insensitively, and a value
    without '/' means "application/" + value."""
    if not isinstance(typ, str):
        return False
    media_type = typ.lower()
    if "/" not in media_type:
        media_type = "application/" + media_type
    return media_type == "application/txntoken+jwt"


def _check_act(act: object, path: str) -> None:
    """RFC 8693 section 4.1: a JSON object of claims identifying the actor; nested
    ``act`` objects are prior actors; exp, nbf and aud are not used inside it."""
    if not isinstance(act, dict):
        raise TxnCheckFailed("txn.act", f"{path} is not a JSON object")
    if not act:
        raise TxnCheckFailed("txn.act", f"{path} identifies no actor")
    misplaced = sorted(_ACT_NON_IDENTITY & act.keys())
    if misplaced:
        raise TxnCheckFailed("txn.act", f"{path} carries non-identity claims {misplaced}")
    if "sub" in act and not (isinstance(act["sub"], str) and act["sub"]):
        raise TxnCheckFailed("txn.act", f"{path}.sub is not a non-empty string")
    if "act" in act:
        _check_act(act["act"], f"{path}.act")


def _embedded_token_names(value: object, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for name, member in value.items():
            here = f"{path}.{name}"
            if name in _EMBEDDED_TOKEN_NAMES:
                found.append(here)
            found.extend(_embedded_token_names(member, here))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_embedded_token_names(item, f"{path}[{index}]"))
    return found


# --------------------------------------------------------------------------------------
# The token


def _decode(token: object) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of one compact JWS (RFC 7515 7.1)."""
    if not isinstance(token, str):
        raise TxnCheckFailed("txn.format", "the token is not a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise TxnCheckFailed(
            "txn.format", f"{len(parts)} dot-separated parts, not the 3 of a compact JWS"
        )
    try:
        header_bytes, claims_bytes, signature = (_b64url_decode(p) for p in parts)
        header = _json_object(header_bytes)
        claims = _json_object(claims_bytes)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TxnCheckFailed("txn.format", str(exc)) from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return header, claims, signing_input, signature


def check_txn_token(
    token: str,
    jwks: Mapping[str, Any],
    *,
    now: float,
    trust_domain: str,
    max_lifetime: float = 600,
) -> dict[str, Any]:
    """Validate one Txn-Token as a workload of ``trust_domain`` would; return its claims.

    Checks, in order (each names its rule):

    * the token is exactly one compact JWS (TXN 13.1 "The value of this header MUST be
      exactly one Txn-Token"; RFC 7515 section 7.1) -- ``txn.format``;
    * the JOSE header: ``typ`` is ``txntoken+jwt`` (TXN 10.1 "MUST be present and MUST
      have the value"; compared as a media type, RFC 7515 section 4.1.9) -- ``txn.typ``;
      ``alg`` asymmetric -- ``txn.alg``; no ``crit`` -- ``txn.crit``; ``kid`` (TXN 10.1
      "SHOULD be supported") selects the key when present -- ``txn.kid``, ``txn.key``;
    * the signature (TXN 13.2 "Validate the Txn-Token JWS signature") --
      ``txn.signature``;
    * the claims of TXN 10.2: ``iat``, ``aud``, ``exp``, ``txn``, ``sub``, ``scope``,
      ``req_wl`` REQUIRED and well typed; ``tctx``/``rctx`` JSON objects when present;
      ``iss`` a string when present; ``act`` an RFC 8693 section 4.1 object when present;
    * ``aud`` identifies ``trust_domain`` (TXN 10.2 "MUST NOT be accepted outside the
      Trust Domain identified by the aud claim"; TXN 13.2) -- ``txn.aud``;
    * ``iat <= now < exp`` (TXN 13.2 "not expired"; RFC 7519 section 4.1.4: on or after
      ``exp`` it MUST NOT be accepted) -- ``txn.iat``, ``txn.expired``; ``nbf`` honoured
      when present -- ``txn.nbf``;
    * ``0 < exp - iat <= max_lifetime`` (TXN 7: "on the order of minutes or less"; the
      600-second default is this project's reading) -- ``txn.lifetime``;
    * no embedded credential (TXN 14.4 "MUST NOT contain the access token presented to
      the external endpoint"; TXN 14.3 no refresh tokens) -- ``txn.embedded_token``.

    ``jwks`` is the TTS's JWK Set (``{"keys": [...]}``) or a single JWK. Without ``kid``
    every key fit for ``alg`` is tried. ``req_wl`` must be one identifier: the -06 array
    and the -08 comma-joined list are refused (TXN 10.2 "A string value that identifies
    the workload", singular), which also refuses a workload identifier containing a
    comma -- none of the identifier forms the draft shows has one.
    """
    header, claims, signing_input, signature = _decode(token)

    if "typ" not in header or not _typ_is_txntoken(header["typ"]):
        raise TxnCheckFailed("txn.typ", f"typ is {header.get('typ')!r}, not txntoken+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGS:
        raise TxnCheckFailed("txn.alg", f"alg {alg!r} is not an accepted asymmetric algorithm")
    if "crit" in header:
        raise TxnCheckFailed("txn.crit", f"crit {header['crit']!r} is not understood")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TxnCheckFailed("txn.kid", "kid is not a string")
    keys = _candidate_keys(jwks, kid, alg)
    if not any(_signature_valid(alg, key, signing_input, signature) for key in keys):
        raise TxnCheckFailed("txn.signature", "no selected key verifies the signature")

    # Presence and types (TXN 10.2).
    iat = _numeric_date(claims.get("iat"))
    if iat is None:
        raise TxnCheckFailed("txn.iat", f"iat is {claims.get('iat')!r}, not a NumericDate")
    exp = _numeric_date(claims.get("exp"))
    if exp is None:
        raise TxnCheckFailed("txn.exp", f"exp is {claims.get('exp')!r}, not a NumericDate")
    audiences = _audiences(claims.get("aud"))
    if audiences is None:
        raise TxnCheckFailed(
            "txn.aud", f"aud is {claims.get('aud')!r}, not a string or array of strings"
        )
    for name in ("txn", "sub"):
        value = claims.get(name)
        if not isinstance(value, str) or not value:
            raise TxnCheckFailed(f"txn.{name}", f"{name} is {value!r}, not a non-empty string")
    if not _is_scope(claims.get("scope")):
        raise TxnCheckFailed(
            "txn.scope", f"scope is {claims.get('scope')!r}, not space-delimited scope tokens"
        )
    req_wl = claims.get("req_wl")
    if not isinstance(req_wl, str) or not req_wl.strip():
        raise TxnCheckFailed("txn.req_wl", f"req_wl is {req_wl!r}, not a non-empty string")
    if "," in req_wl:
        raise TxnCheckFailed("txn.req_wl", f"req_wl {req_wl!r} is a comma-joined list (-08)")
    for name in ("tctx", "rctx"):
        if name in claims and not isinstance(claims[name], dict):
            raise TxnCheckFailed(f"txn.{name}", f"{name} is not a JSON object")
    if "iss" in claims and not isinstance(claims["iss"], str):
        raise TxnCheckFailed("txn.iss", "iss is not a string")
    if "act" in claims:
        _check_act(claims["act"], "act")
    embedded = _embedded_token_names(claims, "claims")
    if embedded:
        raise TxnCheckFailed("txn.embedded_token", f"credential members at {embedded}")

    # The trust domain and the clock (TXN 13.2, 7).
    if trust_domain not in audiences:
        raise TxnCheckFailed("txn.aud", f"aud {sorted(audiences)} lacks {trust_domain!r}")
    if iat > now:
        raise TxnCheckFailed("txn.iat", f"iat {iat} is after now {now}")
    if "nbf" in claims:
        nbf = _numeric_date(claims["nbf"])
        if nbf is None or nbf > now:
            raise TxnCheckFailed("txn.nbf", f"nbf {claims['nbf']!r} is not before now {now}")
    if now >= exp:
        raise TxnCheckFailed("txn.expired", f"exp {exp} is not after now {now}")
    if exp <= iat or exp - iat > max_lifetime:
        raise TxnCheckFailed(
            "txn.lifetime", f"exp - iat = {exp - iat}s, not in (0, {max_lifetime}]"
        )
    return claims


# --------------------------------------------------------------------------------------
# Issuance and replacement


def check_issued_from(
    claims: Mapping[str, Any],
    *,
    subject: str,
    granted_scope: Iterable[str],
    requesting_workload: str,
    trust_domain: str,
) -> None:
    """The claims of a token the TTS issued match the request it answered.

    * ``sub`` is ``subject``: the TTS "SHALL use" the subject token's ``sub`` (TXN 12.2.1,
      12.2.2) and determines ``sub`` from the subject token (TXN 12.3) -- ``issue.sub``;
    * every ``scope`` value is in ``granted_scope``: "The TTS MUST ensure that the
      requested scope of the Txn-Token is equal or less than the scope(s) associated with
      the original subject_token" (TXN 14.6, 14.14) -- ``issue.scope``;
    * ``req_wl`` is the authenticated requester (TXN 10.2 "identifies the workload that
      requested the Txn-Token") -- ``issue.req_wl``;
    * ``aud`` is or contains ``trust_domain`` (TXN 12.3 "MUST set the aud claim to an
      identifier representing the Trust Domain of the TTS") -- ``issue.aud``.

    ``granted_scope`` is the subject token's grant as scope values; a single string is
    read as a space-delimited scope string (RFC 6749 section 3.3), not as characters.
    """
    if claims.get("sub") != subject:
        raise TxnCheckFailed("issue.sub", f"sub {claims.get('sub')!r} is not {subject!r}")
    scope = claims.get("scope")
    if not _is_scope(scope):
        raise TxnCheckFailed("issue.scope", f"scope {scope!r} is not a scope string")
    granted = (
        frozenset(granted_scope.split())
        if isinstance(granted_scope, str)
        else frozenset(granted_scope)
    )
    wider = sorted(_scope_set(scope) - granted)
    if wider:
        raise TxnCheckFailed("issue.scope", f"scope values {wider} exceed the grant")
    if claims.get("req_wl") != requesting_workload:
        raise TxnCheckFailed(
            "issue.req_wl", f"req_wl {claims.get('req_wl')!r} is not {requesting_workload!r}"
        )
    audiences = _audiences(claims.get("aud"))
    if audiences is None or trust_domain not in audiences:
        raise TxnCheckFailed("issue.aud", f"aud {claims.get('aud')!r} lacks {trust_domain!r}")


def check_replacement(
    original: Mapping[str, Any],
    replacement: Mapping[str, Any],
    *,
    requester: str,
    now: float,
    max_extension: float | None = None,
) -> None:
    """A replacement Txn-Token (issued for a Txn-Token ``subject_token``) keeps the rules
    of TXN 14.15 "Txn-Token as a subject_token".

    Both claim sets are expected to have passed :func:`check_txn_token`; ``now`` is the
    time the replacement was issued, ``requester`` the workload that asked for it.

    From the draft: ``txn``, ``sub`` and ``aud`` unchanged ("MUST NOT modify") --
    ``replace.txn_changed``, ``replace.sub_changed``, ``replace.aud_changed`` (``aud``
    compared as a set of values, so ``"td"`` and ``["td"]`` are the same); ``scope``
    never wider ("MUST NOT enable modification to asserted values that expand the scope
    of permitted actions") -- ``replace.scope_wider``; the original not expired at ``now``
    ("MUST NOT issue a new Txn-Token when the Txn-Token being replaced has expired") --
    ``replace.original_expired`` (an ``exp`` equal to ``now`` counts as expired, RFC 7519
    section 4.1.4); ``exp`` at most ``original exp + max_extension`` when
    a limit is given ("SHOULD limit" extensions) -- ``replace.exp_extended``.

    The draft requires the Call Chain of requesters to be maintained but leaves the
    mechanism "out of scope" (-10 dropped the -06 array and -08 comma forms of
    ``req_wl``). This checker holds the TTS to this project's profile, built from RFC
    8693 section 4.1: ``req_wl`` keeps the original requester, the origin of the chain
    (``replace.req_wl_changed``); the replacement's outermost ``act`` names the
    requester (``replace.act_missing``, ``replace.act_requester``), and nested in it is
    exactly the original's ``act`` when it had one, nothing when it had none
    (``replace.act_chain``) -- so no earlier requester is removed or obscured.
    """
    for name in ("txn", "sub"):
        if replacement.get(name) != original.get(name):
            raise TxnCheckFailed(
                f"replace.{name}_changed",
                f"{name} {replacement.get(name)!r} differs from {original.get(name)!r}",
            )
    original_aud = _audiences(original.get("aud"))
    if original_aud is None or _audiences(replacement.get("aud")) != original_aud:
        raise TxnCheckFailed(
            "replace.aud_changed",
            f"aud {replacement.get('aud')!r} differs from {original.get('aud')!r}",
        )
    new_scope = replacement.get("scope")
    wider = sorted(_scope_set(new_scope) - _scope_set(original.get("scope")))
    if wider or not _is_scope(new_scope):
        raise TxnCheckFailed(
            "replace.scope_wider", f"scope {new_scope!r} adds {wider} to the original's"
        )
    original_exp = _numeric_date(original.get("exp"))
    if original_exp is None or now >= original_exp:
        raise TxnCheckFailed(
            "replace.original_expired", f"the original expired at {original_exp}, now {now}"
        )
    if replacement.get("req_wl") != original.get("req_wl"):
        raise TxnCheckFailed(
            "replace.req_wl_changed",
            f"req_wl {replacement.get('req_wl')!r} is not the original's "
            f"{original.get('req_wl')!r}",
        )
    act = replacement.get("act")
    if not isinstance(act, Mapping):
        raise TxnCheckFailed("replace.act_missing", f"act is {act!r}, not an object")
    if act.get("sub") != requester:
        raise TxnCheckFailed(
            "replace.act_requester", f"act.sub {act.get('sub')!r} is not {requester!r}"
        )
    if ("act" in act, act.get("act")) != ("act" in original, original.get("act")):
        raise TxnCheckFailed(
            "replace.act_chain",
            f"nested act {act.get('act')!r} is not the original's act {original.get('act')!r}",
        )
    if max_extension is not None:
        if max_extension < 0:
            raise ValueError("max_extension must not be negative")
        new_exp = _numeric_date(replacement.get("exp"))
        if new_exp is None or new_exp > original_exp + max_extension:
            raise TxnCheckFailed(
                "replace.exp_extended",
                f"exp {replacement.get('exp')!r} beyond {original_exp} + {max_extension}",
            )


# --------------------------------------------------------------------------------------
# The token-exchange HTTP responses


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Field names compare case-insensitively (RFC 9110 section 5.1); repeated names
    combine with commas (RFC 9110 section 5.3)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _is_json_media_type(value: str | None) -> bool:
    if value is None:
        return False
    media_type, *params = (p.strip() for p in value.split(";"))
    if media_type.lower() != "application/json":
        return False
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() == "charset" and param_value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            return False
    return True


def _has_no_store(value: str | None) -> bool:
    """A ``no-store`` directive in Cache-Control (RFC 9111 sections 5.2, 5.2.2.5)."""
    if value is None:
        return False
    directives = {d.split("=", 1)[0].strip().lower() for d in value.split(",")}
    return "no-store" in directives


def check_exchange_response(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """A successful Txn-Token Response; returns the Txn-Token (``access_token``).

    TXN 12.4: ``token_type`` "MUST be set to N_A", ``access_token`` "MUST be the Txn-Token
    JWT", ``issued_token_type`` "MUST bet [sic] set to urn:ietf:params:oauth:token-type:txn_token",
    and the response "MUST NOT include the refresh_token value" (also TXN 14.3). RFC 8693
    section 2.2.1 and RFC 6749 section 5.1: status 200, an ``application/json`` object,
    ``Cache-Control: no-store``; ``expires_in`` (RECOMMENDED) a non-negative integer and
    ``scope`` a scope string when present. ``token_type`` compares case-insensitively
    (RFC 6749 section 5.1 "The value is case insensitive"). The returned token is only
    checked for its compact-JWS shape here; validate it with :func:`check_txn_token`.
    """
    if status != 200:
        raise TxnCheckFailed("response.status", f"status {status}, not 200")
    fields = _lower_headers(headers)
    if not _is_json_media_type(fields.get("content-type")):
        raise TxnCheckFailed(
            "response.content_type", f"Content-Type {fields.get('content-type')!r}"
        )
    if not _has_no_store(fields.get("cache-control")):
        raise TxnCheckFailed(
            "response.cache_control", f"Cache-Control {fields.get('cache-control')!r}"
        )
    try:
        payload = _json_object(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TxnCheckFailed("response.json", str(exc)) from None
    token_type = payload.get("token_type")
    if not isinstance(token_type, str) or token_type.upper() != "N_A":
        raise TxnCheckFailed("response.token_type", f"token_type {token_type!r}, not N_A")
    if payload.get("issued_token_type") != ISSUED_TOKEN_TYPE:
        raise TxnCheckFailed(
            "response.issued_token_type",
            f"issued_token_type {payload.get('issued_token_type')!r}",
        )
    if "refresh_token" in payload:
        raise TxnCheckFailed("response.refresh_token", "a refresh_token was issued")
    access_token = payload.get("access_token")
    if not isinstance(access_token, str):
        raise TxnCheckFailed("response.access_token", f"access_token {access_token!r}")
    parts = access_token.split(".")
    # Header and payload are never empty; an empty signature is left to check_txn_token.
    if len(parts) != 3 or not all(
        _B64URL_RE.fullmatch(p) and (p or i == 2) for i, p in enumerate(parts)
    ):
        raise TxnCheckFailed("response.access_token", "access_token is not a compact JWS")
    if "expires_in" in payload:
        expires_in = payload["expires_in"]
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 0:
            raise TxnCheckFailed("response.expires_in", f"expires_in {expires_in!r}")
    if "scope" in payload and not _is_scope(payload["scope"]):
        raise TxnCheckFailed("response.scope", f"scope {payload['scope']!r}")
    return access_token


def check_exchange_error(
    status: int, headers: Mapping[str, str], body: bytes, expected_error: str
) -> None:
    """An error answer of the TTS: "as described in Section 5.2 of RFC 6749" (TXN 12.4).

    RFC 6749 section 5.2: status 400 "unless specified otherwise" -- 401 is allowed for
    ``invalid_client`` and then carries ``WWW-Authenticate`` (RFC 6749 section 5.2, RFC
    9110 section 11.6.1); an ``application/json`` object whose ``error`` is one of the
    registered codes (plus RFC 8693 section 2.2.2's ``invalid_target``) and equals
    ``expected_error``; ``error_description`` and ``error_uri``, when present, strings
    of the section's character sets. ``Cache-Control: no-store`` is required as for the
    successful response (RFC 6749 section 5.1; the section 5.2 example sends it), and
    the error carries no token.
    """
    if expected_error not in REGISTERED_ERRORS:
        raise ValueError(f"{expected_error!r} is not a registered error code")
    if status not in {400, 401}:
        raise TxnCheckFailed("error.status", f"status {status}, not 400 (or 401)")
    fields = _lower_headers(headers)
    if not _is_json_media_type(fields.get("content-type")):
        raise TxnCheckFailed("error.content_type", f"Content-Type {fields.get('content-type')!r}")
    if not _has_no_store(fields.get("cache-control")):
        raise TxnCheckFailed(
            "error.cache_control", f"Cache-Control {fields.get('cache-control')!r}"
        )
    try:
        payload = _json_object(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TxnCheckFailed("error.json", str(exc)) from None
    error = payload.get("error")
    if not isinstance(error, str) or error not in REGISTERED_ERRORS:
        raise TxnCheckFailed("error.code", f"error {error!r} is not a registered code")
    if error != expected_error:
        raise TxnCheckFailed("error.expected", f"error {error!r}, expected {expected_error!r}")
    if status == 401 and error != "invalid_client":
        raise TxnCheckFailed("error.status", f"status 401 for {error}, not invalid_client")
    if status == 401 and not fields.get("www-authenticate", "").strip():
        raise TxnCheckFailed("error.www_authenticate", "401 without WWW-Authenticate")
    if "error_description" in payload:
        description = payload["error_description"]
        if not isinstance(description, str) or not _ERROR_DESCRIPTION_RE.fullmatch(description):
            raise TxnCheckFailed("error.description", f"error_description {description!r}")
    if "error_uri" in payload:
        uri = payload["error_uri"]
        if not isinstance(uri, str) or not _ERROR_URI_RE.fullmatch(uri):
            raise TxnCheckFailed("error.uri", f"error_uri {uri!r}")
    leaked = sorted({"access_token", "refresh_token"} & payload.keys())
    if leaked:
        raise TxnCheckFailed("error.token", f"the error response carries {leaked}")
