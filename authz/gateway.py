"""Assembling a gateway from configuration: keys, verifiers, engine, pipeline, metrics.

Everything expensive (parsing keys, compiling policy) happens here, once, before the
server reports SERVING.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from authz.answers import Answers
from authz.clock import Clock, system_clock
from authz.config import Config, KeySetConfig
from authz.credentials.attestation import EarRules, EarVerifier
from authz.credentials.authenticator import Authenticator, MtlsRules
from authz.credentials.context import AttestationSources, ContextVerifier, UserTokenSource
from authz.credentials.presentation import SizeLimits
from authz.credentials.replay import InMemoryReplayCache
from authz.credentials.trust import (
    KeySet,
    KeySources,
    TrustStore,
    build_key_sets,
    build_trust_store,
    read_jwks_file,
)
from authz.credentials.txn_token import TxnRules, TxnTokenVerifier
from authz.credentials.user_token import UserIssuer, UserTokenRules, UserTokenVerifier
from authz.credentials.wit import WitRules, WitVerifier
from authz.credentials.wpt import WptRules, WptVerifier
from authz.errors import ConfigError
from authz.observability.metrics import Metrics
from authz.pipeline import Pipeline
from authz.policy.embedded import EmbeddedRegoEngine
from authz.policy.loader import load_policy_set
from authz.routing import ServiceRouter


@dataclass(frozen=True, slots=True)
class Gateway:
    config: Config
    pipeline: Pipeline
    metrics: Metrics
    trust_store: TrustStore


def load_trust_store(config: Config) -> TrustStore:
    return build_trust_store(_key_sources(config.trust_domains, "trust_domains"))


def _key_sources(key_sets: Mapping[str, KeySetConfig], where: str, suffix: str = "") -> KeySources:
    """Key sets as `build_key_sets` takes them; errors name `where.<name>suffix`."""
    sources: dict[str, tuple[frozenset[str], object, str]] = {}
    for name, key_set in key_sets.items():
        label = f"{where}.{name}{suffix}"
        if key_set.jwks_file is not None:
            document = read_jwks_file(Path(key_set.jwks_file), f"{label}.jwks_file")
        else:
            document = key_set.jwks
        sources[name] = (frozenset(key_set.algorithms), document, label)
    return sources


def build_context_verifier(config: Config, clock: Clock) -> ContextVerifier:
    """The Txn-Token, user-token and attestation verifiers, with their configured keys."""
    skew = config.clock_skew_seconds
    tts = {
        name: domain.txn_token_service
        for name, domain in config.trust_domains.items()
        if domain.txn_token_service is not None
    }
    tts_key_sets, _ = build_key_sets(_key_sources(tts, "trust_domains", ".txn_token_service"))
    txn = config.txn_token
    txn_verifier = TxnTokenVerifier(
        tts_key_sets,
        TxnRules(
            clock_skew=skew,
            max_lifetime=txn.max_lifetime_seconds,
            legacy_names=txn.legacy_names,
            max_chain_hops=txn.max_chain_hops,
        ),
        clock,
        txn.cache_entries,
    )
    user_tokens = None
    if (user := config.user_token) is not None:
        issuer_keys, _ = build_key_sets(_key_sources(user.issuers, "user_token.issuers"))
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
        verifier_keys, _ = build_key_sets(_key_sources(ear.verifiers, "attestation.verifiers"))
        _check_unique_kids(verifier_keys.values(), "attestation.verifiers")
        verifier = EarVerifier(
            tuple(verifier_keys.values()), EarRules(skew, ear.max_age_seconds), clock
        )
        attestation = AttestationSources(verifier, ear.header, ear.wit_claim, ear.txn_rctx_claim)
    return ContextVerifier(txn_verifier, user_tokens, attestation)


def _check_unique_kids(key_sets: Iterable[KeySet], where: str) -> None:
    """A `kid` must pick one verifier: the same `kid` in two would let either answer."""
    seen: set[str] = set()
    for key_set in key_sets:
        for key in key_set.keys:
            if key.kid is not None:
                if key.kid in seen:
                    raise ConfigError(f"{where}: kid {key.kid!r} is used by two verifiers")
                seen.add(key.kid)


def build_gateway(
    config: Config, clock: Clock = system_clock, metrics: Metrics | None = None
) -> Gateway:
    metrics = metrics or Metrics()
    trust_store = load_trust_store(config)
    skew = config.clock_skew_seconds
    replay_cache = InMemoryReplayCache(
        config.wpt.replay_cache_entries, clock, on_full=metrics.replay_cache_full.inc
    )
    metrics.watch_replay_cache(replay_cache.__len__)
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
        replay_cache,
    )
    authenticator = Authenticator(
        wit_verifier,
        wpt_verifier,
        SizeLimits(config.limits.token_header_bytes, config.limits.credential_headers_bytes),
        MtlsRules(config.mtls.authenticate, config.mtls_trust_domains),
        legacy_wpt=config.wpt.legacy_header,
        context_headers=sorted(config.bindable_headers),
    )
    engine = EmbeddedRegoEngine(
        load_policy_set(config.policy.directory),
        config.policy.decision,
        on_rebuild=metrics.policy_engine_rebuilds.inc,
    )
    pipeline = Pipeline(
        router=ServiceRouter.from_config(config),
        authenticator=authenticator,
        context_verifier=build_context_verifier(config, clock),
        engine=engine,
        answers=Answers(config.responses, config.upstream),
        parsed_body_bytes=config.limits.parsed_body_bytes,
    )
    return Gateway(config=config, pipeline=pipeline, metrics=metrics, trust_store=trust_store)
