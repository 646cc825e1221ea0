"""The metrics a `serve --workers N` supervisor exports: every worker's, labelled by worker,
and its own about the workers.

Each worker keeps its own registry and serves it on its private diagnostics socket; at each
scrape of the supervisor's `/metrics` the supervisor reads every worker's exposition, adds
`worker="<index>"` to each sample, and merges same-named families. prometheus_client's
multiprocess mode was not used: it cannot carry the gauges the gateway computes at scrape
time (`set_function`) nor its custom collectors (TLS listeners).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

WORKER_LABEL = "worker"


class WorkerMetricsCollector(Collector):
    """The families last read from each worker, samples labelled `worker="<index>"`."""

    def __init__(self) -> None:
        self._expositions: dict[int, str] = {}

    def update(self, expositions: Mapping[int, str | None]) -> None:
        """Replace what is exported with these workers' expositions (Prometheus text
        format); a worker given None (it did not answer) is left out."""
        self._expositions = {i: text for i, text in expositions.items() if text is not None}

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for index, text in sorted(self._expositions.items()):
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = into
                elif into.type != family.type:
                    continue  # workers of different versions; the first one's type stands
                for sample in family.samples:
                    labels = {**sample.labels, WORKER_LABEL: str(index)}
                    into.add_sample(sample.name, labels, sample.value, sample.timestamp)
        yield from merged.values()


class SupervisorMetrics:
    """The supervisor's registry: its own families and its workers' (`collector`)."""

    def __init__(self, workers: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.collector = WorkerMetricsCollector()
        self.registry.register(self.collector)
        self.restarts = Counter(
            "wimse_authz_worker_restarts",
            "Workers started again after they exited, by worker.",
            [WORKER_LABEL],
            registry=self.registry,
        )
        self.up = Gauge(
            "wimse_authz_worker_up",
            "1 when the worker answered the scrape its metrics come from, else 0.",
            [WORKER_LABEL],
            registry=self.registry,
        )
        for index in range(workers):
            self.restarts.labels(str(index))
            self.up.labels(str(index)).set(0)
