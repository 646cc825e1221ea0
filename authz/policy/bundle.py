"""OPA bundles: a gzipped tarball of Rego modules and data, optionally signed.

`parse_bundle` turns a bundle's bytes (read from a file or fetched from a URL) into a
`Bundle` whose `PolicySet` is built by `build_policy_set`, so a bundle and a policy directory
holding the same files serve the same policy. What a bundle may hold:

- `.manifest` (JSON): `revision`, `roots`, `metadata`, `rego_version`. The revision names the
  set (a digest of its files when empty). Every module's package and every data path must
  lie under one of the `roots` (default: everything), and roots must not overlap, as in OPA.
  Rego v0 (`rego_version: 0`) is refused: the embedded engine compiles Rego v1.
- `*.rego` modules (`*_test.rego` are kept as tests) and `data.json` / `data.yaml` /
  `data.yml`, placed in `data` at their directory's path.
- `.signatures.json`: `{"signatures": ["<compact JWS>"]}`, checked by `BundleVerifier`.
- Other files are not loaded, but a signature must still cover them.

Refused outright: WebAssembly modules (`*.wasm`, a manifest `wasm` section), `plan.json`,
delta bundles (`patch.json`), signature plugins, links and devices, paths that are absolute
after normalisation or contain `..`, empty or `.` segments or a backslash, the same path
twice, and any other file whose name OPA would also read as the manifest or the signatures
(OPA matches those by suffix). Paths may start with `/` or `./` (OPA writes `/`; tar tools
write `./`). `max_bytes` bounds the compressed bytes and, separately, the uncompressed tar
stream, which is inflated incrementally so a gzip bomb stops at `max_bytes`.

Signed bundles follow OPA's rules (`v1/bundle/verify.go`): exactly one JWS; its key is
named by the `kid` header or the `keyid` claim (both present: they must agree) and must be
configured, with its algorithm on that key's allow-list (a key in the JWS header is never
used); the `scope` claim must equal the configured scope (both may be absent); every file
but `.signatures.json` and the excluded ones must be listed with a matching digest, and
every listed file must exist. File digests are computed by `bundle_digest` as OPA computes
them. A signed bundle with no signing keys configured is refused, as OPA refuses it
("verification key not provided"); an unsigned bundle with signing keys configured is
refused.
"""

from __future__ import annotations

import hmac
import io
import json
import re
import tarfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from authz import strict_json
from authz.credentials.jose import JoseReasons, parse_compact_jws
from authz.credentials.signature import SignatureReasons, verify_signature
from authz.errors import ConfigError, CredentialError
from authz.policy.bundle_digest import DigestError, file_digest, hash_algorithm
from authz.policy.embedded import build_engine
from authz.policy.loader import PolicySet, build_policy_set
from authz.reasons import Reason
from authz.trust.key_sets import KeySet, build_key_sets, key_sources
from authz.trust.spiffe_bundle import JwtKeyUse

if TYPE_CHECKING:
    from authz.config import BundleSigningConfig

MANIFEST_FILE = ".manifest"
SIGNATURES_FILE = ".signatures.json"
_DATA_FILES = frozenset({"data.json", "data.yaml", "data.yml"})
# OPA treats any path ending in these as the manifest or the signatures.
_SPECIAL_SUFFIXES = (MANIFEST_FILE, "signatures.json")
_UNSUPPORTED_NAMES = {
    "plan.json": "plan.json (an IR plan) is not supported",
    "patch.json": "delta bundles (patch.json) are not supported",
}
_MAX_NAMES_LISTED = 10

# The JOSE helpers carry a request-time reason code on every failure. A bundle's failures
# are configuration errors (BundleError) with no reason code, so the code is dropped and
# only the message is kept.
_JOSE_REASONS = JoseReasons(*(Reason.POLICY_ERROR,) * 4)
_SIGNATURE_REASONS = SignatureReasons(*(Reason.POLICY_ERROR,) * 4)


class BundleError(ConfigError):
    """A bundle that cannot be served; the message names the bundle, the file and the problem
    (never signature bytes)."""


@dataclass(frozen=True, slots=True)
class Bundle:
    policy_set: PolicySet
    revision: str
    """The manifest's `revision`, or a digest of the modules and data when it is empty; the
    same as `policy_set.revision`, for decision logs."""
    roots: tuple[str, ...]
    """The manifest's roots without leading or trailing `/`; `("",)` is everything."""
    signed: bool
    """True when `.signatures.json` was verified (always, when a verifier was given)."""
    keyid: str | None
    """The configured key that verified the signature."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """The manifest's `metadata` object, as written."""


# --- the archive -------------------------------------------------------------------------


def _normalise_path(name: str) -> str:
    """A tar member name as a relative POSIX path, or ValueError."""
    path = name
    while path.startswith(("/", "./")):
        path = path[1:] if path.startswith("/") else path[2:]
    segments = path.split("/")
    if (
        not path
        or any(segment in ("", ".", "..") for segment in segments)
        or "\\" in path
        or any(ord(char) < 0x20 or 0xD800 <= ord(char) <= 0xDFFF for char in path)
    ):
        raise ValueError(f"invalid path {name!r}")
    return path


def _gunzip(data: bytes, max_bytes: int, origin: str) -> bytes:
    """Inflate every gzip member of `data`, stopping as soon as `max_bytes` is exceeded."""
    if not data.startswith(b"\x1f\x8b"):
        raise BundleError(f"{origin}: not a gzip archive")
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        while not inflater.eof:
            try:
                # At most one byte past the limit: enough to know it was exceeded.
                chunk = inflater.decompress(pending, max_bytes + 1 - len(out))
            except zlib.error as exc:
                raise BundleError(f"{origin}: corrupt gzip data: {exc}") from None
            out += chunk
            if len(out) > max_bytes:
                raise BundleError(f"{origin}: uncompressed bundle exceeds {max_bytes} bytes")
            pending = inflater.unconsumed_tail
            if not chunk and not pending and not inflater.eof:
                raise BundleError(f"{origin}: truncated gzip data")
        rest = inflater.unused_data
    return bytes(out)


def _read_archive(data: bytes, origin: str, max_bytes: int) -> dict[str, bytes]:
    """Every regular file of the bundle by normalised path, after the archive-level checks."""
    stream = _gunzip(data, max_bytes, origin)
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as archive:
            for member in archive:
                if member.isdir():
                    continue
                if member.issym() or member.islnk():
                    raise BundleError(f"{origin}: {member.name!r} is a link; links are refused")
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise BundleError(f"{origin}: {member.name!r} is not a regular file")
                try:
                    path = _normalise_path(member.name)
                except ValueError as exc:
                    raise BundleError(f"{origin}: {exc}") from None
                if path in files:
                    raise BundleError(f"{origin}: {path} appears twice in the archive")
                _check_supported(path, origin)
                extracted = archive.extractfile(member)
                assert extracted is not None  # a regular file
                files[path] = extracted.read()
    except tarfile.TarError as exc:
        raise BundleError(f"{origin}: not a valid tar archive: {exc}") from None
    return files


def _check_supported(path: str, origin: str) -> None:
    name = PurePosixPath(path).name
    if path not in (MANIFEST_FILE, SIGNATURES_FILE) and path.endswith(_SPECIAL_SUFFIXES):
        raise BundleError(
            f"{origin}: {path}: OPA would read this file as the bundle's manifest or "
            f"signatures; only /{MANIFEST_FILE} and /{SIGNATURES_FILE} are accepted"
        )
    if name.endswith(".wasm"):
        raise BundleError(f"{origin}: {path}: WebAssembly modules are not supported")
    if name in _UNSUPPORTED_NAMES:
        raise BundleError(f"{origin}: {path}: {_UNSUPPORTED_NAMES[name]}")


# --- signatures ----------------------------------------------------------------------------


def _go_glob(pattern: str) -> re.Pattern[str]:
    """Go's `filepath.Match` pattern (what OPA's `exclude_files` uses) as a regex: `*` and
    `?` stop at `/`, `[...]` / `[^...]` classes, `\\` escapes. ValueError when malformed."""
    out: list[str] = []
    index = 0

    def escaped(position: int) -> tuple[str, int]:
        if position >= len(pattern) or pattern[position] in "-]":
            raise ValueError("malformed character class")
        if pattern[position] == "\\":
            position += 1
            if position >= len(pattern):
                raise ValueError("trailing backslash")
        return pattern[position], position + 1

    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            out.append("[^/]*")
            index += 1
        elif char == "?":
            out.append("[^/]")
            index += 1
        elif char == "\\":
            if index + 1 >= len(pattern):
                raise ValueError("trailing backslash")
            out.append(re.escape(pattern[index + 1]))
            index += 2
        elif char == "[":
            index += 1
            negated = index < len(pattern) and pattern[index] == "^"
            index += negated
            ranges: list[str] = []
            count = 0
            while True:
                if index < len(pattern) and pattern[index] == "]" and count:
                    index += 1
                    break
                low, index = escaped(index)
                high = low
                if index < len(pattern) and pattern[index] == "-":
                    high, index = escaped(index + 1)
                if low <= high:
                    ranges.append(f"{re.escape(low)}-{re.escape(high)}")
                count += 1
            if ranges:
                out.append(f"[{'^' if negated else ''}{''.join(ranges)}]")
            else:
                out.append("." if negated else "(?!)")
        else:
            out.append(re.escape(char))
            index += 1
    return re.compile("".join(out), re.DOTALL)


@dataclass(frozen=True, slots=True)
class _SignedFile:
    digest: bytes
    algorithm: str


def _describe_names(names: Iterable[str]) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:_MAX_NAMES_LISTED])
    return shown + (
        f" and {len(ordered) - _MAX_NAMES_LISTED} more" if len(ordered) > _MAX_NAMES_LISTED else ""
    )


class BundleVerifier:
    """Checks a bundle's `.signatures.json` and file digests against configured keys."""

    def __init__(
        self,
        key_sets: Mapping[str, KeySet],
        *,
        scope: str | None = None,
        exclude_files: Sequence[str] = (),
    ) -> None:
        """`key_sets`: key id (the JWS `kid` / `keyid` claim) → that key's set; `scope`: the
        signature's `scope` claim must equal it (absent ≡ empty, as in OPA); `exclude_files`:
        Go `filepath.Match` patterns for files the signature need not cover."""
        if not key_sets:
            raise ConfigError("bundle signing: configure at least one key")
        self._key_sets = dict(key_sets)
        self._scope = scope or ""
        compiled = []
        for pattern in exclude_files:
            try:
                compiled.append(_go_glob(pattern))
            except ValueError as exc:
                raise ConfigError(f"bundle signing: exclude_files {pattern!r}: {exc}") from None
        self._exclude = tuple(compiled)

    @classmethod
    def from_config(
        cls, config: BundleSigningConfig, where: str = "policy.bundle.signing"
    ) -> BundleVerifier:
        """Read and parse the configured keys (ConfigError names the offending key)."""
        # Configuration allows no bundle here; were it to, only jwt-svid keys would sign.
        sources = key_sources(config.keys, f"{where}.keys", bundle_use=JwtKeyUse.JWT_SVID)
        key_sets, _ = build_key_sets(sources)
        return cls(key_sets, scope=config.scope, exclude_files=config.exclude_files)

    def is_excluded(self, path: str) -> bool:
        return any(pattern.fullmatch(path) for pattern in self._exclude)

    def verify(self, signatures: bytes, files: Mapping[str, bytes], origin: str) -> str:
        """Verify the signature over `files` (every bundle file but `.signatures.json`, by
        normalised path); return the key id that signed, or raise BundleError."""
        where = f"{origin}: {SIGNATURES_FILE}"
        keyid, claims = self._verify_jws(_single_token(signatures, where), where)
        listed = _signed_files(claims, where)
        for path in sorted(files):
            if self.is_excluded(path):
                listed.pop(path, None)
                continue
            signed = listed.pop(path, None)
            if signed is None:
                raise BundleError(f"{origin}: {path}: not covered by the bundle signature")
            try:
                actual = file_digest(path, files[path], signed.algorithm)
            except DigestError as exc:
                raise BundleError(f"{origin}: {path}: {exc}") from None
            if not hmac.compare_digest(actual, signed.digest):
                raise BundleError(
                    f"{origin}: {path}: content does not match the signed {signed.algorithm} "
                    f"digest (signed {signed.digest.hex()}, found {actual.hex()})"
                )
        if listed:
            raise BundleError(f"{where}: lists files the bundle lacks: {_describe_names(listed)}")
        return keyid

    def _verify_jws(self, token: str, where: str) -> tuple[str, Mapping[str, Any]]:
        try:
            jws = parse_compact_jws(token, _JOSE_REASONS)
        except CredentialError as exc:
            raise BundleError(f"{where}: {exc.message}") from None
        kid = _optional_string(jws.header, "kid", f"{where}: JWS header")
        claimed = _optional_string(jws.claims, "keyid", f"{where}: claim")
        if kid and claimed and kid != claimed:
            raise BundleError(f"{where}: the 'kid' header and the 'keyid' claim differ")
        keyid = kid or claimed
        if not keyid:
            raise BundleError(f"{where}: names no key (no 'kid' header or 'keyid' claim)")
        key_set = self._key_sets.get(keyid)
        if key_set is None:
            raise BundleError(f"{where}: key id {keyid!r} is not configured")
        # The kid names a configured key set, not a JWK inside it: every key of that set
        # fit for the alg is tried, the alg checked against that key's allow-list.
        unnamed = replace(jws, header={k: v for k, v in jws.header.items() if k != "kid"})
        try:
            verify_signature(unnamed, [key_set], _SIGNATURE_REASONS)
        except CredentialError as exc:
            raise BundleError(f"{where}: key {keyid!r}: {exc.message}") from None
        scope = _optional_string(jws.claims, "scope", f"{where}: claim")
        if scope != self._scope:
            raise BundleError(
                f"{where}: signature scope {scope!r} does not match the configured "
                f"scope {self._scope!r}"
            )
        return keyid, jws.claims


def _single_token(signatures: bytes, where: str) -> str:
    try:
        document = strict_json.loads_object(signatures)
    except (ValueError, RecursionError):
        raise BundleError(f"{where}: not a JSON object") from None
    if document.get("plugin") not in (None, ""):
        raise BundleError(f"{where}: signature plugins are not supported")
    tokens = document.get("signatures")
    if tokens is None:
        tokens = []
    if not isinstance(tokens, list):
        raise BundleError(f"{where}: 'signatures' is not a list")
    if len(tokens) != 1:
        raise BundleError(f"{where}: holds {len(tokens)} signatures; exactly one is supported")
    token = tokens[0]
    if not isinstance(token, str):
        raise BundleError(f"{where}: the signature is not a string")
    return token


def _optional_string(document: Mapping[str, Any], name: str, where: str) -> str:
    value = document.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BundleError(f"{where} '{name}' is not a string")
    return value


def _signed_files(claims: Mapping[str, Any], where: str) -> dict[str, _SignedFile]:
    entries = claims.get("files")
    if not isinstance(entries, list):
        raise BundleError(f"{where}: the signature has no 'files' list")
    listed: dict[str, _SignedFile] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BundleError(f"{where}: a 'files' entry has no string 'name'")
        try:
            path = _normalise_path(entry["name"])
        except ValueError as exc:
            raise BundleError(f"{where}: 'files' lists an {exc}") from None
        algorithm, digest = entry.get("algorithm"), entry.get("hash")
        if not isinstance(algorithm, str) or not algorithm:
            raise BundleError(f"{where}: {path}: no hash algorithm given")
        try:
            hash_algorithm(algorithm)
        except DigestError as exc:
            raise BundleError(f"{where}: {path}: {exc}") from None
        try:
            digest_bytes = bytes.fromhex(digest) if isinstance(digest, str) else None
        except ValueError:
            digest_bytes = None
        if not digest_bytes:
            raise BundleError(f"{where}: {path}: 'hash' is not a hex digest")
        if path in listed:
            raise BundleError(f"{where}: {path} is listed twice")
        listed[path] = _SignedFile(digest_bytes, algorithm)
    return listed


# --- manifest and roots -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Manifest:
    revision: str = ""
    roots: tuple[str, ...] = ("",)
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _parse_manifest(content: bytes | None, origin: str) -> _Manifest:
    if content is None:
        return _Manifest()
    where = f"{origin}: {MANIFEST_FILE}"
    try:
        document = strict_json.loads_object(content.removeprefix(b"\xef\xbb\xbf"))
    except (ValueError, RecursionError):
        raise BundleError(f"{where}: not a JSON object") from None
    revision = document.get("revision") or ""
    if not isinstance(revision, str):
        raise BundleError(f"{where}: 'revision' is not a string")
    roots = document.get("roots")
    if roots is None:
        roots = [""]
    if not isinstance(roots, list) or not all(isinstance(root, str) for root in roots):
        raise BundleError(f"{where}: 'roots' is not a list of strings")
    normalised = tuple(root.strip("/") for root in roots)
    for index, first in enumerate(normalised):
        for second in normalised[index + 1 :]:
            if _contains(first, _segments(second)) or _contains(second, _segments(first)):
                raise BundleError(f"{where}: roots {first!r} and {second!r} overlap")
    _check_rego_versions(document, where)
    if document.get("wasm"):
        raise BundleError(f"{where}: WebAssembly modules ('wasm') are not supported")
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BundleError(f"{where}: 'metadata' is not an object")
    return _Manifest(revision, normalised, MappingProxyType(metadata))


def _check_rego_versions(document: Mapping[str, Any], where: str) -> None:
    versions: list[tuple[str, object]] = [("rego_version", document.get("rego_version"))]
    per_file = document.get("file_rego_versions") or {}
    if not isinstance(per_file, dict):
        raise BundleError(f"{where}: 'file_rego_versions' is not an object")
    versions += [(f"file_rego_versions[{glob!r}]", value) for glob, value in per_file.items()]
    for name, version in versions:
        if version is None or (version == 1 and type(version) is int):
            continue
        if version == 0 and type(version) is int:
            raise BundleError(f"{where}: {name} is 0; Rego v0 is not supported (Rego v1 only)")
        raise BundleError(f"{where}: {name} {version!r} is not a known Rego version")


def _segments(path: str) -> list[str]:
    return path.split("/")


def _contains(root: str, path: Sequence[str]) -> bool:
    """OPA's `rootContains`: the root `""` holds everything; else a segment-wise prefix."""
    segments = _segments(root)
    if root == "":
        return True
    return len(segments) <= len(path) and list(path[: len(segments)]) == segments


def _check_roots(roots: tuple[str, ...], policy_set: PolicySet, origin: str) -> None:
    if "" in roots:
        return
    for path, package in _packages(policy_set, origin):
        if not any(_contains(root, package) for root in roots):
            raise BundleError(
                f"{origin}: {path}: package {'.'.join(package)} lies outside the manifest "
                f"roots {list(roots)}"
            )
    _check_data_roots(policy_set.data, (), roots, origin)


def _check_data_roots(
    node: object, path: tuple[str, ...], roots: tuple[str, ...], origin: str
) -> None:
    if any(_contains(root, path) for root in roots):
        return
    # An object above a root is only a container: look inside it.
    if isinstance(node, Mapping) and any(
        list(path) == _segments(root)[: len(path)] for root in roots
    ):
        for key, child in node.items():
            _check_data_roots(child, (*path, str(key)), roots, origin)
        return
    raise BundleError(
        f"{origin}: data at /{'/'.join(path)} lies outside the manifest roots {list(roots)}"
    )


def _packages(policy_set: PolicySet, origin: str) -> Iterable[tuple[str, list[str]]]:
    """Each module's (tests too) package path as regorus parses it (`a.b["c.d"]` → a, b, c.d)."""
    parse_only = replace(policy_set, modules=policy_set.with_tests(), data={})
    try:
        engine = build_engine(parse_only)
    except ConfigError as exc:
        raise BundleError(f"{origin}: {exc}") from None
    for module in json.loads(engine.get_ast_as_json()):
        path = str(module["source"]["file"])
        package = _ref_path(module["ast"]["package"]["refr"])
        if package is None:
            raise BundleError(f"{origin}: {path}: package path is not a plain name")
        yield path, package


def _ref_path(ref: Any) -> list[str] | None:
    if not isinstance(ref, dict) or len(ref) != 1:
        return None
    kind, node = next(iter(ref.items()))
    if kind == "Var":
        return [str(node["value"])]
    parent = _ref_path(node.get("refr")) if isinstance(node, dict) else None
    if parent is None:
        return None
    if kind == "RefDot":
        return [*parent, str(node["field"][1])]
    index = node.get("index") if kind == "RefBrack" else None
    if isinstance(index, dict) and isinstance(index.get("String"), dict):
        return [*parent, str(index["String"]["value"])]
    return None


# --- the bundle ---------------------------------------------------------------------------


def parse_bundle(
    data: bytes, origin: str, *, max_bytes: int, verifier: BundleVerifier | None
) -> Bundle:
    """The bundle in `data` (a `.tar.gz`), verified by `verifier` when given.

    `origin` names the bundle in errors and logs (a file path or a URL). Raises BundleError
    (a ConfigError) for anything the module docstring lists as refused.
    """
    if len(data) > max_bytes:
        raise BundleError(f"{origin}: bundle is {len(data)} bytes, over the {max_bytes} limit")
    files = _read_archive(data, origin, max_bytes)
    signatures = files.pop(SIGNATURES_FILE, None)
    keyid = None
    if verifier is not None:
        if signatures is None:
            raise BundleError(
                f"{origin}: the bundle is not signed (no {SIGNATURES_FILE}), "
                "but bundle signing keys are configured"
            )
        keyid = verifier.verify(signatures, files, origin)
    elif signatures is not None:
        raise BundleError(
            f"{origin}: the bundle is signed, but no bundle signing keys are configured "
            "(policy.bundle.signing) to verify it"
        )
    manifest = _parse_manifest(files.get(MANIFEST_FILE), origin)
    texts: list[tuple[str, str]] = []
    for path, content in files.items():
        name = PurePosixPath(path).name
        if not (name.endswith(".rego") or name in _DATA_FILES):
            continue
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{origin}: {path}: not UTF-8 text") from None
        if name == "data.json":
            try:
                strict_json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise BundleError(f"{origin}: {path}: not valid JSON: {exc}") from None
        texts.append((path, text))
    try:
        policy_set = build_policy_set(texts, origin, manifest.revision or None)
    except BundleError:
        raise
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    _check_roots(manifest.roots, policy_set, origin)
    return Bundle(
        policy_set=policy_set,
        revision=policy_set.revision,
        roots=manifest.roots,
        signed=verifier is not None,
        keyid=keyid,
        metadata=manifest.metadata,
    )
