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

from authz.issuing.jws import compact_jws, encoded_segment
from authz.tts.keys import TtsKeys

TXN_TOKEN_TYP = "txntoken+jwt"


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


def mint_txn_token(
    keys: TtsKeys,
    claims: TxnClaims,
    *,
    trust_domain: str,
    issuer: str | None,
    now: float,
    expires_at: float,
) -> str:
    document: dict[str, Any] = {
        "iat": int(now),
        "aud": trust_domain,
        "exp": int(expires_at),
        "txn": claims.txn,
        "sub": claims.sub,
        "scope": " ".join(claims.scope),
        "req_wl": claims.req_wl,
    }
    if issuer is not None:
        document["iss"] = issuer
    if claims.tctx:
        document["tctx"] = dict(claims.tctx)
    if claims.rctx:
        document["rctx"] = dict(claims.rctx)
    if claims.act is not None:
        document["act"] = dict(claims.act)
    header = encoded_segment({"typ": TXN_TOKEN_TYP, "alg": keys.signer.alg, "kid": keys.kid})
    return compact_jws(header, document, keys.signer)
