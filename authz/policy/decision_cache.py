"""An optional cache of policy decisions, keyed on the policy input (off by default).

The key is a digest of the whole input except what differs on every request by design —
the per-request proof (WPT `jti` and `exp` or the signature's `nonce`, `created` and
`expires`, the headers that carried the verified proof),
the request's own id and arrival time, the client's ephemeral port — plus the policy
revision, so a
reload never serves an old decision. Credentials are still verified and proofs still
replay-checked on every request: only the policy evaluation is skipped. An entry never
outlives the shortest-lived token behind it, nor `max_ttl_seconds`.

A policy that reads one of the excluded fields (say, `attributes.request.time`) sees the
value of the first request in the entry's life; such policies should not enable the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from authz.clock import Clock
from authz.credentials.authenticator import Authentication, Caller
from authz.credentials.context import TransactionContext
from authz.credentials.httpsig.verifier import VerifiedSignature
from authz.credentials.presentation import (
    AUTHORIZATION_HEADER,
    LEGACY_WPT_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_INPUT_HEADER,
)
from authz.policy.decision import PolicyDecision

REQUEST_ID_HEADER = "x-request-id"


def proof_header(authentication: Authentication) -> str | None:
    """The header that carried the proof the gateway verified for this request, if any.

    Only that header is left out of the key. An `Authorization` header that was *not* a
    verified WPT (a bearer token an mTLS caller sends, say) stays in the key: a policy may
    judge it, so a decision made for one value must never be reused for another.
    """
    caller = authentication.caller
    if caller is None or caller.proof is None:
        return None
    if isinstance(caller.proof, VerifiedSignature):
        return SIGNATURE_HEADER
    return LEGACY_WPT_HEADER if authentication.presented.legacy_form else AUTHORIZATION_HEADER


def _without(node: Mapping[str, Any], path: tuple[str, ...], drop: frozenset[str]) -> Any:
    """A shallow copy of `node` with the members in `drop` removed at `path`."""
    if not path:
        return {key: value for key, value in node.items() if key not in drop}
    child = node.get(path[0])
    if not isinstance(child, Mapping):
        return node
    return {**node, path[0]: _without(child, path[1:], drop)}


_HEADERS = ("attributes", "request", "http", "headers")
_HEADER_MAP = ("attributes", "request", "http", "headerMap")
_EXCLUDED: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = (
    (("attributes", "request"), frozenset(("time",))),
    (("attributes", "request", "http"), frozenset(("id",))),
    (("attributes", "source", "address", "socketAddress"), frozenset(("portValue",))),
    (("wimse", "caller", "proof"), frozenset(("jti", "nonce", "created", "expires_at"))),
)
_PER_REQUEST_HEADERS = {
    None: frozenset((REQUEST_ID_HEADER,)),
    AUTHORIZATION_HEADER: frozenset((REQUEST_ID_HEADER, AUTHORIZATION_HEADER)),
    LEGACY_WPT_HEADER: frozenset((REQUEST_ID_HEADER, LEGACY_WPT_HEADER)),
    SIGNATURE_HEADER: frozenset((REQUEST_ID_HEADER, SIGNATURE_HEADER, SIGNATURE_INPUT_HEADER)),
}


def _without_entries(
    node: Mapping[str, Any], path: tuple[str, ...], drop: frozenset[str]
) -> Mapping[str, Any]:
    """`node` with the `{key, ...}` entries of the `headers` list at `path` (Envoy's raw
    `headerMap`) whose key is in `drop` removed."""
    header_map: Any = node
    for part in path:
        header_map = header_map.get(part) if isinstance(header_map, Mapping) else None
    entries = header_map.get("headers") if isinstance(header_map, Mapping) else None
    if not isinstance(entries, list):
        return node
    kept = [
        entry
        for entry in entries
        if not (isinstance(entry, Mapping) and str(entry.get("key", "")).lower() in drop)
    ]
    return _replaced(node, (*path, "headers"), kept)


def _replaced(node: Mapping[str, Any], path: tuple[str, ...], value: Any) -> Mapping[str, Any]:
    head, rest = path[0], path[1:]
    child = node[head]
    return {**node, head: _replaced(child, rest, value) if rest else value}


def cache_key(document: Mapping[str, Any], revision: str, proof: str | None) -> bytes:
    """The digest a decision is stored under; `proof` names the header that carried the
    verified proof (`proof_header`), left out with Envoy's request id."""
    per_request = _PER_REQUEST_HEADERS[proof]
    stable: Mapping[str, Any] = _without(document, _HEADERS, per_request)
    stable = _without_entries(stable, _HEADER_MAP, per_request)
    for path, drop in _EXCLUDED:
        stable = _without(stable, path, drop)
    encoded = json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(
        revision.encode() + b"\0" + encoded.encode("utf-8", "surrogatepass"), digest_size=20
    ).digest()


class DecisionCache:
    """Bounded, least-recently-used, with a per-entry expiry."""

    def __init__(
        self, entries: int, max_ttl: float, clock: Clock, attestation_max_age: float
    ) -> None:
        self._entries: OrderedDict[bytes, tuple[float, PolicyDecision]] = OrderedDict()
        self._capacity = entries
        self._max_ttl = max_ttl
        self._clock = clock
        self._attestation_max_age = attestation_max_age

    def not_after(self, caller: Caller | None, context: TransactionContext) -> float:
        """When the input behind a decision stops being true: the first token to expire,
        or the first attestation result to turn stale."""
        limits = [self._clock() + self._max_ttl]
        if caller is not None and caller.wit is not None:
            limits.append(caller.wit.expires_at)
        if context.txn is not None:
            limits.append(context.txn.expires_at)
        if context.user_token is not None:
            limits.append(context.user_token.expires_at)
        for result in context.attestation:
            if not result.fresh:
                continue  # already counted as stale; it stays so
            if result.expires_at is not None:
                limits.append(result.expires_at)
            limits.append(result.issued_at + self._attestation_max_age)
        return min(limits)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> PolicyDecision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, decision = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return decision

    def put(self, key: bytes, decision: PolicyDecision, not_after: float) -> None:
        """Keep `decision` until `not_after` (the shortest token expiry) or `max_ttl`."""
        expires_at = min(not_after, self._clock() + self._max_ttl)
        if expires_at <= self._clock():
            return
        self._entries[key] = (expires_at, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
