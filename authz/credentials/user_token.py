"""End-user token verification: RFC 9068 JWT access tokens, and OIDC ID tokens when enabled.

The token rides in a configured header and reaches this verifier only after its binding to
the request was checked (WPT `oth`); see `credentials/context.py`. Order, each step with its
own reason code: one compact JWS → `typ` (`at+jwt`; ID tokens, which carry no such type,
only with `id_tokens`) → the issuer named by `iss` must be configured → `alg` on that
issuer's allow-list → signature with its keys → `aud` names one of its configured
audiences → `exp` (required), lifetime, `iat`, `nbf` → required claims (RFC 9068 section
2.2: `sub`, `client_id`, `iat`, `jti`; ID tokens: `sub`, `iat`) → claim types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from authz.clock import Clock
from authz.credentials.claims import LifetimeReasons, check_lifetime, scope_values
from authz.credentials.jose import JoseReasons, parse_compact_jws, typ_matches
from authz.credentials.signature import (
    SignatureReasons,
    SigningKey,
    verify_refreshing,
    verify_signature,
)
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import KeyHolder

ACCESS_TOKEN_TYP = "at+jwt"

_JOSE_REASONS = JoseReasons.for_token("user")
_SIGNATURE_REASONS = SignatureReasons.for_token("user")
_LIFETIME_REASONS = LifetimeReasons.for_token("user")
_REQUIRED = {
    "access_token": ("sub", "client_id", "iat", "jti"),
    "id_token": ("sub", "iat"),
}
# RFC 9068 section 2.2.3.1 (from SCIM): authorization attributes as lists of strings.
_LIST_CLAIMS = ("roles", "groups", "entitlements")


class UserTokenType(StrEnum):
    ACCESS_TOKEN = "access_token"
    ID_TOKEN = "id_token"


@dataclass(frozen=True, slots=True)
class UserIssuer:
    key_set: KeyHolder
    audiences: frozenset[str]


@dataclass(frozen=True, slots=True)
class UserTokenRules:
    clock_skew: float
    max_lifetime: float
    id_tokens: bool


@dataclass(frozen=True, slots=True)
class VerifiedUserToken:
    type: UserTokenType
    issuer: str
    subject: str
    audiences: tuple[str, ...]
    client_id: str | None
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    entitlements: tuple[str, ...]
    issued_at: float
    expires_at: float
    claims: Mapping[str, Any]
    signing_key: SigningKey
    """The configured issuer key that verified it (for the deny-list)."""


class UserTokenVerifier:
    def __init__(
        self, issuers: Mapping[str, UserIssuer], rules: UserTokenRules, clock: Clock
    ) -> None:
        self._issuers = issuers
        self._rules = rules
        self._clock = clock

    async def verify_refreshing(self, token: str) -> VerifiedUserToken:
        """`verify`, refreshing a live issuer key set once when it lacks the token's `kid`."""
        return await verify_refreshing(lambda: self.verify(token))

    def verify(self, token: str) -> VerifiedUserToken:
        if "," in token:
            raise CredentialError(Reason.USER_MULTIPLE, "more than one user token header")
        jws = parse_compact_jws(token, _JOSE_REASONS)
        token_type = self._token_type(jws.header.get("typ"))
        claims = jws.claims
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None or not isinstance(iss, str):
            raise CredentialError(Reason.USER_ISSUER_UNKNOWN, "'iss' is not a configured issuer")
        signer = verify_signature(jws, (issuer.key_set.current,), _SIGNATURE_REASONS)

        if "aud" not in claims:
            raise CredentialError(Reason.USER_CLAIM_MISSING, "'aud' is required")
        audiences = _strings(claims["aud"], "aud", allow_single=True)
        if not issuer.audiences.intersection(audiences):
            raise CredentialError(Reason.USER_AUD_MISMATCH, "'aud' names no configured audience")
        expires_at = check_lifetime(
            claims,
            now=self._clock(),
            clock_skew=self._rules.clock_skew,
            max_lifetime=self._rules.max_lifetime,
            reasons=_LIFETIME_REASONS,
        )
        for name in _REQUIRED[token_type]:
            if name not in claims:
                raise CredentialError(Reason.USER_CLAIM_MISSING, f"'{name}' is required")
        for name in ("sub", "client_id", "jti"):
            # Present means checked: a JSON null is not an absent claim.
            if name in claims and not (isinstance(claims[name], str) and claims[name]):
                raise CredentialError(Reason.USER_CLAIM_INVALID, f"'{name}' is not a string")
        scope = claims.get("scope", "")
        scopes = scope_values(scope) if isinstance(scope, str) else None
        if scopes is None:
            raise CredentialError(
                Reason.USER_CLAIM_INVALID, "'scope' is not space-separated scope values"
            )
        roles, groups, entitlements = (
            _strings(claims.get(name, []), name, allow_single=False) for name in _LIST_CLAIMS
        )
        return VerifiedUserToken(
            type=token_type,
            issuer=iss,
            subject=claims["sub"],
            audiences=audiences,
            client_id=claims.get("client_id"),
            scopes=scopes,
            roles=roles,
            groups=groups,
            entitlements=entitlements,
            issued_at=float(claims["iat"]),
            expires_at=expires_at,
            claims=claims,
            signing_key=signer.key,
        )

    def _token_type(self, typ: object) -> UserTokenType:
        if typ_matches(typ, ACCESS_TOKEN_TYP):
            return UserTokenType.ACCESS_TOKEN
        # OIDC ID tokens are typed `JWT` or not at all (OIDC Core section 2).
        if self._rules.id_tokens and (typ is None or typ_matches(typ, "jwt")):
            return UserTokenType.ID_TOKEN
        raise CredentialError(Reason.USER_TYP_INVALID, "JOSE 'typ' is not at+jwt")


def _strings(value: object, name: str, *, allow_single: bool) -> tuple[str, ...]:
    if allow_single and isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise CredentialError(Reason.USER_CLAIM_INVALID, f"'{name}' is not a list of strings")
