"""Transaction Token verification (draft-ietf-oauth-transaction-tokens-11; the wire format is
that of -10, which -11 only clarifies).

A Txn-Token is context, not a credential: it says on whose behalf and for what purpose a
transaction runs, as the trust domain's Transaction Token Service (TTS) asserted it at the
edge. It authenticates nobody; the caller is authenticated by its WIT/WPT or mTLS.

Order, each step with its own reason code: one compact JWS → `typ` `txntoken+jwt` → the TTS
anchors of the trust domain being called (configured, never from the token) → `alg` on that
TTS's allow-list → signature → `aud` names that trust domain → `exp`/`iat` (both required),
lifetime, `nbf` → required claims with their types → `act` nesting and `req_wl` list bounds.
There is deliberately no replay check on `txn`: every hop of one transaction presents the
same token.

Earlier drafts' names (`txn_token` typ, `purp`, `azd`, `req_ctx`, `sub_id`, list forms of
`req_wl`) are accepted only with `legacy_names`; without it a token that needs them is
refused with `txn.legacy_form_disabled`, so an old TTS is noticed rather than half-read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.clock import Clock
from authz.credentials.claims import LifetimeReasons, check_lifetime, scope_values, token_hash
from authz.credentials.identifiers import InvalidIdentifier, parse_workload_id
from authz.credentials.jose import JoseReasons, parse_compact_jws, typ_matches
from authz.credentials.signature import (
    SignatureReasons,
    SigningKey,
    verify_refreshing,
    verify_signature,
)
from authz.credentials.verified_cache import VerifiedCache
from authz.errors import CredentialError
from authz.reasons import Reason
from authz.trust.key_sets import KeyHolder, KeySet

TXN_TOKEN_TYP = "txntoken+jwt"
LEGACY_TXN_TOKEN_TYP = "txn_token"
MAX_CLAIM_STRING = 2048

_JOSE_REASONS = JoseReasons.for_token("txn")
_SIGNATURE_REASONS = SignatureReasons.for_token("txn")
_LIFETIME_REASONS = LifetimeReasons.for_token("txn")
# Current claim name → the name earlier drafts used for it.
_LEGACY_NAMES = {"scope": "purp", "tctx": "azd", "rctx": "req_ctx", "sub": "sub_id"}


@dataclass(frozen=True, slots=True)
class TxnRules:
    clock_skew: float
    max_lifetime: float
    legacy_names: bool
    max_chain_hops: int


@dataclass(frozen=True, slots=True)
class Actor:
    """One RFC 8693 `act` level: its `sub` and its other members (nested `act` removed)."""

    sub: str
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class VerifiedTxnToken:
    txn_id: str
    subject: str
    scopes: tuple[str, ...]
    tctx: Mapping[str, Any] | None
    rctx: Mapping[str, Any] | None
    requesting_workloads: tuple[str, ...]
    """`req_wl`, oldest first: one value, or with legacy list forms each earlier hop."""
    audiences: tuple[str, ...]
    trust_domain: str
    """The trust domain the token was verified for (one of `audiences`)."""
    issuer: str | None
    issued_at: float
    expires_at: float
    actors: tuple[Actor, ...]
    """Nested `act` claims, outermost (the current actor) first."""
    signing_key: SigningKey
    """The configured TTS key that verified it."""
    alg: str
    legacy: bool
    """Some claim was read under an earlier draft's name."""
    claims: Mapping[str, Any]
    token_hash: str


class TxnTokenVerifier:
    def __init__(
        self,
        services: Mapping[str, KeyHolder],
        rules: TxnRules,
        clock: Clock,
        cache_entries: int,
    ) -> None:
        """`services`: each trust domain's TTS key set, by trust domain name."""
        self._services = services
        self._rules = rules
        self._clock = clock
        # Every hop of a transaction presents the same token, and one gateway often
        # protects several of those hops: verify it once per trust domain (and again only
        # when that domain's TTS keys have changed since).
        self._cache: VerifiedCache[tuple[str, str], tuple[VerifiedTxnToken, KeySet]] = (
            VerifiedCache(cache_entries, clock, rules.clock_skew)
        )

    @property
    def rules(self) -> TxnRules:
        return self._rules

    def verify(self, token: str, trust_domain: str) -> VerifiedTxnToken:
        """Verify `token` for a request into `trust_domain`, or raise `CredentialError`."""
        entry = self._cache.get((token, trust_domain))
        if entry is not None:
            verified, key_set = entry
            holder = self._services.get(trust_domain)
            if holder is not None and holder.current is key_set:
                return verified
        verified, key_set = self._verify_uncached(token, trust_domain)
        self._cache.put((token, trust_domain), (verified, key_set), verified.expires_at)
        return verified

    async def verify_refreshing(self, token: str, trust_domain: str) -> VerifiedTxnToken:
        """`verify`, refreshing a live TTS key set once when it lacks the token's `kid`."""
        return await verify_refreshing(lambda: self.verify(token, trust_domain))

    def _verify_uncached(self, token: str, trust_domain: str) -> tuple[VerifiedTxnToken, KeySet]:
        if "," in token:
            raise CredentialError(Reason.TXN_MULTIPLE, "more than one Txn-Token header")
        jws = parse_compact_jws(token, _JOSE_REASONS)
        legacy = self._check_typ(jws.header.get("typ"))
        holder = self._services.get(trust_domain)
        if holder is None:
            raise CredentialError(
                Reason.TXN_TRUST_DOMAIN_UNKNOWN, f"no TTS anchors for {trust_domain!r}"
            )
        key_set = holder.current
        signer = verify_signature(jws, (key_set,), _SIGNATURE_REASONS)

        claims = jws.claims
        for name in ("aud", "iat"):
            if name not in claims:
                raise CredentialError(Reason.TXN_CLAIM_MISSING, f"'{name}' is required")
        audiences = _audiences(claims["aud"])
        if trust_domain not in audiences:
            raise CredentialError(Reason.TXN_AUD_MISMATCH, "'aud' does not name this trust domain")
        expires_at = check_lifetime(
            claims,
            now=self._clock(),
            clock_skew=self._rules.clock_skew,
            max_lifetime=self._rules.max_lifetime,
            reasons=_LIFETIME_REASONS,
        )
        reader = _ClaimReader(claims, self._rules.legacy_names)
        txn_id = reader.string("txn")
        subject = reader.string("sub")
        scopes = scope_values(reader.string("scope"))
        if scopes is None:
            raise CredentialError(
                Reason.TXN_CLAIM_INVALID, "'scope' is not space-separated scope values"
            )
        tctx = reader.optional_object("tctx")
        rctx = reader.optional_object("rctx")
        requesters = self._requesting_workloads(claims, rctx, reader)
        issuer = claims.get("iss")
        if issuer is not None and not isinstance(issuer, str):
            raise CredentialError(Reason.TXN_CLAIM_INVALID, "'iss' is not a string")
        verified = VerifiedTxnToken(
            txn_id=txn_id,
            subject=subject,
            scopes=scopes,
            tctx=tctx,
            rctx=rctx,
            requesting_workloads=requesters,
            audiences=audiences,
            trust_domain=trust_domain,
            issuer=issuer,
            issued_at=float(claims["iat"]),
            expires_at=expires_at,
            actors=self._actors(claims.get("act")),
            signing_key=signer.key,
            alg=jws.alg,
            legacy=legacy or reader.used_legacy,
            claims=claims,
            token_hash=token_hash(token),
        )
        return verified, key_set

    def _check_typ(self, typ: object) -> bool:
        """True when the token uses the legacy `typ` (allowed only with `legacy_names`)."""
        if typ_matches(typ, TXN_TOKEN_TYP):
            return False
        if typ_matches(typ, LEGACY_TXN_TOKEN_TYP):
            if not self._rules.legacy_names:
                raise CredentialError(
                    Reason.TXN_LEGACY_FORM_DISABLED, "typ txn_token is an earlier draft's"
                )
            return True
        raise CredentialError(Reason.TXN_TYP_INVALID, "JOSE 'typ' is not txntoken+jwt")

    def _requesting_workloads(
        self, claims: Mapping[str, Any], rctx: Mapping[str, Any] | None, reader: _ClaimReader
    ) -> tuple[str, ...]:
        legacy_list = rctx.get("req_wl") if rctx is not None else None
        if "req_wl" not in claims and legacy_list is not None:
            # draft -06: replacement tokens listed every requesting workload inside `rctx`.
            if not self._rules.legacy_names:
                raise CredentialError(
                    Reason.TXN_LEGACY_FORM_DISABLED, "'req_wl' inside 'rctx' is an earlier form"
                )
            reader.used_legacy = True
            if not isinstance(legacy_list, list) or not legacy_list:
                raise CredentialError(Reason.TXN_CLAIM_INVALID, "'rctx.req_wl' is not a list")
            hops = legacy_list
        else:
            value = reader.string("req_wl")
            if "," in value and not _is_workload_id(value):
                # draft -08: replacements appended hops, comma-joined. (A canonical wimse://
                # identifier may itself contain a comma: that is one hop.)
                if not self._rules.legacy_names:
                    raise CredentialError(
                        Reason.TXN_LEGACY_FORM_DISABLED, "comma-joined 'req_wl' is an earlier form"
                    )
                reader.used_legacy = True
                hops = [hop.strip() for hop in value.split(",")]
            else:
                hops = [value]
        if len(hops) > self._rules.max_chain_hops:
            raise CredentialError(Reason.TXN_CHAIN_TOO_LONG, "'req_wl' lists too many hops")
        if not all(_is_identifier_string(hop) for hop in hops):
            raise CredentialError(Reason.TXN_CLAIM_INVALID, "'req_wl' holds an invalid entry")
        return tuple(hops)

    def _actors(self, act: object) -> tuple[Actor, ...]:
        actors: list[Actor] = []
        while act is not None:
            if len(actors) == self._rules.max_chain_hops:
                raise CredentialError(Reason.TXN_ACT_TOO_DEEP, "'act' is nested too deeply")
            if not isinstance(act, dict) or not _is_identifier_string(act.get("sub")):
                raise CredentialError(Reason.TXN_CLAIM_INVALID, "'act' needs a string 'sub'")
            actors.append(Actor(act["sub"], {k: v for k, v in act.items() if k != "act"}))
            act = act.get("act")
        return tuple(actors)


class _ClaimReader:
    """Reads required and optional claims, falling back to legacy names when allowed."""

    def __init__(self, claims: Mapping[str, Any], legacy_names: bool) -> None:
        self._claims = claims
        self._legacy_names = legacy_names
        self.used_legacy = False

    def _get(self, name: str) -> object:
        if name in self._claims:
            return self._claims[name]
        legacy = _LEGACY_NAMES.get(name)
        if legacy is None or legacy not in self._claims:
            return None
        if not self._legacy_names:
            raise CredentialError(
                Reason.TXN_LEGACY_FORM_DISABLED, f"'{legacy}' is an earlier draft's '{name}'"
            )
        self.used_legacy = True
        return self._claims[legacy]

    def string(self, name: str) -> str:
        value = self._get(name)
        if value is None:
            raise CredentialError(Reason.TXN_CLAIM_MISSING, f"'{name}' is required")
        if not isinstance(value, str) or (name != "scope" and not value):
            raise CredentialError(Reason.TXN_CLAIM_INVALID, f"'{name}' is not a non-empty string")
        if len(value) > MAX_CLAIM_STRING:
            raise CredentialError(Reason.TXN_CLAIM_INVALID, f"'{name}' is too long")
        return value

    def optional_object(self, name: str) -> Mapping[str, Any] | None:
        value = self._get(name)
        if value is not None and not isinstance(value, dict):
            raise CredentialError(Reason.TXN_CLAIM_INVALID, f"'{name}' is not an object")
        return value


def _audiences(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise CredentialError(Reason.TXN_CLAIM_INVALID, "'aud' is not a string or list of strings")


def _is_workload_id(value: str) -> bool:
    try:
        parse_workload_id(value)
    except InvalidIdentifier:
        return False
    return True


def _is_identifier_string(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_STRING and value.isprintable()
