"""Building WITs, WPTs and context tokens byte by byte, so an attack can change one thing.

`Forge` starts from the same claims and JOSE headers `mint_wit`/`mint_wpt` produce for a
valid request (and from valid demo Txn-Tokens, user tokens and EARs) and lets a test
override, add or drop (`DROP`) any member, sign with any key (or an HMAC secret), or supply
raw header/claims bytes (duplicate members, arrays, NaN).
Nothing here is used by the gateway: it is an attacker's toolbox for the security tests.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz.answers import Denied, Verdict
from authz.credentials.claims import token_hash
from authz.devtools.keys import generate_private_jwk, private_key_from_jwk, public_jwk
from authz.devtools.stack import TRUST_DOMAIN, USER_TOKEN_AUDIENCE, USER_TOKEN_ISSUER
from tests.support import ORIGIN, GatewayHarness, expect_denied, header

WIT_HEADER = "workload-identity-token"
AUTHORIZATION = "authorization"
TARGET = ORIGIN + "/api/hello"


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()
"""A change value meaning "remove this member"."""

_jti_counter = itertools.count(1)


def fresh_jti() -> str:
    return f"attack-jti-{next(_jti_counter):06d}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def apply_changes(base: Mapping[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    result = dict(base)
    for name, value in (changes or {}).items():
        if value is DROP:
            result.pop(name, None)
        else:
            result[name] = value
    return result


Key = dict[str, Any] | bytes
"""A private JWK (sign with its key type) or bytes (an HMAC-SHA256 secret)."""


def sign(signing_input: bytes, key: Key) -> bytes:
    """Sign with the key's own primitive, whatever `alg` the JOSE header claims."""
    if isinstance(key, bytes):
        return hmac.new(key, signing_input, hashlib.sha256).digest()
    private = private_key_from_jwk(key)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input, private)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return OKPAlgorithm().sign(signing_input, private)
    raise AssertionError(f"no signer for {type(private).__name__}")


def compact(header: bytes, claims: bytes, key: Key | None) -> str:
    """A compact JWS over exactly these header and claims bytes (`key=None`: unsigned)."""
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    signature = b"" if key is None else sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64url(signature)}"


def public_pem(private_jwk: dict[str, Any]) -> bytes:
    return (
        private_key_from_jwk(private_jwk)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def public_jwk_json(private_jwk: dict[str, Any]) -> bytes:
    return json.dumps(public_jwk(private_jwk)).encode()


def self_signed_x5c(private_jwk: dict[str, Any]) -> list[str]:
    """An `x5c` chain: one self-signed certificate for an attacker's EC or Ed25519 key."""
    key = private_key_from_jwk(private_jwk)
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://demo.example/frontend")]
            ),
            critical=False,
        )
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    return [base64.b64encode(der).decode("ascii")]


def weak_rsa_jwk() -> dict[str, Any]:
    """A public 1024-bit RSA JWK for RS256 (too short to be accepted)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "alg": "RS256"}


_attacker_keys: dict[str, dict[str, Any]] = {}


def attacker_key(alg: str) -> dict[str, Any]:
    """A private key no trust anchor or WIT knows about (one per algorithm, reused)."""
    if alg not in _attacker_keys:
        _attacker_keys[alg] = generate_private_jwk(alg, kid=f"attacker-{alg}")
    return _attacker_keys[alg]


@dataclass
class Forge:
    """Valid-by-default WIT/WPT builders for one harness (its clock and demo keys)."""

    harness: GatewayHarness

    @property
    def now(self) -> int:
        return int(self.harness.clock.now)

    @property
    def issuer(self) -> dict[str, Any]:
        return self.harness.identities.issuer

    def workload_key(self, workload: str = "frontend") -> dict[str, Any]:
        return self.harness.identities.workloads[workload]

    # --- WIT ------------------------------------------------------------------------------
    def wit_header(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        base = {"alg": self.issuer["alg"], "typ": "wit+jwt", "kid": self.issuer["kid"]}
        return apply_changes(base, changes)

    def wit_claims(
        self, changes: Mapping[str, Any] | None = None, workload: str = "frontend"
    ) -> dict[str, Any]:
        confirmation = public_jwk(self.workload_key(workload))
        confirmation.pop("kid", None)
        base = {
            "sub": self.harness.identities.workload_id(workload),
            "iat": self.now,
            "exp": self.now + 3600,
            "jti": fresh_jti(),
            "cnf": {"jwk": confirmation},
        }
        return apply_changes(base, changes)

    def wit(
        self,
        *,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        key: Key | None = None,
        workload: str = "frontend",
        raw_header: bytes | None = None,
        raw_claims: bytes | None = None,
    ) -> str:
        header_bytes = raw_header or compact_json(self.wit_header(header))
        claims_bytes = raw_claims or compact_json(self.wit_claims(claims, workload))
        return compact(header_bytes, claims_bytes, self.issuer if key is None else key)

    # --- WPT ------------------------------------------------------------------------------
    def wpt_header(
        self, changes: Mapping[str, Any] | None = None, workload: str = "frontend"
    ) -> dict[str, Any]:
        base = {"alg": self.workload_key(workload)["alg"], "typ": "wpt+jwt"}
        return apply_changes(base, changes)

    def wpt_claims(
        self, wit: str, changes: Mapping[str, Any] | None = None, audience: str = TARGET
    ) -> dict[str, Any]:
        base = {"aud": audience, "exp": self.now + 60, "jti": fresh_jti(), "wth": token_hash(wit)}
        return apply_changes(base, changes)

    def wpt(
        self,
        wit: str,
        *,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        key: Key | None = None,
        workload: str = "frontend",
        audience: str = TARGET,
        raw_header: bytes | None = None,
        raw_claims: bytes | None = None,
    ) -> str:
        header_bytes = raw_header or compact_json(self.wpt_header(header, workload))
        claims_bytes = raw_claims or compact_json(self.wpt_claims(wit, claims, audience))
        signer = self.workload_key(workload) if key is None else key
        return compact(header_bytes, claims_bytes, signer)

    # --- context tokens: Txn-Token (demo TTS), user token (demo IdP), EAR (demo verifier) -
    def _signed(
        self,
        header: dict[str, Any],
        claims: dict[str, Any],
        signer: dict[str, Any],
        key: Key | None,
        raw_header: bytes | None,
        raw_claims: bytes | None,
    ) -> str:
        header_bytes = raw_header or compact_json(header)
        claims_bytes = raw_claims or compact_json(claims)
        return compact(header_bytes, claims_bytes, signer if key is None else key)

    def txn_header(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        tts = self.harness.identities.tts
        return apply_changes({"alg": tts["alg"], "typ": "txntoken+jwt", "kid": tts["kid"]}, changes)

    def txn_claims(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        base = {
            "iat": self.now,
            "aud": TRUST_DOMAIN,
            "exp": self.now + 300,
            "txn": f"txn-{fresh_jti()}",
            "sub": "user-4711",
            "scope": "checkout",
            "req_wl": self.harness.identities.workload_id("frontend"),
        }
        return apply_changes(base, changes)

    def txn_token(
        self,
        *,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        key: Key | None = None,
        raw_header: bytes | None = None,
        raw_claims: bytes | None = None,
    ) -> str:
        """A Txn-Token as the demo trust domain's TTS issues it, changed as asked."""
        return self._signed(
            self.txn_header(header),
            self.txn_claims(claims),
            self.harness.identities.tts,
            key,
            raw_header,
            raw_claims,
        )

    def user_header(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        idp = self.harness.identities.user_issuer
        return apply_changes({"alg": idp["alg"], "typ": "at+jwt", "kid": idp["kid"]}, changes)

    def user_claims(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        base = {
            "iss": USER_TOKEN_ISSUER,
            "sub": "alice",
            "aud": USER_TOKEN_AUDIENCE,
            "client_id": "demo-client",
            "iat": self.now,
            "exp": self.now + 600,
            "jti": fresh_jti(),
            "scope": "orders:read",
            "roles": ["customer"],
        }
        return apply_changes(base, changes)

    def user_token(
        self,
        *,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        key: Key | None = None,
        raw_header: bytes | None = None,
        raw_claims: bytes | None = None,
    ) -> str:
        """An RFC 9068 access token from the demo user-token issuer, changed as asked."""
        return self._signed(
            self.user_header(header),
            self.user_claims(claims),
            self.harness.identities.user_issuer,
            key,
            raw_header,
            raw_claims,
        )

    def ear_header(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        verifier = self.harness.identities.attestation_verifier
        return apply_changes(
            {"alg": verifier["alg"], "typ": "JWT", "kid": verifier["kid"]}, changes
        )

    def ear_claims(
        self,
        changes: Mapping[str, Any] | None = None,
        submods: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """EAR claims (current names) about the frontend; `submods` replaces the one
        affirming `CPU` appraisal."""
        base = {
            "eat_profile": "tag:ietf.org,2026:rats/ear#03",
            "sub": self.harness.identities.workload_id("frontend"),
            "iat": self.now,
            "ear_verifier_id": {"developer": "https://wimse-authz.invalid", "build": "dev"},
            "submods": dict(submods)
            if submods is not None
            else {
                "CPU": {
                    "ear_status": "affirming",
                    "ear_trustworthiness_vector": {"hardware": 2, "executables": 2},
                }
            },
        }
        return apply_changes(base, changes)

    def ear(
        self,
        *,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        submods: Mapping[str, Any] | None = None,
        key: Key | None = None,
    ) -> str:
        """An EAR JWT signed by the demo attestation verifier, changed as asked."""
        return self._signed(
            self.ear_header(header),
            self.ear_claims(claims, submods),
            self.harness.identities.attestation_verifier,
            key,
            None,
            None,
        )

    # --- whole requests -------------------------------------------------------------------
    def headers(
        self,
        *,
        wit: str | None = None,
        workload: str = "frontend",
        audience: str = TARGET,
        wpt_header: Mapping[str, Any] | None = None,
        wpt_claims: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """A valid request's credential headers; a forged `wit` gets a WPT that binds it."""
        wit = self.wit(workload=workload) if wit is None else wit
        wpt = self.wpt(
            wit, header=wpt_header, claims=wpt_claims, workload=workload, audience=audience
        )
        return {WIT_HEADER: wit, AUTHORIZATION: "WPT " + wpt}

    def bound_headers(
        self, txn: str | None = None, others: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """A valid request whose WPT binds and which sends a Txn-Token (`tth`) and other
        context headers (`oth`)."""
        claims: dict[str, Any] = {}
        headers: dict[str, str] = dict(others or {})
        if txn is not None:
            claims["tth"] = token_hash(txn)
            headers["txn-token"] = txn
        if others:
            claims["oth"] = {name: token_hash(value) for name, value in others.items()}
        return self.headers(wpt_claims=claims) | headers


def with_wpt(wit: str, wpt: str) -> dict[str, str]:
    return {WIT_HEADER: wit, AUTHORIZATION: "WPT " + wpt}


def key_bearing_header(name: str, key: dict[str, Any]) -> object:
    """A JOSE `jwk`/`x5c` carrying the attacker's own key, or a `jku`/`x5u` pointing at it."""
    if name == "jwk":
        return public_jwk(key)
    if name == "x5c":
        return self_signed_x5c(key)
    return f"https://attacker.example/{name}"


def write_policy(directory: Path, source: str) -> dict[str, str]:
    """A one-module policy directory; returns the `policy` configuration that loads it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.rego").write_text(source, encoding="utf-8")
    return {"directory": str(directory), "decision": "envoy/authz/decision"}


def expect_refused(verdict: Verdict, reason: str) -> Denied:
    """Denied as invalid WPT-presented credentials: 401 + `WWW-Authenticate: WPT`."""
    denied = expect_denied(verdict, reason, 401)
    assert header(denied, "www-authenticate") == "WPT"
    assert header(denied, "x-wimse-authz-reason") == reason
    return denied
