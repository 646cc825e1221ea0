"""The gateway's YAML configuration: typed, validated, with errors that name the key.

`load_config(path)` is the only entry point. Relative paths in the file resolve against the
file's own directory, so a config and its keys can move together. Every limit has a safe
default; what cannot be defaulted safely (trust anchors, algorithm allow-lists, the
protected service's identity) must be written down.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from authz.config.base import (
    PositiveInt,
    PositiveSeconds,
    ProofStyleName,
    Strict,
    check_algorithms,
    check_header_name,
    check_host_port,
    check_origin,
    check_rule_path,
    check_status,
    check_workload_id,
    is_loopback_host,
)
from authz.config.errors import Location, format_validation_error, yaml_positions

# Re-exported: callers import every configuration type from here.
from authz.config.keys import KeyFetchConfig as KeyFetchConfig
from authz.config.keys import KeySetConfig as KeySetConfig
from authz.config.keys import TrustDomainConfig as TrustDomainConfig
from authz.config.keys import UserIssuerConfig as UserIssuerConfig
from authz.config.listeners import MAX_WORKERS as MAX_WORKERS
from authz.config.listeners import ListenerConfig as ListenerConfig
from authz.config.listeners import ListenerTlsConfig as ListenerTlsConfig
from authz.config.listeners import ServerConfig as ServerConfig
from authz.config.listeners import worker_address as worker_address
from authz.config.outbound import OutboundConfig, resolve_outbound_paths
from authz.config.tracing import TracingConfig as TracingConfig
from authz.config.tracing import resolve_tracing_paths
from authz.config.tts import TtsConfig, resolve_tts_paths
from authz.credentials.algorithms import SUPPORTED_ALGORITHMS
from authz.credentials.identifiers import (
    WorkloadId,
    is_valid_trust_domain,
    parse_workload_id,
)
from authz.credentials.presentation import CREDENTIAL_HEADERS
from authz.errors import ConfigError

SERVICE_CONTEXT_KEY = "wimse.service"
"""The `context_extensions` key an Envoy route sets to name the service it protects."""

TXN_TOKEN_CONTEXT_KEY = "wimse.txn_token"
"""The `context_extensions` key a route sets to `required` or `optional` for Txn-Tokens."""

DRY_RUN_CONTEXT_KEY = "wimse.dry_run"
"""The `context_extensions` key a route sets to `true` or `false` to override `dry_run`."""

BODY_CONTEXT_KEY = "wimse.body"
"""The `context_extensions` key a route sets to `forwarded` when Envoy forwards request bodies
to the gateway as exact bytes there; HTTP signatures are accepted only on such routes."""

BODY_FORWARDED = "forwarded"
"""The only value `wimse.body` may take."""

_RULE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class LimitsConfig(Strict):
    token_header_bytes: PositiveInt = 8 * 1024
    credential_headers_bytes: PositiveInt = 64 * 1024
    parsed_body_bytes: PositiveInt = 1024 * 1024
    """Bodies larger than this are not parsed into `input.parsed_body`."""


def _wpt_only() -> list[ProofStyleName]:
    return ["wpt"]


class ServiceConfig(Strict):
    id: str
    """The protected workload's own identifier."""
    origins: list[str] = Field(min_length=1)
    """`scheme://host[:port]` values a WPT `aud` may start with (aliases allowed)."""
    txn_token: Literal["required", "optional"] | None = None
    """Whether this service's requests must carry a Txn-Token; default `txn_token.required`.
    A route may override it with the `wimse.txn_token` context extension."""
    proofs: list[ProofStyleName] = Field(default_factory=_wpt_only, min_length=1)
    """Proof-of-possession styles a WIT may come with: a WPT, an HTTP Message Signature
    (whose routes must forward bodies to ext_authz), or both."""
    select_by_host: bool = False
    """Ingress gateways only: a request that no route (nor, under `destination_principal`,
    no destination principal) assigns to a service is for this one when its
    `scheme://authority` equals one of `origins` exactly."""
    body: Literal["forwarded"] | None = None
    """`forwarded`: Envoy forwards every request body of this service as exact bytes, on
    every route (as a route's `wimse.body: forwarded` says of one route): for meshes whose
    ext_authz provider sets no per-route context extensions (Istio with
    `includeRequestBodyInCheck`). A route's own `wimse.body` still applies where sent."""

    _check_id = field_validator("id")(check_workload_id)

    @field_validator("origins")
    @classmethod
    def _check_origins(cls, values: list[str]) -> list[str]:
        for value in values:
            check_origin(value)
        return values

    @field_validator("proofs")
    @classmethod
    def _check_proofs(cls, values: list[ProofStyleName]) -> list[ProofStyleName]:
        if len(set(values)) != len(values):
            raise ValueError("list each proof style once")
        return values

    @property
    def workload_id(self) -> WorkloadId:
        return parse_workload_id(self.id)


class WitConfig(Strict):
    max_lifetime_seconds: PositiveSeconds = 24 * 3600.0
    proof_algorithms: list[str] = Field(default_factory=lambda: list(SUPPORTED_ALGORITHMS))
    cache_entries: PositiveInt = 10_000

    _check_algorithms = field_validator("proof_algorithms")(check_algorithms)


_REDIS_KEY_PREFIX = re.compile(r"[!-~]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REDIS_FILES = ("password_file", "ca_file", "cert_file", "key_file")


class RedisReplayConfig(Strict):
    """A Redis every replica shares: a proof accepted by one replica is refused by the others."""

    url: str
    """`redis://host[:port][/db]`, or `rediss://` for TLS. No credentials or options in it."""
    key_prefix: str = "wimse-authz:replay"
    """Keys are `<key_prefix>:<sha256 hex>`; give each mesh sharing one Redis its own."""
    username: str | None = None
    """Redis ACL user; none: the `default` user. Needs a password."""
    password_file: Path | None = None
    """A file holding the password (its trailing newline ignored), read at start."""
    password_env: str | None = None
    """Or the name of an environment variable holding the password, read at start."""
    ca_file: Path | None = None
    """CA certificates for a `rediss://` URL; default: the system's."""
    cert_file: Path | None = None
    """Client certificate for a `rediss://` server that asks for one (with `key_file`)."""
    key_file: Path | None = None
    connect_timeout_seconds: PositiveSeconds = 0.25
    """Opening a connection (TCP and TLS)."""
    timeout_seconds: PositiveSeconds = 0.25
    """Waiting for a reply, or for a free connection. A claim, its one retry included, is
    bounded by `connect_timeout_seconds + timeout_seconds`."""
    max_connections: PositiveInt = 32
    on_unavailable: Literal["fail_closed", "local_fallback"] = "fail_closed"
    """Redis unreachable, too slow or refusing us. `fail_closed`: 503
    `replay.store_unavailable`. `local_fallback`: check against this process's own cache
    (a proof can then be replayed once at each other replica)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        db = parts.path.removeprefix("/")
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("expected redis://host[:port][/db] or rediss://...")
        if "@" in parts.netloc:
            raise ValueError("no credentials in the URL: use username and password_file")
        if parts.query or parts.fragment or not (db == "" or db.isdigit()):
            raise ValueError("nothing may follow the database number")
        try:
            parts.port  # noqa: B018 - raises on a port out of range
        except ValueError:
            raise ValueError("the port is not a number from 0 to 65535") from None
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if _REDIS_KEY_PREFIX.fullmatch(value) is None:
            raise ValueError("1 to 64 printable ASCII characters, no spaces")
        return value

    @field_validator("password_env")
    @classmethod
    def _check_env(cls, value: str | None) -> str | None:
        if value is not None and _ENV_NAME.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _check_credentials(self) -> RedisReplayConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set at most one of 'password_file' or 'password_env'")
        if self.username is not None and self.password_file is None and self.password_env is None:
            raise ValueError("'username' needs 'password_file' or 'password_env'")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both 'cert_file' and 'key_file', or neither")
        tls_files = (self.ca_file, self.cert_file)
        if not self.url.startswith("rediss://") and any(f is not None for f in tls_files):
            raise ValueError("ca_file, cert_file and key_file need a rediss:// URL")
        return self


class ReplayConfig(Strict):
    """Where single-use proofs (WPT `jti`) are remembered until they expire."""

    redis: RedisReplayConfig | None = None
    """A store shared by every replica; none: this process only, in a cache of
    `wpt.replay_cache_entries` (enough for a single replica)."""


class WptConfig(Strict):
    max_lifetime_seconds: PositiveSeconds = 300.0
    legacy_header: bool = False
    """Accept the obsolete pre-02 `Workload-Proof-Token` header (with `ath`). Off by default."""
    replay_cache_entries: PositiveInt = 100_000
    bindable_headers: list[str] = Field(default_factory=list)
    """Headers an `oth` claim may bind; an `oth` naming any other header is refused."""

    @field_validator("bindable_headers")
    @classmethod
    def _check_headers(cls, values: list[str]) -> list[str]:
        for value in values:
            check_header_name(value)
            if value in CREDENTIAL_HEADERS:
                raise ValueError(f"{value!r} has its own binding and cannot be listed here")
        return values


class HttpSignatureConfig(Strict):
    """HTTP Message Signatures (draft-ietf-wimse-http-signature) as proof of possession."""

    max_lifetime_seconds: PositiveSeconds = 300.0
    """Upper bound for `expires - created`; the draft asks for a short window."""


class TxnTokenConfig(Strict):
    required: bool = False
    """Default for services that set no `txn_token`: require a Txn-Token on every request."""
    max_lifetime_seconds: PositiveSeconds = 600.0
    """Upper bound for `exp - iat` and `exp - now` (the draft: minutes or less)."""
    legacy_names: bool = False
    """Accept earlier drafts' names: typ `txn_token`, `purp`, `azd`, `req_ctx`, `sub_id`, and
    `req_wl` as a comma-joined string or a list inside `rctx`. Off by default."""
    max_chain_hops: Annotated[int, Field(gt=0, le=64)] = 8
    """Bound on nested `act` depth and on legacy `req_wl` list length."""
    cache_entries: PositiveInt = 10_000
    """Verified Txn-Tokens, by exact bytes and trust domain, until `exp`."""


def _context_header(value: str) -> str:
    check_header_name(value)
    if value in CREDENTIAL_HEADERS:
        raise ValueError(f"{value!r} is a credential header, not a context token header")
    return value


class UserTokenConfig(Strict):
    header: str = "x-user-token"
    """Request header carrying the end-user token (a bare compact JWS), bound by WPT `oth`."""
    issuers: dict[str, UserIssuerConfig] = Field(min_length=1)
    """Issuer (`iss`) → its keys and accepted audiences."""
    id_tokens: bool = False
    """Also accept OpenID Connect ID tokens (their audience is a client, not this service)."""
    max_lifetime_seconds: PositiveSeconds = 3600.0
    accept_from_mtls_callers: bool = False
    """An mTLS-only caller cannot bind a user token to its request; accepting one anyway
    lets any holder of the token replay it through such a caller. Off by default."""

    _check_header = field_validator("header")(_context_header)


class AttestationConfig(Strict):
    header: str | None = None
    """Request header carrying an EAR JWT, signed by a verifier and bound by WPT `oth`."""
    wit_claim: str | None = None
    """WIT claim holding an EAR (an object, or a nested EAR JWT)."""
    txn_rctx_claim: str | None = None
    """Member of the Txn-Token's `rctx` holding an EAR (an object, or a nested EAR JWT)."""
    verifiers: dict[str, KeySetConfig] = Field(default_factory=dict)
    """Attestation verifiers whose signed EARs are trusted, by name."""
    max_age_seconds: PositiveSeconds = 3600.0
    """Results issued longer ago than this (or past their `exp`) count as status `none`."""
    header_requires_subject: bool = True
    """An EAR from `header` must name its workload (`sub`). Binding it with the presenter's
    own proof says nothing about whose attestation it is: without a subject, any workload
    that obtains an EAR could present it as its own."""

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str | None) -> str | None:
        return None if value is None else _context_header(value)

    @model_validator(mode="after")
    def _check_sources(self) -> AttestationConfig:
        if self.header is None and self.wit_claim is None and self.txn_rctx_claim is None:
            raise ValueError("set at least one of 'header', 'wit_claim', 'txn_rctx_claim'")
        if self.header is not None and not self.verifiers:
            raise ValueError("an attestation 'header' needs at least one of 'verifiers'")
        return self


class MtlsConfig(Strict):
    authenticate: bool = False
    """Let the mTLS principal Envoy reports authenticate a caller that sends no WIT."""
    trust_domains: list[str] | None = None
    """Trust domains accepted from mTLS; default: those under `trust_domains`."""
    verify_peer_certificate: bool = False
    """Verify the client certificate Envoy forwards (`include_peer_certificate`) as an
    X.509-SVID against its trust domain's SPIFFE bundle, instead of taking the principal
    Envoy reports as given. Each mTLS trust domain then needs a SPIFFE bundle."""
    certificate_cache_entries: PositiveInt = 10_000
    """Verified client certificates, by exact bytes, until they expire."""

    @model_validator(mode="after")
    def _verify_needs_authenticate(self) -> MtlsConfig:
        if self.verify_peer_certificate and not self.authenticate:
            raise ValueError("verify_peer_certificate needs authenticate: true")
        return self

    @field_validator("trust_domains")
    @classmethod
    def _check_domains(cls, values: list[str] | None) -> list[str] | None:
        for value in values or ():
            if not is_valid_trust_domain(value):
                raise ValueError(f"{value!r} is not a canonical trust domain name")
        return values


class BundleSigningConfig(Strict):
    """Keys that sign policy bundles (OPA's `.signatures.json`); with this set, an unsigned
    bundle, or one whose signature or file digests do not verify, is refused."""

    keys: dict[str, KeySetConfig] = Field(min_length=1)
    """Key id (the signature's `keyid` claim, else its `kid` header) → the key and its
    algorithms."""
    scope: str | None = None
    """When set, the signature's `scope` claim must equal it."""
    exclude_files: list[str] = Field(default_factory=list)
    """Bundle files the signature need not cover (OPA's `exclude_files`)."""

    @field_validator("keys")
    @classmethod
    def _static_keys(cls, values: dict[str, KeySetConfig]) -> dict[str, KeySetConfig]:
        # A signing key is part of what a reload validates: it changes with a reload only.
        for key_id, key_set in values.items():
            if key_set.url is not None or key_set.is_spiffe_bundle:
                raise ValueError(f"{key_id}: bundle signing keys are 'jwks_file' or 'jwks'")
        return values


class BundleConfig(Strict):
    """An OPA bundle (`.tar.gz` with `.manifest`, `*.rego`, `data.json`)."""

    url: str | None = None
    """`http://` or `https://` URL, polled with `If-None-Match`."""
    file: Path | None = None
    """A bundle file on disk, reloaded when it changes."""
    poll_seconds: PositiveSeconds = 30.0
    """How often the URL is polled (a file is checked with the other reload sources)."""
    timeout_seconds: PositiveSeconds = 10.0
    max_bytes: PositiveInt = 64 * 1024 * 1024
    """Largest bundle accepted, compressed and uncompressed."""
    ca_file: Path | None = None
    """CA certificates for an `https` URL; default: the system's."""
    signing: BundleSigningConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BundleConfig:
        if (self.url is None) == (self.file is None):
            raise ValueError("set exactly one of 'url' or 'file'")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url must be an http:// or https:// URL")
        return self


class RemoteOpaConfig(Strict):
    """An OPA server evaluating the decision through its Data API."""

    url: str
    """`http(s)://host:port` of the OPA server."""
    timeout_seconds: PositiveSeconds = 0.5
    """Per decision; a timeout is answered as unavailable (503), never as a denial."""
    token: str | None = None
    """Bearer token for an OPA server run with `--authentication=token`."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError("expected http(s)://host:port with no path")
        return value.rstrip("/")


class ReloadConfig(Strict):
    watch: bool = True
    """Poll the configuration, policy and key files for changes (SIGHUP always reloads)."""
    poll_seconds: PositiveSeconds = 2.0
    run_policy_tests: bool = True
    """Run the set's Rego tests (`*_test.rego`) before serving it; a failing test refuses it."""
    validation_timeout_seconds: PositiveSeconds = 60.0


class PolicyConfig(Strict):
    directory: Path | None = None
    """A policy directory (OPA's layout: `*.rego`, `data.json` placed by its path)."""
    bundle: BundleConfig | None = None
    """Or an OPA bundle, from a file or a URL."""
    decision: str = "envoy/authz/allow"
    """The rule to evaluate, as an OPA path (`envoy/authz/allow`) or `data.envoy.authz.allow`."""
    backend: Literal["embedded", "opa"] = "embedded"
    """`embedded`: regorus in this process. `opa`: an OPA server (`policy.opa`)."""
    opa: RemoteOpaConfig | None = None
    reload: ReloadConfig = ReloadConfig()

    _check_decision = field_validator("decision")(check_rule_path)

    @model_validator(mode="after")
    def _check_source(self) -> PolicyConfig:
        if self.backend == "opa":
            if self.opa is None:
                raise ValueError("backend 'opa' needs 'opa.url'")
            if self.directory is not None or self.bundle is not None:
                raise ValueError("backend 'opa' loads its policies itself: drop directory/bundle")
        elif (self.directory is None) == (self.bundle is None):
            raise ValueError("set exactly one of 'directory' or 'bundle'")
        return self


class DenyListConfig(Strict):
    """The emergency deny-list: a file of workload ids, key ids and token ids to refuse."""

    file: Path
    poll_seconds: PositiveSeconds = 1.0


class DecisionLogConfig(Strict):
    output: Literal["none", "stdout"] | Path = "none"
    """`stdout`, a file path (appended to), or `none`."""
    include_input: bool = False
    """Add the policy input (credential headers always replaced by a SHA-256 prefix)."""
    mask: list[str] = Field(default_factory=list)
    """JSON pointers into the input to replace with `"**masked**"` (e.g. `/parsed_body/card`)."""
    queue_entries: PositiveInt = 10_000
    """Lines waiting for the writer; beyond this, lines are dropped and counted."""

    @field_validator("mask")
    @classmethod
    def _check_pointers(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.startswith("/"):
                raise ValueError(f"{value!r} is not a JSON pointer (it must start with '/')")
        return values


class DecisionCacheConfig(Strict):
    """Reuse a decision for an identical policy input (proof fields aside)."""

    entries: PositiveInt = 10_000
    max_ttl_seconds: PositiveSeconds = 30.0
    """Upper bound for an entry's life; it never outlives the shortest token `exp`."""


class DiagnosticsConfig(Strict):
    address: str = "127.0.0.1:9102"
    """`host:port` for `/metrics`, `/healthz` and `/readyz` (plain HTTP: keep it private)."""

    _check_address = field_validator("address")(check_host_port)


class IdentityHeadersConfig(Strict):
    """Headers the gateway sets upstream on allowed requests; null disables one."""

    caller: str | None = "x-wimse-caller"
    trust_domain: str | None = "x-wimse-caller-trust-domain"
    authenticated_by: str | None = "x-wimse-authenticated-by"

    @field_validator("caller", "trust_domain", "authenticated_by")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_header_name(value)
        if value in CREDENTIAL_HEADERS:
            raise ValueError(f"{value!r} is a credential header")
        return value

    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.caller, self.trust_domain, self.authenticated_by) if n)


class UpstreamConfig(Strict):
    identity_headers: IdentityHeadersConfig = IdentityHeadersConfig()
    strip_proof_headers: bool = True
    """Remove `Authorization: WPT` / `Signature` / `Signature-Input` before the upstream."""


class UnavailableConfig(Strict):
    status: int = 503
    as_envoy_error: bool = False
    """Fail the Check RPC instead, so Envoy answers with its own `status_on_error` (and
    applies `failure_mode_allow` if it is set: only for operators who want that)."""

    _check_status = field_validator("status")(check_status)


class ResponsesConfig(Strict):
    reason_header: str = "x-wimse-authz-reason"
    invalid_credentials_status: int = 401
    invalid_signature_status: int = 400
    bad_request_status: int = 400
    unauthenticated_status: int = 401
    policy_denied_status: int = 403
    deny_list_status: int = 403
    unavailable: UnavailableConfig = UnavailableConfig()

    _check_header = field_validator("reason_header")(check_header_name)
    _check_statuses = field_validator(
        "invalid_credentials_status",
        "invalid_signature_status",
        "bad_request_status",
        "unauthenticated_status",
        "policy_denied_status",
        "deny_list_status",
    )(check_status)


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    """`json`: one object a line (`time`, `level`, `logger`, `message`, `decision_id`)."""


RESTART_ONLY = ("server", "diagnostics", "decision_log", "deny_list", "replay", "tracing")
"""`Config` sections a running gateway keeps at their start values until a restart (a reload
warns when the file changes them)."""


class Config(Strict):
    server: ServerConfig
    trust_domains: dict[str, TrustDomainConfig] = Field(min_length=1)
    services: dict[str, ServiceConfig] = Field(min_length=1)
    default_service: str | None = None
    """Service for routes that set no `wimse.service` context extension (`route` selection
    only; a single service is the default)."""
    service_selection: Literal["route", "destination_principal"] = "route"
    """How a check finds its protected service: `route`, the route's `wimse.service` context
    extension; `destination_principal`, the SPIFFE id Envoy reports for the callee (Istio
    sets no per-route context extensions). See `authz.routing`."""
    policy: PolicyConfig
    clock_skew_seconds: Annotated[float, Field(ge=0, le=300)] = 30.0
    limits: LimitsConfig = LimitsConfig()
    wit: WitConfig = WitConfig()
    wpt: WptConfig = WptConfig()
    replay: ReplayConfig = ReplayConfig()
    http_signature: HttpSignatureConfig = HttpSignatureConfig()
    mtls: MtlsConfig = MtlsConfig()
    txn_token: TxnTokenConfig = TxnTokenConfig()
    user_token: UserTokenConfig | None = None
    attestation: AttestationConfig | None = None
    upstream: UpstreamConfig = UpstreamConfig()
    responses: ResponsesConfig = ResponsesConfig()
    logging: LoggingConfig = LoggingConfig()
    dry_run: bool = False
    """Answer policy denials of authenticated callers as allowed (logged and counted).
    Credential failures are denied regardless. A route may override it (`wimse.dry_run`)."""
    outbound: OutboundConfig | None = None
    """The workloads `mode: outbound` listeners speak for, and their callees."""
    tts: TtsConfig | None = None
    """The Transaction Token Service: `mode: edge` listeners and the `mode: tts` endpoint."""
    deny_list: DenyListConfig | None = None
    decision_log: DecisionLogConfig = DecisionLogConfig()
    decision_cache: DecisionCacheConfig | None = None
    diagnostics: DiagnosticsConfig | None = None
    tracing: TracingConfig | None = None
    """OpenTelemetry spans for each check, exported over OTLP (off when absent)."""

    @field_validator("trust_domains")
    @classmethod
    def _check_trust_domain_names(
        cls, values: dict[str, TrustDomainConfig]
    ) -> dict[str, TrustDomainConfig]:
        for name in values:
            if not is_valid_trust_domain(name):
                raise ValueError(f"{name!r} is not a canonical trust domain name")
        return values

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        if self.default_service is not None and self.default_service not in self.services:
            raise ValueError(f"default_service {self.default_service!r} is not under 'services'")
        if (problem := _service_selection_problem(self)) is not None:
            raise ValueError(problem)
        if (
            self.default_service is None
            and len(self.services) == 1
            and self.service_selection == "route"
        ):
            object.__setattr__(self, "default_service", next(iter(self.services)))
        reason = self.responses.reason_header
        if reason in self.upstream.identity_headers.names():
            raise ValueError("responses.reason_header collides with an identity header")
        context = self.context_token_headers
        gateway_headers = (*self.upstream.identity_headers.names(), reason)
        for key, name in context.items():
            if name in gateway_headers:
                raise ValueError(f"{key} {name!r} is a header the gateway sets itself")
        if len(context) != len(set(context.values())):
            raise ValueError("user_token.header and attestation.header must differ")
        if (problem := _workers_problem(self, self.server.workers)) is not None:
            raise ValueError(problem)
        if (problem := _outbound_problem(self)) is not None:
            raise ValueError(problem)
        if (problem := _tts_problem(self)) is not None:
            raise ValueError(problem)
        if self.mtls.verify_peer_certificate:
            for name in sorted(self.mtls_trust_domains):
                domain = self.trust_domains.get(name)
                if domain is None or not domain.is_spiffe_bundle:
                    raise ValueError(
                        f"mtls.verify_peer_certificate: trust domain {name!r} needs a "
                        "spiffe_bundle_url or spiffe_bundle_file (its X.509 authorities)"
                    )
        return self

    def with_workers(self, workers: int) -> Config:
        """This configuration run with `workers` processes (`serve --workers`); raises
        `ConfigError` when it cannot be."""
        try:
            server = ServerConfig.model_validate({**dict(self.server), "workers": workers})
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(f"--workers {workers}", exc)) from None
        if (problem := _workers_problem(self, workers)) is not None:
            raise ConfigError(f"--workers {workers}: {problem}")
        return self.model_copy(update={"server": server})

    @property
    def context_token_headers(self) -> dict[str, str]:
        """Configuration key → header, for the headers carrying a user token or an
        attestation result (each bound by the WPT's `oth`)."""
        headers = {}
        if self.user_token is not None:
            headers["user_token.header"] = self.user_token.header
        if self.attestation is not None and self.attestation.header is not None:
            headers["attestation.header"] = self.attestation.header
        return headers

    @property
    def bindable_headers(self) -> frozenset[str]:
        """Every header a WPT `oth` claim may bind."""
        context = self.context_token_headers.values()
        return frozenset(self.wpt.bindable_headers) | frozenset(context)

    @property
    def mtls_trust_domains(self) -> frozenset[str]:
        if self.mtls.trust_domains is not None:
            return frozenset(self.mtls.trust_domains)
        return frozenset(self.trust_domains)


def _service_selection_problem(config: Config) -> str | None:
    if config.service_selection == "destination_principal":
        if config.default_service is not None:
            # A request without a known principal must not land on some service anyway.
            return (
                "default_service cannot be used with service_selection: "
                "destination_principal (a missing or unknown principal is 503 service.unknown)"
            )
        owners: dict[str, str] = {}
        for name, service in config.services.items():
            if (other := owners.setdefault(service.id, name)) != name:
                return f"services {other!r} and {name!r} have the same id: a principal names one"
    hosts: dict[str, str] = {}
    for name, service in config.services.items():
        for origin in service.origins if service.select_by_host else ():
            if (other := hosts.setdefault(origin, name)) != name:
                return f"services {other!r} and {name!r} both select_by_host {origin!r}"
    return None


def _outbound_problem(config: Config) -> str | None:
    listeners = [item for item in config.server.listeners if item.mode == "outbound"]
    outbound = config.outbound
    if outbound is None:
        return "outbound listeners need an 'outbound' section" if listeners else None
    served = {listener.workload for listener in listeners}
    for listener in listeners:
        workload = outbound.workloads.get(listener.workload or "")
        if workload is None:
            return (
                f"listener {listener.address}: workload {listener.workload!r} is not under "
                "outbound.workloads"
            )
        if workload.dev_issuer is not None and not (
            listener.is_unix or is_loopback_host(listener.address.rpartition(":")[0])
        ):
            return (
                f"listener {listener.address}: a dev_issuer workload is served only on a unix "
                "socket or loopback"
            )
    if unserved := sorted(set(outbound.workloads) - served):
        return f"outbound.workloads {', '.join(unserved)}: no outbound listener serves them"
    gateway_headers = (*config.upstream.identity_headers.names(), config.responses.reason_header)
    if outbound.user_token_header in (*gateway_headers, *CREDENTIAL_HEADERS):
        return (
            f"outbound.user_token_header {outbound.user_token_header!r} is a header the "
            "gateway sets itself"
        )
    return None


def _tts_problem(config: Config) -> str | None:
    modes = {listener.mode for listener in config.server.listeners}
    tts = config.tts
    for mode, shape in (("edge", "edge"), ("tts", "endpoint")):
        configured = tts is not None and getattr(tts, shape) is not None
        if mode in modes and not configured:
            return f"{mode} listeners need tts.{shape}"
        if configured and mode not in modes:
            return f"tts.{shape} is configured but no listener has mode: {mode}"
    if tts is not None and not is_valid_trust_domain(tts.trust_domain):
        return f"tts.trust_domain {tts.trust_domain!r} is not a canonical trust domain name"
    if tts is not None and tts.lifetime_seconds > config.txn_token.max_lifetime_seconds:
        return (
            "tts.lifetime_seconds exceeds txn_token.max_lifetime_seconds: its own tokens "
            "would be refused"
        )
    return None


def _workers_problem(config: Config, workers: int) -> str | None:
    redis = config.replay.redis
    if workers > 1 and redis is not None and redis.on_unavailable == "local_fallback":
        return (
            "replay.redis.on_unavailable: local_fallback cannot be used with more than one "
            "worker (a proof could be replayed once at each worker); use fail_closed"
        )
    return None


_K = TypeVar("_K", bound=KeySetConfig)


def _resolve_paths(config: Config, base: Path) -> Config:
    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else (base / path).resolve()

    def resolve_keys(key_set: _K) -> _K:
        update: dict[str, Any] = {}
        if key_set.jwks_file is not None:
            update["jwks_file"] = resolve(key_set.jwks_file)
        if key_set.spiffe_bundle_file is not None:
            update["spiffe_bundle_file"] = resolve(key_set.spiffe_bundle_file)
        if key_set.fetch.ca_file is not None:
            ca_file = resolve(key_set.fetch.ca_file)
            update["fetch"] = key_set.fetch.model_copy(update={"ca_file": ca_file})
        return key_set.model_copy(update=update) if update else key_set

    def _resolve_policy(policy: PolicyConfig) -> PolicyConfig:
        update: dict[str, Any] = {}
        if policy.directory is not None:
            update["directory"] = resolve(policy.directory)
        if (bundle := policy.bundle) is not None:
            bundle_update: dict[str, Any] = {}
            if bundle.file is not None:
                bundle_update["file"] = resolve(bundle.file)
            if bundle.ca_file is not None:
                bundle_update["ca_file"] = resolve(bundle.ca_file)
            if bundle.signing is not None:
                keys = {k: resolve_keys(v) for k, v in bundle.signing.keys.items()}
                bundle_update["signing"] = bundle.signing.model_copy(update={"keys": keys})
            update["bundle"] = bundle.model_copy(update=bundle_update)
        return policy.model_copy(update=update)

    domains = {
        name: resolve_keys(domain).model_copy(
            update={"txn_token_service": resolve_keys(domain.txn_token_service)}
        )
        if domain.txn_token_service is not None
        else resolve_keys(domain)
        for name, domain in config.trust_domains.items()
    }
    update: dict[str, Any] = {
        "trust_domains": domains,
        "policy": _resolve_policy(config.policy),
        "server": _resolve_server(config.server, resolve),
    }
    if config.deny_list is not None:
        update["deny_list"] = config.deny_list.model_copy(
            update={"file": resolve(config.deny_list.file)}
        )
    if isinstance(config.decision_log.output, Path):
        update["decision_log"] = config.decision_log.model_copy(
            update={"output": resolve(config.decision_log.output)}
        )
    if config.user_token is not None:
        issuers = {k: resolve_keys(v) for k, v in config.user_token.issuers.items()}
        update["user_token"] = config.user_token.model_copy(update={"issuers": issuers})
    if config.attestation is not None:
        verifiers = {k: resolve_keys(v) for k, v in config.attestation.verifiers.items()}
        update["attestation"] = config.attestation.model_copy(update={"verifiers": verifiers})
    if (redis := config.replay.redis) is not None:
        files = {k: resolve(p) for k in _REDIS_FILES if (p := getattr(redis, k)) is not None}
        update["replay"] = ReplayConfig(redis=redis.model_copy(update=files))
    if config.outbound is not None:
        update["outbound"] = resolve_outbound_paths(config.outbound, resolve)
    if config.tts is not None:
        update["tts"] = resolve_tts_paths(config.tts, resolve, resolve_keys)
    if config.tracing is not None:
        update["tracing"] = resolve_tracing_paths(config.tracing, resolve)
    return config.model_copy(update=update)


def _resolve_server(server: ServerConfig, resolve: Callable[[Path], Path]) -> ServerConfig:
    def resolve_listener(listener: ListenerConfig) -> ListenerConfig:
        tls = listener.tls
        if tls is None:
            return listener
        files = {"cert_file": resolve(tls.cert_file), "key_file": resolve(tls.key_file)}
        if tls.client_ca_file is not None:
            files["client_ca_file"] = resolve(tls.client_ca_file)
        return listener.model_copy(update={"tls": tls.model_copy(update=files)})

    listeners = [resolve_listener(listener) for listener in server.listeners]
    return server.model_copy(update={"listeners": listeners})


def _format_validation_error(
    source: str, error: ValidationError, positions: dict[Location, tuple[int, int]] | None = None
) -> str:
    return format_validation_error(source, error, Config, positions)


def parse_config(
    document: object,
    source: str,
    base_dir: Path,
    positions: dict[Location, tuple[int, int]] | None = None,
) -> Config:
    """Validate an already-parsed YAML document; `positions` (from `yaml_positions`) lets
    errors name the line and column of each key."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the configuration must be a YAML mapping")
    try:
        config = Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc, positions)) from None
    return _resolve_paths(config, base_dir)


def load_config(path: Path) -> Config:
    """Read, validate and resolve the configuration file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(document, str(path), path.parent, yaml_positions(text))
