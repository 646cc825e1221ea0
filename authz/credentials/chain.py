"""The caller chain given to policy: every workload known to have handled this transaction.

Oldest first, the immediate caller last:

    txn.req_wl (the workload that asked the TTS for the token; legacy lists: each hop)
    txn.act.prior (earlier RFC 8693 actors, deepest first)
    txn.act (the current actor: the outermost `act`)
    caller.wit | caller.mtls (the immediate caller this gateway authenticated)

Only the caller hop is `verified`, and it says how: a WIT proven by a WPT or by an HTTP
Message Signature (`caller.wit`), or the mTLS identity (`caller.mtls`). The others are what
the TTS asserted. RFC 8693 says
prior actors are informational and must not drive access control; they are shown, marked as
prior, for audit. An entry that is not a workload URI (the draft's own `req_wl` example is a
host name) keeps its raw value and takes the trust domain of the Txn-Token's `aud`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from authz.credentials.authenticator import AuthnMethod, Caller
from authz.credentials.identifiers import InvalidIdentifier, parse_workload_id
from authz.credentials.txn_token import VerifiedTxnToken


class HopSource(StrEnum):
    TXN_REQ_WL = "txn.req_wl"
    TXN_ACT_PRIOR = "txn.act.prior"
    TXN_ACT = "txn.act"
    CALLER_WIT = "caller.wit"
    CALLER_MTLS = "caller.mtls"


@dataclass(frozen=True, slots=True)
class Hop:
    id: str
    trust_domain: str
    source: HopSource
    verified: bool
    authenticated_by: AuthnMethod | None = None
    """How this gateway proved the hop (the verified caller hop only)."""


def build_chain(txn: VerifiedTxnToken | None, caller: Caller | None) -> tuple[Hop, ...]:
    hops: list[Hop] = []
    if txn is not None:
        hops.extend(
            _asserted_hop(hop, txn.trust_domain, HopSource.TXN_REQ_WL)
            for hop in txn.requesting_workloads
        )
        if txn.actors:
            current, *prior = txn.actors
            hops.extend(
                _asserted_hop(actor.sub, txn.trust_domain, HopSource.TXN_ACT_PRIOR)
                for actor in reversed(prior)
            )
            hops.append(_asserted_hop(current.sub, txn.trust_domain, HopSource.TXN_ACT))
    if caller is not None:
        mtls = caller.authenticated_by is AuthnMethod.MTLS
        source = HopSource.CALLER_MTLS if mtls else HopSource.CALLER_WIT
        hops.append(
            Hop(
                caller.id.uri,
                caller.id.trust_domain,
                source,
                verified=True,
                authenticated_by=caller.authenticated_by,
            )
        )
    return tuple(hops)


def _asserted_hop(value: str, default_trust_domain: str, source: HopSource) -> Hop:
    try:
        trust_domain = parse_workload_id(value).trust_domain
    except InvalidIdentifier:
        trust_domain = default_trust_domain
    return Hop(value, trust_domain, source, verified=False)
