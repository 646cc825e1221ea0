"""The local workload's credentials: its WIT and the private key its `cnf.jwk` confirms.

Two sources. `CredentialFiles` reads the pair an issuer writes (SPIRE's WIT-SVID minting or
any other) and switches to a new pair only when it is whole: the WIT names the configured
workload in `sub`, has not expired, and its `cnf.jwk` is the public half of the new key (an
issuer writes two files, one after the other: the half-written state keeps the old pair in
use, so no request is lost). `DevIssuer` mints the WIT itself, for development only.

Neither ever answers with a missing, expired or mismatched pair: `current` raises
`UnavailableError` (503 `outbound.credentials_unavailable`) instead, so a request never
leaves unauthenticated. The WIT's signature is not checked here: the callee checks it, and
the gateway may not hold the issuer's keys. Nothing here logs a token or a key.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from authz.clock import Clock
from authz.config.outbound import CredentialFilesConfig, DevIssuerConfig
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS, InvalidKey, public_key_from_jwk
from authz.credentials.claims import numeric_date, token_hash
from authz.credentials.jose import JoseReasons, parse_compact_jws, typ_matches
from authz.credentials.wit import WIT_TYP
from authz.errors import CredentialError, UnavailableError
from authz.files import write_jwks
from authz.issuing.signing_key import (
    SigningKey,
    UnusableKey,
    load_private_key,
    load_signing_jwk,
    signing_key,
)
from authz.issuing.wit import mint_wit
from authz.issuing.wpt import WptMinter
from authz.reasons import Reason

log = logging.getLogger("authz.outbound")


@dataclass(frozen=True, slots=True)
class WorkloadCredentials:
    """One whole pair: a WIT and the key it confirms, ready to sign with."""

    wit: str = field(repr=False)
    expires_at: float
    key: SigningKey
    wpt: WptMinter
    wit_hash: str
    """`token_hash` of the WIT: logged to say which WIT is in use, never the WIT."""

    @classmethod
    def of(cls, wit: str, expires_at: float, key: SigningKey) -> WorkloadCredentials:
        """The pair `wit` (expiring at `expires_at`) and `key`, with its WPT minter."""
        return cls(wit, expires_at, key, WptMinter(wit, expires_at, key), token_hash(wit)[:12])


class CredentialSource(Protocol):
    workload_id: str

    def current(self) -> WorkloadCredentials:
        """The pair to use now; `UnavailableError` when there is none."""
        ...


class CredentialProblem(ValueError):
    """Why a WIT and key are not a usable pair (never quoting either)."""


_WIT_JOSE_REASONS = JoseReasons.for_token("wit")


def credentials_from(
    wit: str, key_bytes: bytes, workload_id: str, now: float
) -> WorkloadCredentials:
    """A usable pair from a WIT and a private key file's bytes, or `CredentialProblem`."""
    try:
        # The callee's own parser: a WIT it would refuse as malformed is never used.
        jws = parse_compact_jws(wit, _WIT_JOSE_REASONS)
    except CredentialError as exc:
        raise CredentialProblem(f"the WIT is not a usable compact JWS: {exc.message}") from None
    header, claims = jws.header, jws.claims
    if not typ_matches(header.get("typ"), WIT_TYP):
        raise CredentialProblem("the WIT's typ is not wit+jwt")
    if claims.get("sub") != workload_id:
        raise CredentialProblem(f"the WIT's sub is not {workload_id}")
    try:
        exp = numeric_date(claims, "exp")
    except ValueError:
        exp = None
    if exp is None:
        raise CredentialProblem("the WIT has no numeric exp")
    if exp <= now:
        raise CredentialProblem("the WIT has expired")
    cnf = claims.get("cnf")
    confirmation = cnf.get("jwk") if isinstance(cnf, dict) else None
    if not isinstance(confirmation, dict) or not isinstance(confirmation.get("alg"), str):
        raise CredentialProblem("the WIT's cnf.jwk is missing or names no alg")
    try:
        confirmed = public_key_from_jwk(confirmation, SUPPORTED_ALGORITHMS)
        private, _ = load_private_key(key_bytes)
        key = signing_key(private, confirmation["alg"])
    except (InvalidKey, UnusableKey) as exc:
        raise CredentialProblem(str(exc)) from None
    if key.thumbprint != confirmed.thumbprint:
        raise CredentialProblem("the key is not the one the WIT's cnf.jwk confirms")
    return WorkloadCredentials.of(wit, exp, key)


def _unavailable(workload_id: str, why: str) -> UnavailableError:
    return UnavailableError(
        Reason.OUTBOUND_CREDENTIALS_UNAVAILABLE, f"no usable credentials for {workload_id}: {why}"
    )


_FileState = tuple[int, int, int]
"""(inode, size, mtime in ns): what tells a rewritten file from the one read last."""


def _state(path: Path) -> _FileState | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class CredentialFiles:
    """The pair in `wit_file` and `key_file`, looked at again at most every `poll_seconds`
    (on the request path: a stat of two files), and switched only to a whole new pair."""

    def __init__(self, config: CredentialFilesConfig, workload_id: str, clock: Clock) -> None:
        self.workload_id = workload_id
        self._config = config
        self._clock = clock
        self._pair: WorkloadCredentials | None = None
        self._states: tuple[_FileState | None, _FileState | None] | None = None
        self._checked_at = float("-inf")
        self._problem = "not read yet"
        self.refresh()

    def current(self) -> WorkloadCredentials:
        if time.monotonic() - self._checked_at >= self._config.poll_seconds:
            self.refresh()
        pair = self._pair
        if pair is None:
            raise _unavailable(self.workload_id, self._problem)
        if pair.expires_at <= self._clock():
            raise _unavailable(self.workload_id, f"its WIT expired ({self._problem})")
        return pair

    def refresh(self) -> None:
        """Read the files if either changed since last read, and switch to the pair they
        hold if it is whole; keep the pair in use otherwise."""
        self._checked_at = time.monotonic()
        states = (_state(self._config.wit_file), _state(self._config.key_file))
        if states == self._states:
            return
        self._states = states
        try:
            wit = self._config.wit_file.read_text(encoding="ascii").strip()
            key_bytes = self._config.key_file.read_bytes()
            pair = credentials_from(wit, key_bytes, self.workload_id, self._clock())
        except OSError as exc:
            self._problem = f"cannot read {exc.filename or 'a credential file'}: {exc.strerror}"
        except UnicodeDecodeError:
            self._problem = "the WIT file is not ASCII"
        except CredentialProblem as exc:
            self._problem = str(exc)
        else:
            if (
                self._pair is None
                or pair.wit != self._pair.wit
                or pair.key.thumbprint != self._pair.key.thumbprint
            ):
                log.info(
                    "outbound %s: using WIT %s (expires %d)",
                    self.workload_id,
                    pair.wit_hash,
                    int(pair.expires_at),
                )
            self._pair, self._problem = pair, "none"
            return
        log.warning(
            "outbound %s: %s; %s",
            self.workload_id,
            self._problem,
            "still using the previous pair" if self._pair is not None else "no pair to use",
        )


class DevIssuer:
    """A local issuer (development only): a new workload key and WIT at start, and again
    `refresh_before` seconds before the WIT expires."""

    def __init__(
        self, config: DevIssuerConfig, workload_id: str, clock: Clock, refresh_before: float
    ) -> None:
        self.workload_id = workload_id
        self._config = config
        self._clock = clock
        self._refresh_before = min(refresh_before, config.wit_lifetime_seconds / 2)
        self._issuer, self.issuer_kid = _dev_issuer_key(config)
        if config.jwks_file is not None:
            write_jwks(config.jwks_file, [self.public_jwk])
        log.warning(
            "outbound %s: development issuer (dev: true) mints its WITs; no production "
            "callee trusts it",
            workload_id,
        )
        self._pair = self._mint()

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The issuer's public key, with its `kid`: what a callee adds to trust it."""
        return {**self._issuer.public_jwk, "kid": self.issuer_kid}

    def current(self) -> WorkloadCredentials:
        if self._pair.expires_at - self._clock() <= self._refresh_before:
            self._pair = self._mint()
        return self._pair

    def _mint(self) -> WorkloadCredentials:
        now = self._clock()
        workload_key = _generate(self._config.workload_algorithm)
        wit = mint_wit(
            self._issuer,
            self.issuer_kid,
            subject=self.workload_id,
            confirmation_jwk=workload_key.public_jwk,
            now=now,
            lifetime=self._config.wit_lifetime_seconds,
        )
        return WorkloadCredentials.of(
            wit, float(int(now + self._config.wit_lifetime_seconds)), workload_key
        )


def _generate(alg: str) -> SigningKey:
    if alg == "ES256":
        return signing_key(ec.generate_private_key(ec.SECP256R1()), alg)
    return signing_key(ed25519.Ed25519PrivateKey.generate(), alg)


def _dev_issuer_key(config: DevIssuerConfig) -> tuple[SigningKey, str]:
    if config.key_file is None:
        return _generate("ES256"), f"dev-{secrets.token_hex(4)}"
    try:
        return load_signing_jwk(config.key_file)
    except UnusableKey as exc:
        raise UnavailableError(
            Reason.OUTBOUND_CREDENTIALS_UNAVAILABLE, f"dev_issuer.key_file: {exc}"
        ) from None
