"""Assembling a gateway from configuration: keys, verifiers, engine, pipeline, metrics.

Everything expensive (parsing keys, compiling policy) happens here, once per load or reload,
before the result serves: on the serving thread, since regorus engines are bound to the
thread that built them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from authz.answers import Answers
from authz.clock import Clock, system_clock
from authz.config import Config
from authz.config.outbound import OutboundWorkloadConfig
from authz.credentials.attestation import EarRules, EarVerifier
from authz.credentials.authenticator import Authenticator, MtlsRules
from authz.credentials.context import AttestationSources, ContextVerifier, UserTokenSource
from authz.credentials.httpsig.verifier import SignatureRules, SignatureVerifier
from authz.credentials.presentation import CREDENTIAL_HEADERS, SizeLimits
from authz.credentials.txn_token import TxnRules, TxnTokenVerifier
from authz.credentials.user_token import UserIssuer, UserTokenRules, UserTokenVerifier
from authz.credentials.wit import WitRules, WitVerifier
from authz.credentials.wpt import WptRules, WptVerifier
from authz.credentials.x509_svid import SvidRules, SvidVerifier
from authz.deny_list import DenyListHolder, read_deny_list
from authz.errors import ConfigError, UnavailableError
from authz.observability.decision_log import (
    DecisionLog,
    InputRedaction,
    JsonLinesDecisionLog,
    open_decision_log,
)
from authz.observability.metrics import Metrics
from authz.observability.tracing import NO_TRACING, CheckTracing, open_tracing
from authz.outbound.callee import CalleeRouter
from authz.outbound.credentials import CredentialFiles, CredentialSource, DevIssuer
from authz.outbound.pipeline import OutboundPipeline, ProofSettings
from authz.pipeline import Observers, Pipeline
from authz.policy.decision_cache import DecisionCache
from authz.policy.embedded import EmbeddedRegoEngine
from authz.policy.engine import PolicyEngine
from authz.policy.loader import PolicySet
from authz.policy.remote import RemoteOpaEngine
from authz.policy.sources import load_configured_policy_set
from authz.replay.memory import InMemoryReplayCache
from authz.replay.redis_store import RedisReplayCache, open_redis_replay_cache
from authz.replay.shared_memory import SharedMemoryReplayCache
from authz.routing import ServiceRouter
from authz.trust.key_sets import KeyHolder, KeySet, TrustStore
from authz.trust.live import LiveKeyRegistry
from authz.tts.edge import EdgePipeline
from authz.tts.endpoint import TokenExchange
from authz.tts.keys import TtsKeys, load_tts_keys


@dataclass(frozen=True, slots=True)
class Gateway:
    config: Config
    pipeline: Pipeline
    trust_store: TrustStore
    runtime: Runtime
    outbound: Mapping[str, OutboundPipeline] = field(default_factory=dict)
    """Workload name → the pipeline of the outbound listeners that speak for it."""
    edge: EdgePipeline | None = None
    """The pipeline of `mode: edge` listeners."""
    token_exchange: TokenExchange | None = None
    """What `mode: tts` listeners answer with."""

    @property
    def engines(self) -> tuple[PolicyEngine, ...]:
        """Every policy engine this gateway evaluates with (closed when it is replaced)."""
        engines: list[PolicyEngine] = [self.pipeline.engine]
        for part in (self.edge, self.token_exchange):
            if part is not None and all(part.engine is not e for e in engines):
                engines.append(part.engine)
        return tuple(engines)

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics


def load_trust_store(config: Config, live_keys: LiveKeyRegistry) -> TrustStore:
    """The trust domains' WIT issuer keys: configured ones parsed now, those at a URL held by
    `live_keys` (which keeps them across reloads)."""
    return live_keys.trust_store(config.trust_domains)


def build_txn_verifier(
    config: Config, clock: Clock, live_keys: LiveKeyRegistry, own: TtsKeys | None = None
) -> TxnTokenVerifier:
    """The Txn-Token verifier, with each trust domain's Transaction Token Service keys. A
    gateway that is itself the TTS of a trust domain (`own`) verifies that domain's tokens
    with the keys it publishes: a rotation is known here the moment it is configured."""
    tts = {
        name: domain.txn_token_service
        for name, domain in config.trust_domains.items()
        if domain.txn_token_service is not None
    }
    tts_key_sets: dict[str, KeyHolder] = dict(
        live_keys.key_sets(tts, "trust_domains", ".txn_token_service")
    )
    if own is not None and config.tts is not None:
        tts_key_sets[config.tts.trust_domain] = own.key_set
    txn = config.txn_token
    return TxnTokenVerifier(
        tts_key_sets,
        TxnRules(
            clock_skew=config.clock_skew_seconds,
            max_lifetime=txn.max_lifetime_seconds,
            legacy_names=txn.legacy_names,
            max_chain_hops=txn.max_chain_hops,
        ),
        clock,
        txn.cache_entries,
    )


def build_context_verifier(
    config: Config, clock: Clock, live_keys: LiveKeyRegistry, txn_verifier: TxnTokenVerifier
) -> ContextVerifier:
    """The Txn-Token, user-token and attestation verifiers, with their configured keys."""
    skew = config.clock_skew_seconds
    user_tokens = None
    if (user := config.user_token) is not None:
        issuer_keys = live_keys.key_sets(user.issuers, "user_token.issuers")
        issuers = {
            name: UserIssuer(issuer_keys[name], frozenset(issuer.audiences))
            for name, issuer in user.issuers.items()
        }
        rules = UserTokenRules(skew, user.max_lifetime_seconds, user.id_tokens)
        user_tokens = UserTokenSource(
            user.header, UserTokenVerifier(issuers, rules, clock), user.accept_from_mtls_callers
        )
    attestation = None
    if (ear := config.attestation) is not None:
        verifier_keys = live_keys.key_sets(ear.verifiers, "attestation.verifiers")
        # Keys at a URL change under the gateway: only configured ones can be checked here.
        configured = [k for k in verifier_keys.values() if isinstance(k, KeySet)]
        _check_unique_kids(configured, "attestation.verifiers")
        verifier = EarVerifier(
            tuple(verifier_keys.values()), EarRules(skew, ear.max_age_seconds), clock
        )
        attestation = AttestationSources(
            verifier,
            ear.header,
            ear.wit_claim,
            ear.txn_rctx_claim,
            header_requires_subject=ear.header_requires_subject,
        )
    return ContextVerifier(txn_verifier, user_tokens, attestation)


def build_mtls_rules(config: Config, trust_store: TrustStore, clock: Clock) -> MtlsRules:
    """Who mTLS may authenticate, and whether the forwarded certificate is verified."""
    mtls = config.mtls
    certificates = None
    if mtls.verify_peer_certificate:
        rules = SvidRules(
            config.mtls_trust_domains, config.clock_skew_seconds, mtls.certificate_cache_entries
        )
        certificates = SvidVerifier(trust_store, rules, clock)
    return MtlsRules(mtls.authenticate, config.mtls_trust_domains, certificates)


def _check_unique_kids(key_sets: Iterable[KeySet], where: str) -> None:
    """A `kid` must pick one verifier: the same `kid` in two would let either answer."""
    seen: set[str] = set()
    for key_set in key_sets:
        for key in key_set.keys:
            if key.kid is not None:
                if key.kid in seen:
                    raise ConfigError(f"{where}: kid {key.kid!r} is used by two verifiers")
                seen.add(key.kid)


@dataclass(slots=True)
class Runtime:
    """What outlives a reload: metrics, the replay cache (a rebuilt one would accept every
    proof again), the deny-list in force, the decision log writer, and the key sets fetched
    from URLs (a reload must not refetch them all, nor drop them)."""

    metrics: Metrics
    replay_cache: InMemoryReplayCache | RedisReplayCache | SharedMemoryReplayCache
    deny_list: DenyListHolder
    decision_log: DecisionLog
    live_keys: LiveKeyRegistry = field(default_factory=LiveKeyRegistry)
    credential_sources: dict[str, tuple[OutboundWorkloadConfig, CredentialSource]] = field(
        default_factory=dict
    )
    """Outbound workload name → its configuration and credential source: a reload keeps the
    source (and the pair it holds) while that workload's configuration is unchanged."""
    tracing: CheckTracing = NO_TRACING
    """Spans for each check, when `tracing` is configured (a restart-only setting)."""

    def credential_source(
        self, name: str, workload: OutboundWorkloadConfig, config: Config, clock: Clock
    ) -> CredentialSource:
        kept = self.credential_sources.get(name)
        if kept is not None and kept[0] == workload:
            return kept[1]
        source = open_credential_source(workload, config, clock)
        self.credential_sources[name] = (workload, source)
        return source

    @classmethod
    def create(
        cls,
        config: Config,
        clock: Clock,
        metrics: Metrics | None = None,
        *,
        shared_replay_table: Path | None = None,
    ) -> Runtime:
        """`shared_replay_table`: the table the workers of `serve --workers N` share (see
        `build_replay_cache`)."""
        metrics = metrics or Metrics()
        replay_cache = build_replay_cache(config, clock, metrics, shared_replay_table)
        metrics.watch_replay_cache(replay_cache.__len__)
        deny_list = DenyListHolder()
        if config.deny_list is not None:
            deny_list.current = read_deny_list(config.deny_list.file)
        metrics.watch_deny_list(lambda: len(deny_list.current))
        decision_log = open_configured_decision_log(config, metrics)
        return cls(
            metrics,
            replay_cache,
            deny_list,
            decision_log,
            LiveKeyRegistry(metrics),
            tracing=open_tracing(config.tracing, metrics.count_trace_drop),
        )

    def close(self) -> None:
        """Close what needs no event loop (the decision log, a shared replay table's
        mapping); `aclose` closes everything."""
        try:
            if isinstance(self.replay_cache, SharedMemoryReplayCache):
                self.replay_cache.close()
        finally:
            try:
                self.decision_log.close()
            finally:
                self.tracing.shutdown()

    async def aclose(self) -> None:
        """Close everything: the shared replay store's connections (on the loop that used
        them), then what `close` closes."""
        try:
            await self.live_keys.close()
            if isinstance(self.replay_cache, RedisReplayCache):
                await self.replay_cache.aclose()
        finally:
            self.close()


def build_replay_cache(
    config: Config, clock: Clock, metrics: Metrics, shared_replay_table: Path | None = None
) -> InMemoryReplayCache | RedisReplayCache | SharedMemoryReplayCache:
    """The configured Redis shared by every replica (with this process's cache as its
    fallback, when `on_unavailable` asks for one); else the table this machine's workers
    share, when given; else this process's own replay cache."""
    if config.replay.redis is None and shared_replay_table is not None:
        return SharedMemoryReplayCache(
            shared_replay_table,
            clock,
            on_full=metrics.replay_cache_full.inc,
            on_error=metrics.count_replay_store_error,
        )
    local = InMemoryReplayCache(
        config.wpt.replay_cache_entries, clock, on_full=metrics.replay_cache_full.inc
    )
    if config.replay.redis is None:
        return local
    return open_redis_replay_cache(
        config.replay.redis,
        clock,
        fallback=local,
        on_error=metrics.count_replay_store_error,
        on_fallback=metrics.count_replay_store_fallback,
        on_loss=metrics.count_replay_store_loss,
        on_lost_at=metrics.record_replay_store_loss_time,
    )


def open_configured_decision_log(config: Config, metrics: Metrics) -> DecisionLog:
    settings = config.decision_log
    redaction = (
        InputRedaction.build(logged_credential_headers(config), settings.mask)
        if settings.include_input
        else None
    )
    decision_log = open_decision_log(
        settings.output,
        queue_entries=settings.queue_entries,
        redaction=redaction,
        on_drop=metrics.count_decision_log_drop,
    )
    if isinstance(decision_log, JsonLinesDecisionLog):
        metrics.watch_decision_log_queue(decision_log.queued)
    return decision_log


def logged_credential_headers(config: Config) -> tuple[str, ...]:
    """Every header that can carry a token, proof or signature: never logged as is."""
    outbound: set[str] = set()
    if (egress := config.outbound) is not None:
        outbound.add(egress.user_token_header)
        outbound.update(name for callee in egress.callees.values() for name in callee.bound_headers)
    return tuple(sorted({*CREDENTIAL_HEADERS, *config.bindable_headers, *outbound}))


def build_engine_for(
    config: Config, policy_set: PolicySet | None, metrics: Metrics, rule: str | None = None
) -> PolicyEngine:
    """The configured backend evaluating `rule` (default: `policy.decision`); `policy_set`
    is the validated set to serve (loaded from the configured directory or bundle file when
    not given)."""
    policy = config.policy
    if policy.backend == "opa":
        assert policy.opa is not None  # by PolicyConfig's validation
        return RemoteOpaEngine(policy.opa, rule or policy.decision)
    return EmbeddedRegoEngine(
        policy_set if policy_set is not None else load_configured_policy_set(policy),
        rule or policy.decision,
        on_rebuild=metrics.policy_engine_rebuilds.inc,
    )


def build_gateway(
    config: Config,
    clock: Clock = system_clock,
    metrics: Metrics | None = None,
    *,
    runtime: Runtime | None = None,
    policy_set: PolicySet | None = None,
) -> Gateway:
    """A complete gateway; `runtime` carries state over from the one it replaces."""
    runtime = runtime or Runtime.create(config, clock, metrics)
    metrics = runtime.metrics
    trust_store = load_trust_store(config, runtime.live_keys)
    skew = config.clock_skew_seconds
    wit_verifier = WitVerifier(
        trust_store,
        WitRules(
            clock_skew=skew,
            max_lifetime=config.wit.max_lifetime_seconds,
            proof_algorithms=frozenset(config.wit.proof_algorithms),
        ),
        clock,
        config.wit.cache_entries,
    )
    wpt_verifier = WptVerifier(
        WptRules(
            clock_skew=skew,
            max_lifetime=config.wpt.max_lifetime_seconds,
            bindable_headers=config.bindable_headers,
        ),
        clock,
        runtime.replay_cache,
    )
    signature_verifier = SignatureVerifier(
        SignatureRules(
            clock_skew=skew,
            max_lifetime=config.http_signature.max_lifetime_seconds,
            bindable_headers=frozenset(config.context_token_headers.values()),
        ),
        clock,
        runtime.replay_cache,
    )
    authenticator = Authenticator(
        wit_verifier,
        wpt_verifier,
        signature_verifier,
        SizeLimits(config.limits.token_header_bytes, config.limits.credential_headers_bytes),
        build_mtls_rules(config, trust_store, clock),
        legacy_wpt=config.wpt.legacy_header,
        context_headers=sorted(config.bindable_headers),
    )
    decision_cache = None
    if (cache := config.decision_cache) is not None:
        max_age = config.attestation.max_age_seconds if config.attestation else 0.0
        decision_cache = DecisionCache(cache.entries, cache.max_ttl_seconds, clock, max_age)
        metrics.watch_decision_cache(decision_cache.__len__)
    tts_keys = load_tts_keys(config.tts.signing, config.tts.trust_domain) if config.tts else None
    txn_verifier = build_txn_verifier(config, clock, runtime.live_keys, tts_keys)
    engine = build_engine_for(config, policy_set, metrics)
    answers = Answers(config.responses, config.upstream)
    observers = Observers(
        metrics=metrics,
        decision_log=runtime.decision_log,
        trust_revision=trust_store.revision,
        logged_credential_headers=logged_credential_headers(config),
        live_trust_revision=lambda: trust_store.revision,
        tracing=runtime.tracing,
    )
    pipeline = Pipeline(
        router=ServiceRouter.from_config(config),
        authenticator=authenticator,
        context_verifier=build_context_verifier(config, clock, runtime.live_keys, txn_verifier),
        engine=engine,
        answers=answers,
        parsed_body_bytes=config.limits.parsed_body_bytes,
        observers=observers,
        deny_list=runtime.deny_list,
        decision_cache=decision_cache,
        dry_run=config.dry_run,
    )
    outbound: dict[str, OutboundPipeline] = {}
    if (egress := config.outbound) is not None:
        callees = CalleeRouter(egress.callees)
        settings = ProofSettings(egress.proof_lifetime_seconds, egress.user_token_header)
        for name, workload in egress.workloads.items():
            # Egress answers are never cached: each carries a fresh, single-use proof.
            outbound[name] = OutboundPipeline(
                workload=workload.workload_id,
                credentials=runtime.credential_source(name, workload, config, clock),
                callees=callees,
                txn_verifier=txn_verifier,
                engine=engine,
                answers=answers,
                settings=settings,
                parsed_body_bytes=config.limits.parsed_body_bytes,
                observers=observers,
                clock=clock,
            )
    edge, token_exchange = build_tts(
        config,
        clock,
        runtime,
        policy_set if policy_set is not None else engine_policy_set(engine),
        keys=tts_keys,
        answers=answers,
        observers=observers,
        authenticator=authenticator,
        txn_verifier=txn_verifier,
    )
    return Gateway(
        config=config,
        pipeline=pipeline,
        trust_store=trust_store,
        runtime=runtime,
        outbound=outbound,
        edge=edge,
        token_exchange=token_exchange,
    )


def engine_policy_set(engine: PolicyEngine) -> PolicySet | None:
    """The policy set an embedded engine serves (so a second rule need not load it again)."""
    return engine.policy_set if isinstance(engine, EmbeddedRegoEngine) else None


def build_tts(
    config: Config,
    clock: Clock,
    runtime: Runtime,
    policy_set: PolicySet | None,
    *,
    keys: TtsKeys | None,
    answers: Answers,
    observers: Observers,
    authenticator: Authenticator,
    txn_verifier: TxnTokenVerifier,
) -> tuple[EdgePipeline | None, TokenExchange | None]:
    """The Transaction Token Service's two shapes, when `tts` is configured (`keys`: its
    keys, read by `load_tts_keys`), with its issuance rule compiled."""
    tts = config.tts
    if tts is None or keys is None:
        return None, None
    engine = build_engine_for(config, policy_set, runtime.metrics, tts.issuance_decision)
    issuers = runtime.live_keys.key_sets(tts.access_token_issuers, "tts.access_token_issuers")
    rules = UserTokenRules(
        config.clock_skew_seconds, tts.max_access_token_lifetime_seconds, id_tokens=False
    )

    def access_tokens(audiences: Iterable[str]) -> UserTokenVerifier:
        return UserTokenVerifier(
            {name: UserIssuer(issuers[name], frozenset(audiences)) for name in issuers},
            rules,
            clock,
        )

    edge = None
    if (edge_config := tts.edge) is not None:
        edge = EdgePipeline(
            config=edge_config,
            trust_domain=tts.trust_domain,
            issuer=tts.issuer,
            lifetime=tts.lifetime_seconds,
            access_tokens=access_tokens(edge_config.resource),
            keys=keys,
            engine=engine,
            answers=answers,
            parsed_body_bytes=config.limits.parsed_body_bytes,
            observers=observers,
            clock=clock,
        )
    token_exchange = None
    if (endpoint := tts.endpoint) is not None:
        # Replacements are verified with the TTS's own published keys, under its rules.
        own_tokens = TxnTokenVerifier(
            {tts.trust_domain: keys.key_set},
            txn_verifier.rules,
            clock,
            tts.cache_entries,
        )
        token_exchange = TokenExchange(
            config=endpoint,
            trust_domain=tts.trust_domain,
            issuer=tts.issuer,
            lifetime=tts.lifetime_seconds,
            max_extension=tts.replacement_max_extension_seconds,
            keys=keys,
            authenticator=authenticator,
            access_tokens=access_tokens([endpoint.url]),
            txn_tokens=own_tokens,
            engine=engine,
            decision_log=runtime.decision_log,
            metrics=runtime.metrics,
            clock=clock,
            clock_skew=config.clock_skew_seconds,
        )
    return edge, token_exchange


def open_credential_source(
    workload: OutboundWorkloadConfig, config: Config, clock: Clock
) -> CredentialSource:
    """Where an outbound workload's WIT and key come from: its files, or (`dev: true`) a
    local issuer. `ConfigError` when a development issuer's key cannot be used."""
    assert config.outbound is not None  # only called for configured outbound workloads
    if workload.credentials is not None:
        return CredentialFiles(workload.credentials, workload.id, clock)
    assert workload.dev_issuer is not None  # by OutboundWorkloadConfig's validation
    try:
        return DevIssuer(
            workload.dev_issuer, workload.id, clock, config.outbound.refresh_before_seconds
        )
    except UnavailableError as exc:
        raise ConfigError(exc.message) from None
