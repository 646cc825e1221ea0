"""What the bench prints: progress while it runs, then one table per group of figures, the
headline gateway CPU per check, the ratios, and every invalid run with its reasons.

Each cell is a median over the valid rounds with its range in parentheses (just the value
when there is one round, or all rounds agree).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from measure import Measurement
from setups import SETUP_NAMES, Setup
from summary import Kind, RatioSummary, Spread, server_cpu_us

CPU_TARGET_US = 450
"""The issue's target for the gateway's CPU per full check."""
SETUP_COLUMN = max(len(name) for name in SETUP_NAMES)
"""Wide enough for every setup's name (`gateway_outbound`)."""


def cell(value: Spread | None, digits: int = 0) -> str:
    """`median (low-high)`, or just the median when the range is empty; `-` for none."""
    if value is None:
        return "-"
    median = f"{value.median:.{digits}f}"
    low, high = f"{value.low:.{digits}f}", f"{value.high:.{digits}f}"
    return median if low == high else f"{median} ({low}-{high})"


def _row(name: str, cells: Sequence[str], widths: Sequence[int]) -> str:
    parts = [f"{name:<{SETUP_COLUMN}}"] + [f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)]
    return " ".join(parts).rstrip()


def _table(title: str, headings: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> None:
    """A title, then one line per setup; each column as wide as its widest cell, plus 2."""
    if not rows:
        return
    widths = [
        max(len(heading), *(len(cells[i]) for _, cells in rows)) + 1
        for i, heading in enumerate(headings)
    ]
    print(f"\n{title}")
    print(_row("setup", headings, widths))
    for name, cells in rows:
        print(_row(name, cells, widths))


def print_header(
    info: Mapping[str, Any],
    settings: Mapping[str, Any],
    workdir: Path,
    skipped: Mapping[str, str],
) -> None:
    print("wimse-authz benchmark")
    print(f"  machine  {info['cores']} cores ({info['usable_cores']} usable), {info['platform']}")
    print(f"  python   {info['python']}")
    print(f"  envoy    {info['envoy']}  (--concurrency 1)")
    print(f"  wrk      {info['wrk']}")
    print(
        f"  load     wrk -t{settings['threads']} -c{settings['connections']} "
        f"-d{settings['duration']}s --latency, warmup {settings['warmup']} s before each "
        f"saturation run, {settings['rounds']} round(s)"
    )
    if "pyvoy" in info:
        pyvoy = f"{info['pyvoy']} on envoy {info['pyvoy_envoy']}"
        print(f"  pyvoy    {pyvoy} (the gateway side of the *_pyvoy setups)")
    print(f"  setups   {', '.join(settings['setups'])}")
    print_skipped(skipped)
    print(f"  files    {workdir}", flush=True)


def print_skipped(skipped: Mapping[str, str]) -> None:
    """One line per reason, naming the setups left out for it."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        print(f"  SKIPPED  {', '.join(names)}: {reason}", flush=True)


def print_progress(m: Measurement) -> None:
    """One line per run as it finishes."""
    r = m.run
    cpu = m.cpu.gateway_side_us if m.cpu else None
    side = f", gateway side {cpu:.0f} us/request" if cpu is not None else ""
    rate = f" at {m.offered_rate:.0f} req/s offered" if m.offered_rate is not None else ""
    p99 = "-" if r.p99_ms is None else f"{r.p99_ms:.2f}"
    verdict = "valid" if m.valid else "INVALID: " + "; ".join(m.invalid_reasons)
    print(
        f"  {m.setup}{rate}: {r.requests_per_second:.0f} req/s, p99 {p99} ms{side}  [{verdict}]",
        flush=True,
    )


Summaries = Mapping[tuple[str, Kind], Mapping[str, Spread | None]]
"""Per (setup, kind): each figure's spread (summary.summarize)."""


def _valid_count(runs: Sequence[Measurement]) -> str:
    return f"{sum(m.valid for m in runs)}/{len(runs)}"


def print_results(
    setups: Sequence[Setup],
    runs: Mapping[tuple[str, Kind], Sequence[Measurement]],
    summaries: Summaries,
    ratios: Sequence[RatioSummary],
    load: str,
) -> None:
    """Every table, in the order the README explains them."""
    measured = [s for s in setups if (s.name, "max") in summaries]
    print_saturation(measured, runs, summaries, load)
    print_cpu(measured, runs, summaries)
    print_stages(measured, summaries)
    print_fixed_rate([s for s in setups if (s.name, "rate") in summaries], runs, summaries)
    print_ratios(ratios)
    print_headline(measured, summaries)


def print_saturation(
    setups: Sequence[Setup],
    runs: Mapping[tuple[str, Kind], Sequence[Measurement]],
    summaries: Summaries,
    load: str,
) -> None:
    rows = []
    for setup in setups:
        figures = summaries[(setup.name, "max")]
        rows.append(
            (
                setup.name,
                [
                    _valid_count(runs[(setup.name, "max")]),
                    cell(figures["req_s"]),
                    cell(figures["p50_ms"], 2),
                    cell(figures["p99_ms"], 2),
                ],
            )
        )
    _table(
        f"throughput and latency at saturation ({load}); median (min-max) over valid rounds",
        ["valid", "req/s", "p50 ms", "p99 ms"],
        rows,
    )


def print_cpu(
    setups: Sequence[Setup],
    runs: Mapping[tuple[str, Kind], Sequence[Measurement]],
    summaries: Summaries,
) -> None:
    rows = []
    for setup in setups:
        figures = summaries[(setup.name, "max")]
        rows.append(
            (
                setup.name,
                [
                    cell(figures["envoy_cpu_us"]),
                    cell(figures["gateway_cpu_us"]),
                    cell(figures["wrk_cpu_us"]),
                    _median(figures["envoy_cpu_percent"]),
                    _median(figures["gateway_cpu_percent"]),
                    _median(figures["gateway_rss_mib"]),
                    " + ".join(x.name for x in setup.servers) or "-",
                ],
            )
        )
    _table(
        "CPU per request at saturation, us (and % of one core); memory of the check servers"
        " (peak RSS; process trees: PSS summed)",
        ["envoy", "gateway side", "wrk", "envoy %", "gw %", "RSS MiB", "gateway side is"],
        rows,
    )
    for setup in setups:
        if len(setup.servers) > 1:
            shares = server_cpu_us(runs[(setup.name, "max")])
            parts = ", ".join(f"{name} {cell(value)}" for name, value in shares.items())
            print(f"  {setup.name} gateway side by process, us per request: {parts}")


def print_stages(setups: Sequence[Setup], summaries: Summaries) -> None:
    rows = []
    for setup in setups:
        figures = summaries[(setup.name, "max")]
        if figures["in_gateway_us"] is None:
            continue
        rows.append(
            (
                setup.name,
                [
                    cell(figures["verify_us"]),
                    cell(figures["evaluate_us"]),
                    cell(figures["in_gateway_us"]),
                    cell(figures["gateway_cpu_us"]),
                    cell(figures["outside_check_us"]),
                ],
            )
        )
    _table(
        "inside the gateway at saturation: mean us per check (wall time, from its /metrics),"
        " and the rest of its CPU",
        ["verify", "evaluate", "in gateway", "CPU per check", "outside the check (at least)"],
        rows,
    )


def print_fixed_rate(
    setups: Sequence[Setup],
    runs: Mapping[tuple[str, Kind], Sequence[Measurement]],
    summaries: Summaries,
) -> None:
    rows = []
    for setup in setups:
        figures = summaries[(setup.name, "rate")]
        rows.append(
            (
                setup.name,
                [
                    _valid_count(runs[(setup.name, "rate")]),
                    cell(figures["offered_req_s"]),
                    cell(figures["req_s"]),
                    cell(figures["p50_ms"], 2),
                    cell(figures["p99_ms"], 2),
                    cell(figures["gateway_cpu_us"]),
                ],
            )
        )
    _table(
        "at a fixed offered rate (wrk with think time; an approximation, see bench/README.md)",
        ["valid", "offered req/s", "achieved req/s", "p50 ms", "p99 ms", "gateway side us"],
        rows,
    )


def _median(value: Spread | None) -> str:
    return "-" if value is None else f"{value.median:.0f}"


def print_headline(setups: Sequence[Setup], summaries: Summaries) -> None:
    """The figure the issue's CPU target is about, per gateway setup."""
    gateways = [s for s in setups if s.decision_cache is not None]
    if not gateways:
        return
    print(
        f"\nGATEWAY CPU PER CHECK, us: every gateway-side process, at saturation "
        f"(target for the full check: <= {CPU_TARGET_US})"
    )
    for s in gateways:
        value = summaries[(s.name, "max")]["gateway_cpu_us"]
        parts = " + ".join(x.name for x in s.servers)
        if s.outbound is not None:
            # Not the check the target is about: policy and one signature, no verification.
            parts += "; the outbound check"
        print(f"  {s.name:<{SETUP_COLUMN}} {cell(value):<22} ({parts})")


def print_ratios(ratios: Sequence[RatioSummary]) -> None:
    if not ratios:
        return
    print("\nratios, each computed within a round, then median (min-max) over the rounds")
    print(f"{'ratio':<26} {'of':<20} {'value':<24} {'rounds':<7} target")
    for r in ratios:
        of = {"req_s": "req/s", "p99_ms": "p99"}[r.ratio.figure]
        of += " at fixed rate" if r.ratio.kind == "rate" else " at saturation"
        rounds = f"{r.spread.count if r.spread else 0}/{len(r.per_round)}"
        line = f"{r.ratio.name:<26} {of:<20} {cell(r.spread, 3):<24} {rounds:<7} {r.ratio.target}"
        print(line.rstrip())


def print_invalid(all_runs: Sequence[Measurement]) -> None:
    invalid = [m for m in all_runs if not m.valid]
    if not invalid:
        print("\nevery run valid (see bench/README.md, 'The invalid-run rule')")
        return
    print(f"\n{len(invalid)} INVALID run(s), left out of every figure and ratio above:")
    for m in invalid:
        print(f"  round {m.round} {m.setup} ({m.kind}): " + "; ".join(m.invalid_reasons))
