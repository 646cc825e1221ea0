"""Rounds summarised: per setup, the median and range (min-max) of each figure over its
valid runs; ratios computed within each round (both sides measured minutes apart, under
the same conditions), then summarised the same way."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from measure import Measurement

Kind = Literal["max", "rate"]


@dataclass(frozen=True, slots=True)
class Spread:
    """The median, lowest and highest of `count` values."""

    median: float
    low: float
    high: float
    count: int


def spread(values: Iterable[float | None]) -> Spread | None:
    """Summarise the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), len(present))


def _outside_check_us(m: Measurement) -> float | None:
    """Gateway-side CPU per request minus the wall time per check inside the gateway.

    A lower bound on the CPU spent outside the check (gRPC transport, the event loop,
    glue): a check's wall time is at least the CPU its thread spent on it, so subtracting
    it removes no less than the check's own CPU. Not when checks wait for I/O (None then):
    their wall times overlap, and subtracting them removes other checks' work too.
    """
    if m.checks_wait_for_io:
        return None
    cpu = m.cpu.gateway_side_us if m.cpu else None
    inside = m.gateway.mean_check_us if m.gateway else None
    return None if cpu is None or inside is None else cpu - inside


FIGURES: dict[str, Callable[[Measurement], float | None]] = {
    "req_s": lambda m: m.run.requests_per_second,
    "p50_ms": lambda m: m.run.p50_ms,
    "p99_ms": lambda m: m.run.p99_ms,
    "offered_req_s": lambda m: m.offered_rate,
    "envoy_cpu_us": lambda m: m.cpu.envoy_us if m.cpu else None,
    "gateway_cpu_us": lambda m: m.cpu.gateway_side_us if m.cpu else None,
    "wrk_cpu_us": lambda m: m.cpu.wrk_us if m.cpu else None,
    "envoy_cpu_percent": lambda m: m.cpu.envoy_percent if m.cpu else None,
    "gateway_cpu_percent": lambda m: m.cpu.gateway_side_percent if m.cpu else None,
    "gateway_rss_mib": lambda m: m.gateway_rss_mib,
    "verify_us": lambda m: m.gateway.mean_verify_us if m.gateway else None,
    "evaluate_us": lambda m: m.gateway.mean_evaluate_us if m.gateway else None,
    "in_gateway_us": lambda m: m.gateway.mean_check_us if m.gateway else None,
    "outside_check_us": _outside_check_us,
}
"""Every figure a measurement yields, by the name the JSON report uses."""


def summarize(measurements: Sequence[Measurement]) -> dict[str, Spread | None]:
    """Each figure over the valid measurements (one setup, one kind of run)."""
    valid = [m for m in measurements if m.valid]
    return {name: spread(figure(m) for m in valid) for name, figure in FIGURES.items()}


def server_cpu_us(measurements: Sequence[Measurement]) -> dict[str, Spread | None]:
    """CPU µs per request of each gateway-side process (not Envoy, not wrk), over the valid
    measurements: how a setup's gateway side divides between its processes."""
    valid = [m for m in measurements if m.valid and m.cpu is not None and m.run.requests]
    names = dict.fromkeys(
        name for m in valid if m.cpu for name in m.cpu.seconds if name not in ("envoy", "wrk")
    )
    return {name: spread(_per_request(m, name) for m in valid) for name in names}


def _per_request(m: Measurement, process: str) -> float | None:
    seconds = m.cpu.seconds.get(process) if m.cpu else None
    return None if seconds is None else seconds / m.run.requests * 1e6


@dataclass(frozen=True, slots=True)
class Ratio:
    """`top`'s figure divided by `base`'s, from runs of one `kind` in the same round."""

    top: str
    base: str
    figure: Literal["req_s", "p99_ms"]
    kind: Kind = "max"
    target: str = ""
    """The issue's target for it, as text ("≥ 0.30"); empty: none."""

    @property
    def name(self) -> str:
        return f"{self.top}/{self.base}"

    @property
    def key(self) -> str:
        """Unique among RATIOS; the JSON report's name for it."""
        return f"{self.name} {self.figure}" + (" at fixed rate" if self.kind == "rate" else "")


RATIOS = (
    Ratio("gateway", "jwt_authn", "req_s", target="≥ 0.30"),
    Ratio("gateway_2proc", "jwt_authn", "req_s", target="≥ 0.40 (stretch 0.50)"),
    Ratio("gateway_es256", "jwt_authn", "req_s"),
    Ratio("gateway_cached", "jwt_authn", "req_s"),
    Ratio("gateway_pyvoy", "jwt_authn", "req_s"),
    Ratio("gateway_outbound", "jwt_authn", "req_s"),
    Ratio("noop_grpc", "jwt_authn", "req_s"),
    Ratio("noop_pyvoy", "jwt_authn", "req_s"),
    Ratio("gateway", "envoy", "req_s"),
    Ratio("gateway_outbound", "envoy", "req_s"),
    Ratio("gateway_es256", "gateway", "req_s"),
    Ratio("gateway_2proc", "gateway", "req_s"),
    Ratio("gateway_cached", "gateway", "req_s"),
    Ratio("gateway_pyvoy", "gateway", "req_s"),
    Ratio("gateway_outbound", "gateway", "req_s"),
    Ratio("gateway_traced", "gateway", "req_s"),
    Ratio("noop_pyvoy", "noop_grpc", "req_s"),
    Ratio("gateway", "jwt_authn", "p99_ms"),
    Ratio("gateway", "jwt_authn", "p99_ms", "rate", target="≤ 3"),
    Ratio("gateway_es256", "jwt_authn", "p99_ms", "rate"),
    Ratio("gateway_2proc", "jwt_authn", "p99_ms", "rate"),
    Ratio("gateway_pyvoy", "jwt_authn", "p99_ms", "rate"),
    Ratio("gateway_outbound", "jwt_authn", "p99_ms", "rate"),
)


RoundRuns = Mapping[tuple[str, Kind], Measurement]
"""One round's measurements by (setup, kind)."""


def ratio_in_round(ratio: Ratio, runs: RoundRuns) -> float | None:
    """The ratio from one round; None if a side is missing or invalid, or its base is 0."""
    top, base = runs.get((ratio.top, ratio.kind)), runs.get((ratio.base, ratio.kind))
    if top is None or base is None or not (top.valid and base.valid):
        return None
    numerator, denominator = FIGURES[ratio.figure](top), FIGURES[ratio.figure](base)
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class RatioSummary:
    ratio: Ratio
    per_round: list[float | None]
    """In round order; None where the round had no valid pair."""
    spread: Spread | None


def summarize_ratios(rounds: Sequence[RoundRuns], selected: Iterable[str]) -> list[RatioSummary]:
    """Every ratio both of whose setups were selected, per round and summarised."""
    chosen = set(selected)
    result = []
    for ratio in RATIOS:
        if {ratio.top, ratio.base} <= chosen:
            values = [ratio_in_round(ratio, runs) for runs in rounds]
            result.append(RatioSummary(ratio, values, spread(values)))
    return result


def fixed_rate_basis(selected: Sequence[str], full_check: Iterable[str]) -> str | None:
    """The setup whose maximum throughput sets the fixed rate: `gateway` if selected, else
    the first selected full-check setup; None if there is none."""
    candidates = [name for name in selected if name in set(full_check)]
    if "gateway" in candidates:
        return "gateway"
    return candidates[0] if candidates else None
