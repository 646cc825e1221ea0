"""The Transaction Token Service: where its keys are, whom it issues for, and the two
shapes it serves — `mode: edge` ext_authz listeners and the `mode: tts` token-exchange
endpoint. See `docs/tts.md`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from authz.config.base import (
    PositiveInt,
    PositiveSeconds,
    Strict,
    check_rule_path,
    check_workload_id,
)
from authz.config.keys import KeySetConfig
from authz.credentials.claims import scope_values


class AccessTokenIssuerConfig(KeySetConfig):
    """An external issuer of RFC 9068 access tokens (`typ: at+jwt`), keyed by its `iss`.
    The audience a token must name is the shape's own: the edge's `resource`, the
    endpoint's `url`."""


class TtsSigningConfig(Strict):
    """The TTS's keys, each a private JWK with `alg` and `kid`. All are published (the
    JWKS at `endpoint.jwks_path`, and `jwks_file` when set); only `key_file` signs."""

    key_file: Path
    """Signs every Txn-Token issued now."""
    next_key_file: Path | None = None
    """Published before it signs: verifiers have it when it becomes `key_file`."""
    retired_key_files: list[Path] = Field(default_factory=list)
    """No longer signing, still published until what they signed has expired."""
    jwks_file: Path | None = None
    """Where the public JWKS is written at start, for verifiers that read a file."""


class EdgeConfig(Strict):
    """`mode: edge`: ingress ext_authz that turns an external credential into a Txn-Token."""

    workload: str
    """The edge's own workload id: `req_wl` of every token it issues."""
    resource: list[str] = Field(min_length=1)
    """This edge's resource identifiers: an access token's `aud` must contain one."""
    mtls_clients: dict[str, list[str]] = Field(default_factory=dict)
    """Client principal (the URI SAN Envoy reports) → the scopes granted to it: mTLS clients
    have no token to say what they were granted, so configuration does."""
    keep_external_token: bool = False
    """Forward the access token upstream; a route may set `wimse.external_token: keep`."""

    _check_workload = field_validator("workload")(check_workload_id)

    @field_validator("mtls_clients")
    @classmethod
    def _check_grants(cls, grants: dict[str, list[str]]) -> dict[str, list[str]]:
        # A grant that is not a scope-token would fail every issuance for its client.
        for scopes in grants.values():
            for scope in scopes:
                if scope_values(scope) != (scope,):
                    raise ValueError(f"{scope!r} is not one scope-token (RFC 6749 section 3.3)")
        return grants


class TokenExchangeConfig(Strict):
    """`mode: tts`: the Txn-Token Request endpoint (RFC 8693 token exchange)."""

    url: str
    """The endpoint's URL as requesters name it: the `aud` of their WPTs, and of access
    tokens exchanged here."""
    path: str = "/token"
    jwks_path: str = "/.well-known/jwks.json"
    max_body_bytes: Annotated[int, Field(gt=0, le=1024 * 1024)] = 16 * 1024
    self_signed_workloads: list[str] = Field(default_factory=list)
    """Workloads that may present a self-signed subject token (signed with their WIT key)."""
    unsigned_json_workloads: list[str] = Field(default_factory=list)
    """Workloads trusted to assert a subject as unsigned JSON."""
    mtls_requesters: bool = False
    """Also authenticate requesters by the client certificate of a mutual-TLS listener."""

    @field_validator("path", "jwks_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError("an absolute path, without query or fragment")
        return value

    @field_validator("self_signed_workloads", "unsigned_json_workloads")
    @classmethod
    def _check_workloads(cls, values: list[str]) -> list[str]:
        for value in values:
            check_workload_id(value)
        return values


class TtsConfig(Strict):
    trust_domain: str
    """The trust domain it issues for: every token's `aud`."""
    issuer: str | None = None
    """`iss` of issued tokens (optional in the draft)."""
    signing: TtsSigningConfig
    lifetime_seconds: Annotated[float, Field(gt=0, le=3600)] = 300.0
    replacement_max_extension_seconds: Annotated[float, Field(ge=0, le=3600)] = 300.0
    """A replacement never expires more than this after the token it replaces."""
    issuance_decision: str = "wimse/issuance/decision"
    """The issuance policy's rule (docs/tts.md, "Issuance policy")."""
    access_token_issuers: dict[str, AccessTokenIssuerConfig] = Field(default_factory=dict)
    """External access-token issuers (RFC 9068 `at+jwt`), by `iss`."""
    max_access_token_lifetime_seconds: PositiveSeconds = 3600.0
    edge: EdgeConfig | None = None
    endpoint: TokenExchangeConfig | None = None
    cache_entries: PositiveInt = 10_000

    _check_rule = field_validator("issuance_decision")(check_rule_path)

    @model_validator(mode="after")
    def _some_shape(self) -> TtsConfig:
        if self.edge is None and self.endpoint is None:
            raise ValueError("configure edge, endpoint, or both")
        return self


def resolve_tts_paths(
    config: TtsConfig,
    resolve: Callable[[Path], Path],
    resolve_keys: Callable[[AccessTokenIssuerConfig], AccessTokenIssuerConfig],
) -> TtsConfig:
    """`config` with its files resolved (relative to the configuration file)."""
    signing = config.signing
    update: dict[str, object] = {
        "key_file": resolve(signing.key_file),
        "retired_key_files": [resolve(path) for path in signing.retired_key_files],
    }
    for member in ("next_key_file", "jwks_file"):
        if (path := getattr(signing, member)) is not None:
            update[member] = resolve(path)
    issuers = {name: resolve_keys(issuer) for name, issuer in config.access_token_issuers.items()}
    return config.model_copy(
        update={"signing": signing.model_copy(update=update), "access_token_issuers": issuers}
    )
