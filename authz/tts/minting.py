"""Txn-Tokens as the Transaction Token Service mints them (draft-ietf-oauth-transaction-
tokens-10/-11, "Txn-Token Format"): `typ: txntoken+jwt`; `iat` now, a short `exp`, `aud`
the trust domain, a unique `txn`, `sub`, `scope`, `req_wl` required; `tctx` and `rctx`
when there are any; `act` on a replacement. The caller decides the values: this module only
writes what it is given and signs it, so the rules about values live in one place
(`authz.tts.issuance`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.clock import Clock
from authz.credentials.txn_token import TXN_TOKEN_TYP
from authz.issuing.jws import compact_jws, encoded_segment
from authz.tts.keys import TtsKeys


@dataclass(frozen=True, slots=True)
class TxnClaims:
    txn: str
    sub: str
    scope: tuple[str, ...]
    req_wl: str
    tctx: Mapping[str, Any] | None
    rctx: Mapping[str, Any] | None
    act: Mapping[str, Any] | None = None


def new_txn_id() -> str:
    """A transaction id unique in the trust domain: a random UUID (122 random bits)."""
    return str(uuid.uuid4())


class TxnTokenMinter:
    """Signs Txn-Tokens with the TTS's signing key, for one trust domain: `aud` the trust
    domain, `iss` when one is configured, `iat` now and `exp` `lifetime` seconds later."""

    def __init__(
        self, keys: TtsKeys, *, trust_domain: str, issuer: str | None, lifetime: float, clock: Clock
    ) -> None:
        self._keys = keys
        # The same for every token: encoded once, as `compact_jws` expects.
        self._header = encoded_segment(
            {"typ": TXN_TOKEN_TYP, "alg": keys.signer.alg, "kid": keys.kid}
        )
        self._trust_domain = trust_domain
        self._issuer = issuer
        self._lifetime = lifetime
        self._clock = clock

    def mint(self, claims: TxnClaims, *, expires_by: float | None = None) -> str:
        """A signed Txn-Token carrying `claims`; it expires `lifetime` from now, or at
        `expires_by` when that is sooner."""
        now = self._clock()
        expires_at = now + self._lifetime
        if expires_by is not None:
            expires_at = min(expires_at, expires_by)
        document: dict[str, Any] = {
            "iat": int(now),
            "aud": self._trust_domain,
            "exp": int(expires_at),
            "txn": claims.txn,
            "sub": claims.sub,
            "scope": " ".join(claims.scope),
            "req_wl": claims.req_wl,
        }
        if self._issuer is not None:
            document["iss"] = self._issuer
        if claims.tctx:
            document["tctx"] = dict(claims.tctx)
        if claims.rctx:
            document["rctx"] = dict(claims.rctx)
        if claims.act is not None:
            document["act"] = dict(claims.act)
        return compact_jws(self._header, document, self._keys.signer)
