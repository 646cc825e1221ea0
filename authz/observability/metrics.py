"""Prometheus metrics, kept in a registry per gateway instance (so tests never share counters).

Every family is named `wimse_authz_*`; counters are exposed with the `_total` suffix. Label
values are bounded: results are fixed words, reasons are the gateway's reason codes, and the
one policy-authored label (`dry_run_denials`'s reason) is truncated and capped (see
`Metrics.count_dry_run_denial`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Checks take tens of microseconds to a few milliseconds; default buckets start at 5 ms.
_CHECK_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip

DRY_RUN_REASON_CHARS = 64
"""A dry-run denial's reason label is the policy's first reason, cut to this many characters."""

DRY_RUN_REASONS_MAX = 100
"""Distinct dry-run reason labels kept; later new reasons are all counted as `other`."""

_SUCCESS_OR_FAILURE = ("success", "failure")


def _result(success: bool) -> str:
    return "success" if success else "failure"


class CertificateStatus(Protocol):
    """What a TLS listener reports about the certificate it serves."""

    @property
    def reloads(self) -> int: ...

    @property
    def failures(self) -> int: ...

    @property
    def not_after(self) -> float: ...


class _TlsListenerCollector(Collector):
    """Reads each TLS listener's certificate status at scrape time (the status is kept by
    the listener, which gRPC updates on its own threads)."""

    def __init__(self, listeners: Mapping[str, CertificateStatus]) -> None:
        self._listeners = dict(listeners)

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "wimse_authz_tls_certificate_reloads",
            "Changed certificate files taken up (success) or refused, the previous material "
            "serving on (failure), per TLS listener.",
            labels=["listener", "result"],
        )
        not_after = GaugeMetricFamily(
            "wimse_authz_tls_certificate_not_after_seconds",
            "When the certificate a TLS listener serves expires (Unix time).",
            labels=["listener"],
        )
        for name, status in self._listeners.items():
            reloads.add_metric([name, "success"], status.reloads)
            reloads.add_metric([name, "failure"], status.failures)
            not_after.add_metric([name], status.not_after)
        yield reloads
        yield not_after


class Metrics:
    """The gateway's metric families, registered in their own `CollectorRegistry`.

    The `count_*`, `record_*` and `set_*` methods are what the pipeline and the reloaders
    call; they resolve label children once, so the hot path never goes through `labels()`.
    The `watch_*` methods take a size function that is called at scrape time.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry

        # --- decisions ------------------------------------------------------------------
        self.decisions = Counter(
            "wimse_authz_decisions",
            "Decisions answered to Envoy, by result and reason code.",
            ["result", "reason"],
            registry=registry,
        )
        self.check_duration = Histogram(
            "wimse_authz_check_duration_seconds",
            "Time from receiving a CheckRequest to answering it.",
            buckets=_CHECK_BUCKETS,
            registry=registry,
        )
        self.check_stage_seconds = Counter(
            "wimse_authz_check_stage_seconds",
            "Time checks spent in each stage: verify (request view, credentials, context,"
            " deny-list), evaluate (policy input, decision or cache lookup).",
            ["stage"],
            registry=registry,
        )
        self._stage_children = {
            stage: self.check_stage_seconds.labels(stage) for stage in ("verify", "evaluate")
        }
        self.verification_failures = Counter(
            "wimse_authz_verification_failures",
            "Credentials rejected during verification, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.dry_run_denials = Counter(
            "wimse_authz_dry_run_denials",
            "Policy denials answered as allowed because of dry-run, by the policy's first "
            f"reason (cut to {DRY_RUN_REASON_CHARS} characters; 'other' past "
            f"{DRY_RUN_REASONS_MAX} distinct reasons).",
            ["reason"],
            registry=registry,
        )
        self._decision_children: dict[tuple[str, str], Any] = {}
        self._failure_children: dict[str, Counter] = {}
        self._dry_run_children: dict[str, Counter] = {}

        # --- replay cache ---------------------------------------------------------------
        self.replay_cache_full = Counter(
            "wimse_authz_replay_cache_full",
            "Proofs refused because the replay cache was full of unexpired entries.",
            registry=registry,
        )
        self.replay_cache_entries = Gauge(
            "wimse_authz_replay_cache_entries",
            "Unexpired proof identifiers held in this process (with a shared store: by its "
            "local fallback).",
            registry=registry,
        )
        self.replay_store_errors = Counter(
            "wimse_authz_replay_store_errors",
            "Proofs the shared replay store could not check: unreachable, too slow, refusing "
            "the gateway's credentials, or answering an error.",
            registry=registry,
        )
        self.replay_store_fallbacks = Counter(
            "wimse_authz_replay_store_fallbacks",
            "Proofs checked against this process's own cache because the shared replay store "
            "could not be used (on_unavailable: local_fallback).",
            registry=registry,
        )
        self.replay_store_losses = Counter(
            "wimse_authz_replay_store_losses",
            "Losses of the shared replay store's records this process found and recorded, by "
            "how: sentinel_missing (flush, restart without persistence, new Redis), "
            "run_id_changed (restart from a snapshot, failover).",
            ["cause"],
            registry=registry,
        )
        self._loss_children = {
            cause: self.replay_store_losses.labels(cause)
            for cause in ("sentinel_missing", "run_id_changed")
        }
        self.replay_store_lost_at = Gauge(
            "wimse_authz_replay_store_lost_at_seconds",
            "When the shared replay store last lost its records, as this process knows it "
            "(Unix time; 0 until known). Proofs that could have been used before it are "
            "refused (replay.state_lost) until they expire.",
            registry=registry,
        )

        # --- policy ---------------------------------------------------------------------
        self.policy_engine_rebuilds = Counter(
            "wimse_authz_policy_engine_rebuilds",
            "Embedded engines dropped and rebuilt after a panic inside the engine.",
            registry=registry,
        )
        self.policy_reloads = Counter(
            "wimse_authz_policy_reloads",
            "Policy and trust reloads attempted, by result (a failure keeps the old set serving).",
            ["result"],
            registry=registry,
        )
        self.policy_last_reload = Gauge(
            "wimse_authz_policy_last_reload_timestamp_seconds",
            "Unix time of the latest policy reload with each result.",
            ["result"],
            registry=registry,
        )
        self.policy_revision = Gauge(
            "wimse_authz_policy_revision_info",
            "Always 1, labelled with the policy and trust anchor revisions being served.",
            ["revision", "trust_revision"],
            registry=registry,
        )
        self._reload_children = {
            result: self.policy_reloads.labels(result) for result in _SUCCESS_OR_FAILURE
        }
        self._serving_revision: tuple[str, str] | None = None

        # --- trust keys -----------------------------------------------------------------
        self.key_set_refreshes = Counter(
            "wimse_authz_key_set_refreshes",
            "Trust domain key set refreshes, by result (a failure keeps the old keys).",
            ["result"],
            registry=registry,
        )
        self._key_refresh_children = {
            result: self.key_set_refreshes.labels(result) for result in _SUCCESS_OR_FAILURE
        }
        self.key_source_fetches = Counter(
            "wimse_authz_key_source_fetches",
            "Fetches of key sets served at a URL (jwks_url, spiffe_bundle_url), by source "
            "(its configuration key) and result (success, not_modified, failure).",
            ["source", "result"],
            registry=registry,
        )
        self.key_source_age = Gauge(
            "wimse_authz_key_source_age_seconds",
            "Seconds since a URL key source last answered with good keys (200 or 304); "
            "NaN until it first does.",
            ["source"],
            registry=registry,
        )

        # --- decision log ---------------------------------------------------------------
        self.decision_log_dropped = Counter(
            "wimse_authz_decision_log_dropped",
            "Decision log lines dropped because the writer's queue was full.",
            registry=registry,
        )
        self.trace_checks_dropped = Counter(
            "wimse_authz_trace_checks_dropped",
            "Checks whose spans were not exported: queue_full (the exporter behind) or "
            "export_failed (the collector unreachable or refusing).",
            ["cause"],
            registry=registry,
        )
        for cause in ("queue_full", "export_failed"):
            self.trace_checks_dropped.labels(cause)
        self.decision_log_queue_entries = Gauge(
            "wimse_authz_decision_log_queue_entries",
            "Decision log lines waiting for the writer.",
            registry=registry,
        )

        # --- decision cache -------------------------------------------------------------
        self.decision_cache_lookups = Counter(
            "wimse_authz_decision_cache_lookups",
            "Decision cache lookups, by result (hit or miss).",
            ["result"],
            registry=registry,
        )
        self.decision_cache_entries = Gauge(
            "wimse_authz_decision_cache_entries",
            "Decisions held by the decision cache.",
            registry=registry,
        )
        self._cache_hit = self.decision_cache_lookups.labels("hit")
        self._cache_miss = self.decision_cache_lookups.labels("miss")

        # --- deny-list ------------------------------------------------------------------
        self.deny_list_entries = Gauge(
            "wimse_authz_deny_list_entries",
            "Workload ids, key ids and token ids on the deny-list being enforced.",
            registry=registry,
        )
        self.deny_list_reloads = Counter(
            "wimse_authz_deny_list_reloads",
            "Deny-list file reloads, by result (a failure keeps the old list).",
            ["result"],
            registry=registry,
        )
        self._deny_list_children = {
            result: self.deny_list_reloads.labels(result) for result in _SUCCESS_OR_FAILURE
        }

    # --- decisions ------------------------------------------------------------------------

    def count_decision(self, result: str, reason: str) -> None:
        child = self._decision_children.get((result, reason))
        if child is None:
            # labels() takes a lock and builds a key each time; resolve each pair once.
            child = self._decision_children[(result, reason)] = self.decisions.labels(
                result, reason
            )
        child.inc()

    def count_stage_times(self, verify_us: int | None, evaluate_us: int | None) -> None:
        """Add one check's stage times (what reached each stage; None: it did not)."""
        if verify_us is not None:
            self._stage_children["verify"].inc(verify_us / 1e6)
        if evaluate_us is not None:
            self._stage_children["evaluate"].inc(evaluate_us / 1e6)

    def count_verification_failure(self, reason: str) -> None:
        """Count a rejected credential; `reason` is its reason code (`wpt.expired`)."""
        child = self._failure_children.get(reason)
        if child is None:
            child = self._failure_children[reason] = self.verification_failures.labels(reason)
        child.inc()

    def count_dry_run_denial(self, reason: str) -> None:
        """Count a policy denial that dry-run let through.

        `reason` is the policy's first reason string ("" when it gave none, counted as
        `unspecified`). Policies write these strings, so the label is bounded here: cut to
        `DRY_RUN_REASON_CHARS` characters, and once `DRY_RUN_REASONS_MAX` distinct values
        exist every new one is counted as `other`. Reasons that embed request data (paths,
        ids) therefore collapse into `other`: keep policy reasons to fixed phrases.
        """
        label = reason[:DRY_RUN_REASON_CHARS] or "unspecified"
        child = self._dry_run_children.get(label)
        if child is None:
            if len(self._dry_run_children) >= DRY_RUN_REASONS_MAX:
                label = "other"
            child = self._dry_run_children.get(label)
            if child is None:
                child = self._dry_run_children[label] = self.dry_run_denials.labels(label)
        child.inc()

    # --- replay cache ---------------------------------------------------------------------

    def watch_replay_cache(self, size: Callable[[], int]) -> None:
        """`size` counts the entries held in this process; a shared store's are not counted
        (its size is every replica's, and would cost a round trip per scrape)."""
        self.replay_cache_entries.set_function(lambda: float(size()))

    def count_replay_store_error(self) -> None:
        self.replay_store_errors.inc()

    def count_replay_store_fallback(self) -> None:
        self.replay_store_fallbacks.inc()

    def count_replay_store_loss(self, cause: str) -> None:
        child = self._loss_children.get(cause)
        (child if child is not None else self.replay_store_losses.labels(cause)).inc()

    def record_replay_store_loss_time(self, lost_at: float) -> None:
        self.replay_store_lost_at.set(lost_at)

    # --- policy ---------------------------------------------------------------------------

    def record_reload(self, success: bool, at: float | None = None) -> None:
        """Count a policy reload and stamp its time (`at`, Unix seconds; default now)."""
        result = _result(success)
        self._reload_children[result].inc()
        self.policy_last_reload.labels(result).set(time.time() if at is None else at)

    def set_revision(self, policy_revision: str, trust_revision: str) -> None:
        """Export the revisions now serving; the previous pair's series is removed."""
        serving = (policy_revision, trust_revision)
        if serving == self._serving_revision:
            return
        if self._serving_revision is not None:
            self.policy_revision.remove(*self._serving_revision)
        self.policy_revision.labels(*serving).set(1)
        self._serving_revision = serving

    # --- trust keys -----------------------------------------------------------------------

    def record_key_refresh(self, success: bool) -> None:
        """Count a change of trust anchors (`success`), or a refresh that kept the old keys."""
        self._key_refresh_children[_result(success)].inc()

    def record_key_source_fetch(self, source: str, result: str) -> None:
        """Count one fetch of a URL key source; `result` is success, not_modified or failure.
        Sources are configuration keys, so the label set is bounded by the configuration."""
        self.key_source_fetches.labels(source, result).inc()

    def watch_key_source_age(self, source: str, age: Callable[[], float | None]) -> None:
        """`age` is called at scrape time (None: never loaded)."""

        def value() -> float:
            seconds = age()
            return math.nan if seconds is None else seconds

        self.key_source_age.labels(source).set_function(value)

    def forget_key_source(self, source: str) -> None:
        """Drop a source's series once the configuration no longer has it."""
        for result in ("success", "not_modified", "failure"):
            with contextlib.suppress(KeyError):
                self.key_source_fetches.remove(source, result)
        with contextlib.suppress(KeyError):
            self.key_source_age.remove(source)

    # --- decision log ---------------------------------------------------------------------

    def count_decision_log_drop(self) -> None:
        self.decision_log_dropped.inc()

    def count_trace_drop(self, cause: str, checks: int) -> None:
        self.trace_checks_dropped.labels(cause).inc(checks)

    def watch_decision_log_queue(self, size: Callable[[], int]) -> None:
        self.decision_log_queue_entries.set_function(lambda: float(size()))

    # --- decision cache -------------------------------------------------------------------

    def count_cache_lookup(self, hit: bool) -> None:
        """Count a decision cache lookup."""
        (self._cache_hit if hit else self._cache_miss).inc()

    def watch_decision_cache(self, size: Callable[[], int]) -> None:
        self.decision_cache_entries.set_function(lambda: float(size()))

    # --- deny-list ------------------------------------------------------------------------

    def record_deny_list_reload(self, success: bool) -> None:
        self._deny_list_children[_result(success)].inc()

    def watch_deny_list(self, size: Callable[[], int]) -> None:
        """`size` is called at scrape time: it must read the list currently enforced."""
        self.deny_list_entries.set_function(lambda: float(size()))

    # --- TLS listeners --------------------------------------------------------------------

    def watch_tls_listeners(self, listeners: Mapping[str, CertificateStatus]) -> None:
        """Expose each TLS listener's certificate reloads and expiry, by listener address."""
        if listeners:
            self.registry.register(_TlsListenerCollector(listeners))
