"""One measured wrk run against one setup, what is read around it, and whether it is valid.

Around the run: Envoy's ext_authz counters and each gateway's `/metrics` are read first and
last, and CPU time of every process innermost (so the reads' own cost stays out of it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import probes
from loadgen import Load, WptPool, WrkResult, run_wrk, wrk_command
from probes import GatewayMetrics
from setups import Setup

CACHE_MIN_HIT_RATE = 0.99
"""Below this, a cached gateway did not measure the cache. Every request differs only in its
WPT, so all lookups hit but one per `max_ttl_seconds` (entry expiry)."""
MIN_SHARE_OF_EVEN_SPLIT = 0.5
"""With several gateway processes, each must answer at least this fraction of an even share
of the checks, or the run did not measure them side by side."""


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU used during a run: per process (seconds), and per request (µs) by side."""

    seconds: dict[str, float | None]
    """By process: `envoy`, each server (`gateway`, `gateway-1`, `redis`...), and `wrk`."""
    envoy_us: float | None
    gateway_side_us: float | None
    """All servers behind ext_authz added up (None if the setup has none)."""
    wrk_us: float | None
    envoy_percent: float | None
    """% of one core over wrk's load phase: who saturates first."""
    gateway_side_percent: float | None


def cpu_per_request(seconds: Mapping[str, float | None], requests: int, wall_seconds: float) -> Cpu:
    """Sum `seconds` by side (`envoy`, `wrk`, everything else: the gateway side) and divide
    by the `requests` wrk completed; None where a reading is missing or nothing ran."""

    def total(names: Sequence[str]) -> float | None:
        values = [seconds.get(name) for name in names]
        if not names or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None)

    def per_request(value: float | None) -> float | None:
        return value / requests * 1e6 if value is not None and requests else None

    def percent(value: float | None) -> float | None:
        return value / wall_seconds * 100 if value is not None and wall_seconds > 0 else None

    servers = [name for name in seconds if name not in ("envoy", "wrk")]
    envoy, gateway_side, wrk = total(["envoy"]), total(servers), total(["wrk"])
    return Cpu(
        seconds=dict(seconds),
        envoy_us=per_request(envoy),
        gateway_side_us=per_request(gateway_side),
        wrk_us=per_request(wrk),
        envoy_percent=percent(envoy),
        gateway_side_percent=percent(gateway_side),
    )


class CpuMeter:
    """CPU time of a setup's processes, and of the wrk run (a child of this process)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._before = self._read()

    def _read(self) -> dict[str, float | None]:
        readings = {name: probes.tree_cpu_seconds(pid) for name, pid in self._pids.items()}
        return {**readings, "wrk": probes.children_cpu_seconds()}

    def used(self) -> dict[str, float | None]:
        after = self._read()
        return {
            name: None if start is None or end is None else end - start
            for name, start, end in ((n, self._before[n], after[n]) for n in after)
        }


@dataclass
class Measurement:
    setup: str
    round: int
    kind: Literal["max", "rate"]
    """`max`: at saturation (wrk's connections as fast as answered); `rate`: fixed rate."""
    run: WrkResult
    warmup: WrkResult | None = None
    offered_rate: float | None = None
    """Requests/s offered in a `rate` run."""
    cpu: Cpu | None = None
    peak_rss_kib: dict[str, int | None] = field(default_factory=dict)
    """VmHWM of each server answering checks, since it started (not just this run)."""
    ext_authz: dict[str, int] | None = None
    """Envoy's ext_authz counters' increase over the run (setups with ext_authz)."""
    gateway: GatewayMetrics | None = None
    """All gateway processes' own metrics, added up, increase over the run."""
    checks_by_process: list[int] = field(default_factory=list)
    checks_wait_for_io: bool = False
    """Copied from the setup: check wall times overlap (see `Setup.checks_wait_for_io`)."""
    invalid_reasons: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.invalid_reasons

    @property
    def gateway_rss_mib(self) -> float | None:
        values = list(self.peak_rss_kib.values())
        if not values or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) / 1024


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What one measurement does: `seconds` of load after `warmup_seconds` (0: none), at
    saturation or (`think_ms`) at a fixed rate; `pools` = (warmup, measured) WPT pools."""

    kind: Literal["max", "rate"]
    seconds: int
    warmup_seconds: int = 0
    think_ms: float | None = None
    offered_rate: float | None = None
    pools: tuple[WptPool | None, WptPool | None] = (None, None)


def measure(setup: Setup, load: Load, plan: RunPlan, round_number: int) -> Measurement:
    """Warm up (not measured), then run wrk and read everything around it."""
    warmup = None
    if plan.warmup_seconds:
        command = _command(setup, load, plan, plan.warmup_seconds, plan.pools[0])
        warmup = run_wrk(command, plan.warmup_seconds)
    command = _command(setup, load, plan, plan.seconds, plan.pools[1])
    counters_before = _ext_authz_counters(setup)
    metrics_before = [probes.gateway_metrics(port) for port in setup.metrics_ports]
    started = time.monotonic()
    meter = CpuMeter(setup.pids())
    result = run_wrk(command, plan.seconds)
    used = meter.used()
    elapsed = time.monotonic() - started
    metrics = [
        reading.since(before[worker])
        for port, before in zip(setup.metrics_ports, metrics_before, strict=True)
        for worker, reading in probes.gateway_metrics(port).items()
    ]
    m = Measurement(
        setup.name,
        round_number,
        plan.kind,
        result,
        warmup=warmup,
        offered_rate=plan.offered_rate,
        # wrk's load phase, not its start-up (loading a pool): what the % figures are of.
        cpu=cpu_per_request(used, result.requests, min(result.seconds, elapsed)),
        peak_rss_kib={
            s.name: probes.memory_kib(s.process.process.pid)
            for s in setup.check_servers
            if s.process is not None and s.process.process is not None
        },
        gateway=sum(metrics[1:], metrics[0]) if metrics else None,
        checks_by_process=[g.checks for g in metrics],
        checks_wait_for_io=setup.checks_wait_for_io,
    )
    if counters_before is not None:
        after = probes.ext_authz_counters(setup.ports.admin, setup.stat_prefix)
        m.ext_authz = {k: after[k] - counters_before[k] for k in after}
    m.invalid_reasons = invalid_reasons(m, setup.decision_cache)
    return m


def _ext_authz_counters(setup: Setup) -> dict[str, int] | None:
    if not setup.has_ext_authz:
        return None
    return probes.ext_authz_counters(setup.ports.admin, setup.stat_prefix)


def _command(
    setup: Setup, load: Load, plan: RunPlan, seconds: int, pool: WptPool | None
) -> list[str]:
    return wrk_command(
        load, setup.url, seconds, headers=setup.headers, pool=pool, think_ms=plan.think_ms
    )


# --- validity ------------------------------------------------------------------------------


def invalid_reasons(m: Measurement, decision_cache: bool | None) -> list[str]:
    """Why a run does not measure what it claims to (empty: valid).

    Any run: a non-2xx answer, a socket error, a WPT sent twice. With ext_authz: a
    non-`ok` ext_authz counter, or fewer `ok` than requests (requests that skipped the
    check). With gateways (`decision_cache` not None): fewer checks than requests, a
    decision cache looked up without one configured or hit too rarely with one, and with
    several gateway processes, one of them left (nearly) idle.
    """
    run = m.run
    reasons = []
    if run.reused_tokens:
        reasons.append(
            f"WPT pool exhausted: {run.reused_tokens} requests reused a token (raise --pool-rate)"
        )
    if run.non_2xx:
        reasons.append(f"{run.non_2xx} non-2xx responses")
    errors = sum(run.socket_errors.values())
    if errors:
        reasons.append(f"{errors} socket errors {run.socket_errors}")
    if m.ext_authz is not None:
        failures = {k: v for k, v in m.ext_authz.items() if k != "ok" and v}
        if failures:
            reasons.append(f"Envoy ext_authz counters {failures}")
        if m.ext_authz.get("ok", 0) < run.requests:
            reasons.append(f"ext_authz ok={m.ext_authz.get('ok', 0)} for {run.requests} requests")
    if m.gateway is not None and decision_cache is not None:
        if m.gateway.checks < run.requests:
            reasons.append(f"the gateway counted {m.gateway.checks} checks for {run.requests}")
        reasons += cache_reasons(m.gateway, decision_cache)
        reasons += spread_reasons(m.checks_by_process)
    return reasons


def cache_reasons(metrics: GatewayMetrics, decision_cache: bool) -> list[str]:
    """A cached gateway whose cache missed, or a plain one that looked it up, measured the
    wrong thing."""
    lookups = metrics.cache_hits + metrics.cache_misses
    if not decision_cache:
        return [f"{lookups} decision cache lookups without a cache"] if lookups else []
    if metrics.cache_hits < CACHE_MIN_HIT_RATE * max(lookups, 1):
        return [
            f"decision cache hit {metrics.cache_hits} of {lookups} lookups "
            f"(expected at least {CACHE_MIN_HIT_RATE:.0%})"
        ]
    return []


def spread_reasons(checks_by_process: Sequence[int]) -> list[str]:
    """With several gateway processes, each must have answered its part of the checks."""
    if len(checks_by_process) < 2:
        return []
    floor = sum(checks_by_process) / len(checks_by_process) * MIN_SHARE_OF_EVEN_SPLIT
    if min(checks_by_process) < floor:
        return [f"checks unevenly spread over the gateway processes: {list(checks_by_process)}"]
    return []
