"""Building OPA bundles from a policy directory, signed as `opa build --signing-key` signs.

The archive holds `/.manifest` (`revision`, and `roots` when given), every `*.rego` and
`data.json` / `data.yaml` / `data.yml` under the directory at its relative path (other files
are left out), and, with a signing key, `/.signatures.json`: one JWS whose `files` claim
lists every other file with its SHA-256 digest computed as OPA computes it, a `keyid` claim
and `kid` header naming the key, and a `scope` claim when given. Output is reproducible:
entries are sorted, timestamps and owners zeroed.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from authz.devtools.mint import sign_jws
from authz.errors import ConfigError
from authz.policy.bundle import MANIFEST_FILE, SIGNATURES_FILE
from authz.policy.bundle_digest import DEFAULT_HASH_ALGORITHM, file_digest

_DATA_FILES = frozenset({"data.json", "data.yaml", "data.yml"})


def build_bundle(
    directory: Path,
    *,
    revision: str,
    roots: list[str] | None = None,
    signing_key: dict[str, Any] | None = None,
    keyid: str | None = None,
    scope: str | None = None,
) -> bytes:
    """A `.tar.gz` bundle of `directory`'s modules and data.

    `signing_key` is a private JWK (as `generate_private_jwk` makes) signing with its `alg`;
    `keyid` defaults to its `kid`. Raises ConfigError for a missing directory or a symlink.
    """
    manifest: dict[str, Any] = {"revision": revision}
    if roots is not None:
        manifest["roots"] = roots
    entries = {MANIFEST_FILE: json.dumps(manifest, sort_keys=True).encode(), **_collect(directory)}
    if signing_key is not None:
        token = sign_bundle_files(entries, signing_key, keyid=keyid, scope=scope)
        entries[SIGNATURES_FILE] = json.dumps({"signatures": [token]}, indent=1).encode()
    return tar_gz(entries)


def sign_bundle_files(
    files: dict[str, bytes],
    signing_key: dict[str, Any],
    *,
    keyid: str | None = None,
    scope: str | None = None,
) -> str:
    """The compact JWS `.signatures.json` carries for `files` (path → content)."""
    keyid = keyid if keyid is not None else signing_key.get("kid")
    claims: dict[str, Any] = {
        "files": [
            {
                "name": path,
                "hash": file_digest(path, content).hex(),
                "algorithm": DEFAULT_HASH_ALGORITHM,
            }
            for path, content in sorted(files.items())
        ]
    }
    if keyid is not None:
        claims["keyid"] = keyid
    if scope is not None:
        claims["scope"] = scope
    return sign_jws(claims, signing_key, {"kid": keyid})


def tar_gz(entries: dict[str, bytes]) -> bytes:
    """A reproducible gzipped tarball with one regular file per entry, named `/<path>` as
    OPA names bundle members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, content in sorted(entries.items()):
            member = tarfile.TarInfo("/" + path)
            member.size = len(content)
            member.mode = 0o644
            archive.addfile(member, io.BytesIO(content))
    return gzip.compress(buffer.getvalue(), mtime=0)


def _collect(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        raise ConfigError(f"policy directory {directory} does not exist")
    files: dict[str, bytes] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise ConfigError(f"{path}: is a symbolic link; bundles hold regular files only")
        if path.is_file() and (path.suffix == ".rego" or path.name in _DATA_FILES):
            files[path.relative_to(directory).as_posix()] = path.read_bytes()
    return files
