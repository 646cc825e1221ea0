"""Prometheus metrics, kept in a registry per gateway instance (so tests never share counters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Checks take tens of microseconds to a few milliseconds; default buckets start at 5 ms.
_CHECK_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class Metrics:
    """The gateway's metric families, registered in their own `CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "wimse_authz_decisions",
            "Decisions answered to Envoy, by result and reason code.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.check_duration = Histogram(
            "wimse_authz_check_duration_seconds",
            "Time from receiving a CheckRequest to answering it.",
            buckets=_CHECK_BUCKETS,
            registry=self.registry,
        )
        self.replay_cache_full = Counter(
            "wimse_authz_replay_cache_full",
            "Proofs refused because the replay cache was full of unexpired entries.",
            registry=self.registry,
        )
        self.replay_cache_entries = Gauge(
            "wimse_authz_replay_cache_entries",
            "Unexpired proof identifiers held by the replay cache.",
            registry=self.registry,
        )
        self._decision_children: dict[tuple[str, str], Any] = {}
        self.policy_engine_rebuilds = Counter(
            "wimse_authz_policy_engine_rebuilds",
            "Embedded engines dropped and rebuilt after a panic inside the engine.",
            registry=self.registry,
        )

    def count_decision(self, result: str, reason: str) -> None:
        child = self._decision_children.get((result, reason))
        if child is None:
            # labels() takes a lock and builds a key each time; resolve each pair once.
            child = self._decision_children[(result, reason)] = self.decisions.labels(
                result, reason
            )
        child.inc()

    def watch_replay_cache(self, size: Callable[[], int]) -> None:
        self.replay_cache_entries.set_function(lambda: float(size()))
