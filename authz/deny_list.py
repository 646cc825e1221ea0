"""The emergency deny-list: workloads, signing keys and tokens an operator blocks at once.

An operator edits one small file (YAML or JSON) and the gateway picks it up within
`deny_list.poll_seconds`, without a policy change or a reload:

    workloads: [spiffe://example.org/ns/shop/sa/compromised]
    kids: [issuer-key-2025-01]
    thumbprints: [NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs]
    jtis: [6f1c0b7e-..., txn-7d2a...]

It is checked after every credential has been verified and before policy (dry-run included),
against the caller and every workload named in its chain, the key that verified each token
(WIT, Txn-Token, user token, signed attestation result), the WIT's confirmation key, and the
`jti` of the WIT and the user token and the Txn-Token's `txn`.

Keys are matched as the gateway knows them, never as a token's header names them: a stolen
key's holder writes the header, and could leave `kid` out or name another listing of the same
key. A `kids` entry matches a key its key set publishes under that kid (under any kid, or
none, the token uses); a `thumbprints` entry (RFC 7638, SHA-256, base64url) matches that key
material wherever it is configured, and a WIT whose `cnf.jwk` is that key (a stolen workload
key). A file that cannot be read or parsed keeps the last good list in force; the gateway
refuses to start without a readable one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from authz.credentials.authenticator import Caller
from authz.credentials.context import TransactionContext
from authz.credentials.signature import SigningKey
from authz.errors import ConfigError
from authz.files import read_bounded
from authz.reasons import Reason

log = logging.getLogger("authz.deny_list")

_KINDS = ("workloads", "kids", "thumbprints", "jtis")
_MAX_FILE_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class DenyList:
    workloads: frozenset[str] = frozenset()
    kids: frozenset[str] = frozenset()
    thumbprints: frozenset[str] = frozenset()
    jtis: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.workloads) + len(self.kids) + len(self.thumbprints) + len(self.jtis)

    def match(self, caller: Caller | None, context: TransactionContext) -> Reason | None:
        """The reason code for the first entry this request hits, or None."""
        if not self:
            return None
        if self.workloads and (
            (caller is not None and caller.id.uri in self.workloads)
            or any(hop.id in self.workloads for hop in context.chain)
        ):
            return Reason.DENYLIST_WORKLOAD
        keys, workload_keys, jtis = _token_ids(caller, context)
        if self.kids and any(not self.kids.isdisjoint(key.kids) for key in keys):
            return Reason.DENYLIST_KID
        if self.thumbprints and (
            any(key.thumbprint in self.thumbprints for key in keys)
            or not self.thumbprints.isdisjoint(workload_keys)
        ):
            return Reason.DENYLIST_KEY
        if not self.jtis.isdisjoint(jtis):
            return Reason.DENYLIST_JTI
        return None

    def __bool__(self) -> bool:
        return bool(self.workloads or self.kids or self.thumbprints or self.jtis)


EMPTY = DenyList()


def _token_ids(
    caller: Caller | None, context: TransactionContext
) -> tuple[list[SigningKey], set[str], set[str]]:
    """The keys that verified this request's tokens, the thumbprints of the workload keys
    it proved possession of, and its token ids."""
    keys: list[SigningKey] = []
    workload_keys: set[str] = set()
    jtis: set[str] = set()

    def add(target: set[str], value: object) -> None:
        if isinstance(value, str):
            target.add(value)

    if caller is not None and caller.wit is not None:
        keys.append(caller.wit.issuer_key)
        workload_keys.add(caller.wit.proof_key.thumbprint)
        add(jtis, caller.wit.claims.get("jti"))
    if (txn := context.txn) is not None:
        keys.append(txn.signing_key)
        add(jtis, txn.txn_id)
        add(jtis, txn.claims.get("jti"))
    if (user := context.user_token) is not None:
        keys.append(user.signing_key)
        add(jtis, user.claims.get("jti"))
    keys.extend(result.signing_key for result in context.attestation if result.signing_key)
    return keys, workload_keys, jtis


def parse_deny_list(text: str, source: str) -> DenyList:
    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping with {', '.join(_KINDS)}")
    unknown = sorted(set(document) - set(_KINDS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}")
    entries: dict[str, frozenset[str]] = {}
    for kind in _KINDS:
        values = document.get(kind) or []
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConfigError(f"{source}: {kind} must be a list of non-empty strings")
        entries[kind] = frozenset(values)
    return DenyList(**entries)


def read_deny_list(path: Path) -> DenyList:
    raw = read_bounded(path, _MAX_FILE_BYTES, "deny_list.file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"deny_list.file {path}: not UTF-8") from None
    return parse_deny_list(text, f"deny_list.file {path}")


def file_fingerprint(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) — changes when the file is rewritten or replaced."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class DenyListHolder:
    """The list in force, shared by every pipeline a reload builds. Swapped whole."""

    def __init__(self, deny_list: DenyList = EMPTY) -> None:
        self.current = deny_list
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"DenyListHolder({len(self.current)} entries)"


def dump_deny_list(deny_list: DenyList) -> str:
    """The file form of a list (for tests and tooling)."""
    return json.dumps({kind: sorted(getattr(deny_list, kind)) for kind in _KINDS}, indent=2)
