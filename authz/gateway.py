"""Assembling a gateway from configuration: keys, verifiers, engine, pipeline, metrics.

Everything expensive (parsing keys, compiling policy) happens here, once, before the
server reports SERVING.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from authz.answers import Answers
from authz.clock import Clock, system_clock
from authz.config import Config
from authz.credentials.authenticator import Authenticator, MtlsRules
from authz.credentials.presentation import SizeLimits
from authz.credentials.replay import InMemoryReplayCache
from authz.credentials.trust import TrustStore, build_trust_store, read_jwks_file
from authz.credentials.wit import WitRules, WitVerifier
from authz.credentials.wpt import WptRules, WptVerifier
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
    sources: dict[str, tuple[frozenset[str], object, str]] = {}
    for name, domain in config.trust_domains.items():
        where = f"trust_domains.{name}"
        if domain.jwks_file is not None:
            document = read_jwks_file(Path(domain.jwks_file), f"{where}.jwks_file")
        else:
            document = domain.jwks
        sources[name] = (frozenset(domain.algorithms), document, where)
    return build_trust_store(sources)


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
            bindable_headers=frozenset(config.wpt.bindable_headers),
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
        context_headers=config.wpt.bindable_headers,
    )
    engine = EmbeddedRegoEngine(
        load_policy_set(config.policy.directory),
        config.policy.decision,
        on_rebuild=metrics.policy_engine_rebuilds.inc,
    )
    pipeline = Pipeline(
        ServiceRouter.from_config(config),
        authenticator,
        engine,
        Answers(config.responses, config.upstream),
        config.limits.parsed_body_bytes,
    )
    return Gateway(config=config, pipeline=pipeline, metrics=metrics, trust_store=trust_store)
