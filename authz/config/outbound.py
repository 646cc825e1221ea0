"""Outbound mode: the workloads a gateway speaks for on egress, and the callees it may
attach their credentials for. See `docs/outbound.md`.

A listener in `mode: outbound` names one `workload` of `outbound.workloads`; the route's
`wimse.service` names one of `outbound.callees`. Nothing in a CheckRequest can choose
another workload, and a callee's origin is configured, never read from the request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from authz.config.base import (
    PositiveSeconds,
    ProofStyleName,
    Strict,
    check_header_name,
    check_origin,
    check_workload_id,
)
from authz.credentials.identifiers import WorkloadId, parse_workload_id
from authz.credentials.presentation import CREDENTIAL_HEADERS


class CredentialFilesConfig(Strict):
    """The workload's WIT and private key as an issuer writes them (SPIRE's WIT-SVID
    minting, or any other). Both files are watched; a new pair is used once it is whole:
    the WIT's `sub` is the workload and its `cnf.jwk` is the new key's public half."""

    wit_file: Path
    """The WIT, a compact JWS (surrounding whitespace ignored)."""
    key_file: Path
    """The private key its `cnf.jwk` confirms: a private JWK or a PEM (PKCS#8, SEC1)."""
    poll_seconds: PositiveSeconds = 1.0
    """How often the files are looked at for a new pair."""


class DevIssuerConfig(Strict):
    """A local issuer for development: it mints the workload's WIT itself, with a key no
    trust domain is configured to trust unless someone adds its `jwks_file` on purpose.
    Only with `dev: true`, and only on Unix-socket or loopback listeners."""

    dev: Literal[True]
    """Must be written down: this issuer has no authority but its own."""
    key_file: Path | None = None
    """The issuer's private JWK (with `kid`); none: a new key each start."""
    jwks_file: Path | None = None
    """Where the issuer's public JWKS is written at start, for a callee to trust."""
    workload_algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    """The algorithm of the workload key minted with each WIT."""
    wit_lifetime_seconds: Annotated[float, Field(gt=60, le=24 * 3600)] = 3600.0


class OutboundWorkloadConfig(Strict):
    id: str
    """The workload's identifier: every WIT used for it must have this `sub`."""
    credentials: CredentialFilesConfig | None = None
    dev_issuer: DevIssuerConfig | None = None

    _check_id = field_validator("id")(check_workload_id)

    @model_validator(mode="after")
    def _one_source(self) -> OutboundWorkloadConfig:
        if (self.credentials is None) == (self.dev_issuer is None):
            raise ValueError("set exactly one of 'credentials' (files) or 'dev_issuer'")
        return self

    @property
    def workload_id(self) -> WorkloadId:
        return parse_workload_id(self.id)


class CalleeConfig(Strict):
    """A service this gateway's workloads may call, as its gateway verifies them."""

    origin: str
    """`scheme://host[:port]`: the start of every WPT `aud` or signature `wimse-aud` for it.
    It must be one of the callee's own configured `origins`."""
    proof: ProofStyleName = "wpt"
    """`wpt` (Workload-Identity-Token + Authorization: WPT) or `http_signature`."""
    bound_headers: list[str] = Field(default_factory=list)
    """Context-token headers bound to each request when present (`oth` of a WPT, covered
    by a signature); the callee must list them in its `wpt.bindable_headers`. The user-token
    header is bound whenever it is set, listed or not."""

    _check_origin = field_validator("origin")(check_origin)

    @field_validator("bound_headers")
    @classmethod
    def _check_bound(cls, values: list[str]) -> list[str]:
        for value in values:
            check_header_name(value)
            if value in CREDENTIAL_HEADERS:
                raise ValueError(f"{value!r} is a credential header, bound by the proof itself")
        return values


class OutboundConfig(Strict):
    workloads: dict[str, OutboundWorkloadConfig] = Field(min_length=1)
    callees: dict[str, CalleeConfig] = Field(min_length=1)
    proof_lifetime_seconds: Annotated[float, Field(ge=5, le=300)] = 30.0
    """How long a WPT or a signature stays valid (never beyond the WIT's `exp`): long enough
    for the request to reach the callee, short enough that a captured one is soon useless."""
    user_token_header: str = "x-user-token"
    """An app's `Authorization: Bearer` token is moved here (and bound), since the proof
    takes `Authorization`; the callee's `user_token.header`."""
    refresh_before_seconds: PositiveSeconds = 300.0
    """A development issuer mints a new WIT this long before the current one expires (at
    most half the WIT's lifetime before). WITs read from files are not refreshed by the
    gateway: their issuer rewrites them."""

    _check_user_header = field_validator("user_token_header")(check_header_name)


def resolve_outbound_paths(
    config: OutboundConfig, resolve: Callable[[Path], Path]
) -> OutboundConfig:
    """`config` with its files resolved by `resolve` (relative to the configuration file)."""
    workloads = {}
    for name, workload in config.workloads.items():
        update: dict[str, object] = {}
        if (files := workload.credentials) is not None:
            update["credentials"] = files.model_copy(
                update={"wit_file": resolve(files.wit_file), "key_file": resolve(files.key_file)}
            )
        if (dev := workload.dev_issuer) is not None:
            dev_files = {
                member: resolve(path)
                for member in ("key_file", "jwks_file")
                if (path := getattr(dev, member)) is not None
            }
            update["dev_issuer"] = dev.model_copy(update=dev_files)
        workloads[name] = workload.model_copy(update=update)
    return config.model_copy(update={"workloads": workloads})
