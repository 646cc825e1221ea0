"""What is read around a run, besides wrk's own report: CPU time and peak RSS from /proc,
Envoy's counters and host health from its admin port, the gateway's Prometheus `/metrics`.

The parsing functions take the text they read (pure; unit-tested); the readers fetch it.
"""

from __future__ import annotations

import os
import resource
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

EXT_AUTHZ_STATS = ("ok", "denied", "error", "invalid", "failure_mode_allowed")
INGRESS = "ingress"
"""gateway.yaml's HCM `stat_prefix` (egress.yaml's is `egress`)."""
CHECK_DURATION_METRIC = "wimse_authz_check_duration_seconds"
CHECK_STAGE_METRIC = "wimse_authz_check_stage_seconds_total"
CACHE_LOOKUPS_METRIC = "wimse_authz_decision_cache_lookups_total"
HTTP_TIMEOUT = 5


class ProbeFailed(Exception):
    """Something the bench must read is missing (a renamed metric must not read as 0)."""


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:  # noqa: S310 - loopback
        text: str = response.read().decode()
        return text


# --- /proc ---------------------------------------------------------------------------------


def cpu_seconds_from_stat(stat: str, clock_ticks: int) -> float:
    """utime + stime from the text of /proc/<pid>/stat, in seconds.

    For a process these sum over all its threads, live and exited; children are not in them.
    """
    # The command name (field 2) is parenthesised and may hold spaces or parentheses;
    # utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time a running process (all its threads) has used; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return cpu_seconds_from_stat(stat, os.sysconf("SC_CLK_TCK"))


def children_from_proc(pid: int) -> list[int]:
    """The live children of `pid` (every thread's `children` list, as Linux keeps them)."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return children


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant: a `serve --workers N` supervisor and its workers."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children_from_proc(current))
    return tree


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of a running process and its live descendants; None if it is gone. A
    descendant that exits between two readings takes its time with it: supervisors here
    restart no worker during a run (one that did would make the run invalid anyway)."""
    own = process_cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(process_cpu_seconds(child) or 0.0 for child in process_tree(pid)[1:])


def peak_rss_kib_from_status(status: str) -> int | None:
    """`VmHWM` (the peak resident set size, kB) from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "VmHWM":
            return int(value.split()[0])
    return None


def peak_rss_kib(pid: int) -> int | None:
    """The peak RSS of a running process since it started; None if it is gone."""
    try:
        return peak_rss_kib_from_status(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def pss_kib_from_rollup(rollup: str) -> int | None:
    """`Pss` (kB) from the text of /proc/<pid>/smaps_rollup."""
    for line in rollup.splitlines():
        name, _, value = line.partition(":")
        if name == "Pss":
            return int(value.split()[0])
    return None


def memory_kib(pid: int) -> int | None:
    """What a check server holds in memory: a single process's peak RSS; for a process tree
    (a `serve --workers` supervisor and its workers) the members' proportional set sizes
    added up now, which counts the pages they share (the replay table, libraries) once
    instead of once per process. None if the process is gone."""
    tree = process_tree(pid)
    if len(tree) == 1:
        return peak_rss_kib(pid)
    sizes: list[int | None] = []
    for member in tree:
        try:
            sizes.append(pss_kib_from_rollup(Path(f"/proc/{member}/smaps_rollup").read_text()))
        except OSError:
            sizes.append(None)
    return None if sizes[0] is None else sum(size or 0 for size in sizes)


def children_cpu_seconds() -> float:
    """CPU time of this process's finished and waited-for children: around one wrk run,
    the increase is wrk's own."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- Envoy admin ---------------------------------------------------------------------------


def ext_authz_counters_from_stats(text: str, stat_prefix: str = INGRESS) -> dict[str, int]:
    """Envoy's ext_authz counters of the HTTP connection manager with `stat_prefix`
    (`http.<stat_prefix>.ext_authz.*`) from its admin `/stats` text (0 if not created)."""
    prefix = f"http.{stat_prefix}.ext_authz."
    counters = dict.fromkeys(EXT_AUTHZ_STATS, 0)
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        short = name.removeprefix(prefix)
        if name.startswith(prefix) and short in counters and value.isdigit():
            counters[short] = int(value)
    return counters


def ext_authz_counters(admin_port: int, stat_prefix: str = INGRESS) -> dict[str, int]:
    url = f"http://127.0.0.1:{admin_port}/stats?filter=^http\\.{stat_prefix}\\.ext_authz\\."
    return ext_authz_counters_from_stats(_get(url), stat_prefix)


def healthy_endpoints_from_clusters(text: str, cluster: str) -> set[str]:
    """`host:port` of the endpoints of `cluster` Envoy's admin `/clusters` text calls healthy."""
    healthy = set()
    for line in text.splitlines():
        parts = line.split("::")
        if parts[0] == cluster and parts[2:] == ["health_flags", "healthy"]:
            healthy.add(parts[1])
    return healthy


def healthy_endpoints(admin_port: int, cluster: str) -> set[str]:
    return healthy_endpoints_from_clusters(_get(f"http://127.0.0.1:{admin_port}/clusters"), cluster)


# --- the gateway's /metrics ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The gateway's own account of its checks (one process, or several added up).

    Times are wall time from `CheckRequest` in to answer out (`check_seconds`), and of the
    verify and evaluate stages within it; gRPC transport and queueing are outside them.
    """

    checks: int
    check_seconds: float
    verify_seconds: float
    evaluate_seconds: float
    cache_hits: int
    cache_misses: int

    def since(self, earlier: GatewayMetrics) -> GatewayMetrics:
        """The increase from `earlier` to this reading."""
        return GatewayMetrics(
            self.checks - earlier.checks,
            self.check_seconds - earlier.check_seconds,
            self.verify_seconds - earlier.verify_seconds,
            self.evaluate_seconds - earlier.evaluate_seconds,
            self.cache_hits - earlier.cache_hits,
            self.cache_misses - earlier.cache_misses,
        )

    def __add__(self, other: GatewayMetrics) -> GatewayMetrics:
        return GatewayMetrics(
            self.checks + other.checks,
            self.check_seconds + other.check_seconds,
            self.verify_seconds + other.verify_seconds,
            self.evaluate_seconds + other.evaluate_seconds,
            self.cache_hits + other.cache_hits,
            self.cache_misses + other.cache_misses,
        )

    def _per_check_us(self, seconds: float) -> float | None:
        return seconds / self.checks * 1e6 if self.checks else None

    def _stage_us(self, seconds: float) -> float | None:
        """None when the checks added no time to a stage: a pipeline that does not report
        its stage times to the metric would otherwise read as 0 µs per stage."""
        return self._per_check_us(seconds) if seconds > 0 else None

    @property
    def mean_check_us(self) -> float | None:
        return self._per_check_us(self.check_seconds)

    @property
    def mean_verify_us(self) -> float | None:
        return self._stage_us(self.verify_seconds)

    @property
    def mean_evaluate_us(self) -> float | None:
        return self._stage_us(self.evaluate_seconds)


_WANTED = {
    # (sample name, its `stage` or `result` label): (GatewayMetrics field, as shown)
    (f"{CHECK_DURATION_METRIC}_count", ""): ("checks", f"{CHECK_DURATION_METRIC}_count"),
    (f"{CHECK_DURATION_METRIC}_sum", ""): ("check_seconds", f"{CHECK_DURATION_METRIC}_sum"),
    (CHECK_STAGE_METRIC, "verify"): ("verify_seconds", f'{CHECK_STAGE_METRIC}{{stage="verify"}}'),
    (CHECK_STAGE_METRIC, "evaluate"): (
        "evaluate_seconds",
        f'{CHECK_STAGE_METRIC}{{stage="evaluate"}}',
    ),
    (CACHE_LOOKUPS_METRIC, "hit"): ("cache_hits", f'{CACHE_LOOKUPS_METRIC}{{result="hit"}}'),
    (CACHE_LOOKUPS_METRIC, "miss"): ("cache_misses", f'{CACHE_LOOKUPS_METRIC}{{result="miss"}}'),
}


def gateway_metrics_from_text(text: str) -> dict[str, GatewayMetrics]:
    """Read the check-duration histogram, the stage-time counter and the decision-cache
    lookups from Prometheus text, per gateway process: by the `worker` label a
    `serve --workers N` supervisor adds to its workers' samples ("" for a single process).
    ProbeFailed naming whatever is missing."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("stage") or sample.labels.get("result") or ""
            wanted = _WANTED.get((sample.name, label))
            if wanted is not None:
                found.setdefault(sample.labels.get("worker", ""), {})[wanted[0]] = sample.value
    if not found:
        found[""] = {}
    result: dict[str, GatewayMetrics] = {}
    for worker, values in sorted(found.items()):
        missing = [shown for field_name, shown in _WANTED.values() if field_name not in values]
        if missing:
            who = f"worker {worker}" if worker else "the gateway"
            raise ProbeFailed(f"{who}'s /metrics lacks {', '.join(missing)}")
        result[worker] = GatewayMetrics(
            checks=int(values["checks"]),
            check_seconds=values["check_seconds"],
            verify_seconds=values["verify_seconds"],
            evaluate_seconds=values["evaluate_seconds"],
            cache_hits=int(values["cache_hits"]),
            cache_misses=int(values["cache_misses"]),
        )
    return result


def gateway_metrics(diagnostics_port: int) -> dict[str, GatewayMetrics]:
    """Per gateway process behind one diagnostics port (see `gateway_metrics_from_text`)."""
    return gateway_metrics_from_text(_get(f"http://127.0.0.1:{diagnostics_port}/metrics"))
