"""wrk, the load generator: its command lines, its Lua scripts, and reading its output.

Two kinds of run: at saturation (`-c` connections, each sending its next request as soon
as the previous answer arrives) and at an approximately fixed offered rate
(`bench/fixed_rate.lua`: each connection waits a think time between an answer and its next
request). wrk has no rate option; see `think_time_ms` for what the approximation means.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
WRK = "/usr/bin/wrk"
WPT_POOL_SCRIPT = BENCH_DIR / "wpt_pool.lua"
FIXED_RATE_SCRIPT = BENCH_DIR / "fixed_rate.lua"
WRK_MARGIN_SECONDS = 60
"""wrk stops itself after its duration; this covers its start (loading a pool) and end."""


class WrkFailed(Exception):
    """wrk exited non-zero or printed something this module cannot read."""


@dataclass(frozen=True, slots=True)
class Load:
    """The wrk settings every run shares."""

    threads: int
    connections: int


@dataclass(frozen=True, slots=True)
class WptPool:
    """A file of pre-minted WPTs, one a line, and the WIT they bind (sent with each)."""

    path: Path
    wit: str


@dataclass(frozen=True, slots=True)
class WrkResult:
    command: list[str]
    requests: int
    seconds: float
    """How long wrk's load phase lasted (its `N requests in T`), without its start-up."""
    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: dict[str, int]
    pool_threads: list[dict[str, int]]
    """Per wrk thread, from the Lua pool scripts: tokens, built, reused (empty: no pool)."""
    output: str

    @property
    def reused_tokens(self) -> int:
        return sum(thread["reused"] for thread in self.pool_threads)


_DURATION_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNIT_MS = {unit: factor * 1000 for unit, factor in _DURATION_UNIT_S.items()}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTALS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_POOL_LINE = re.compile(r"^wpt_pool: thread=(\d+) tokens=(\d+) built=(\d+) reused=(\d+)$", re.M)
_SOCKET_ERROR_NAMES = ("connect", "read", "write", "timeout")


def parse_wrk(command: list[str], output: str) -> WrkResult:
    """Read wrk's `--latency` report (and the pool scripts' per-thread lines).

    Raises WrkFailed when the totals or the request rate are missing. Lines wrk prints only
    when non-zero (non-2xx responses, socket errors) read as 0 when absent.
    """
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    totals = _TOTALS.search(output)
    if rps is None or totals is None:
        raise WrkFailed(f"could not read wrk's output:\n{output}")
    percentiles = {
        float(pct): float(value) * _UNIT_MS[unit]
        for pct, value, unit in _PERCENTILE.findall(output)
    }
    errors = _SOCKET_ERRORS.search(output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        command=command,
        requests=int(totals.group(1)),
        seconds=float(totals.group(2)) * _DURATION_UNIT_S[totals.group(3)],
        requests_per_second=float(rps.group(1)),
        p50_ms=percentiles.get(50.0),
        p99_ms=percentiles.get(99.0),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(_SOCKET_ERROR_NAMES, map(int, errors.groups()), strict=True))
        if errors
        else dict.fromkeys(_SOCKET_ERROR_NAMES, 0),
        pool_threads=[
            dict(zip(("thread", "tokens", "built", "reused"), map(int, m), strict=True))
            for m in _POOL_LINE.findall(output)
        ],
        output=output,
    )


def think_time_ms(connections: int, rate: float) -> float:
    """The pause after each answer that makes `connections` send `rate` requests/s in all.

    Each connection then sends one request per (think time + latency), so the achieved
    rate is `rate` only while latency is small next to the think time, and falls short by
    latency / (think time + latency) otherwise. It is a closed loop still: a connection
    waiting for a slow answer sends nothing meanwhile, so a stall is sampled by a few slow
    requests instead of by every request that would have arrived during it (coordinated
    omission); p99 at this rate understates what an open-loop client would see.
    """
    if rate <= 0 or connections < 1:
        raise ValueError("a fixed rate needs a positive rate and at least one connection")
    return connections / rate * 1000


def pool_size(rate: float, seconds: float, margin: float, threads: int) -> int:
    """WPTs for `seconds` at `rate` requests/s with `margin`; at least one per wrk thread."""
    return max(threads, math.ceil(rate * seconds * margin))


def wrk_command(
    load: Load,
    url: str,
    seconds: int,
    *,
    headers: Mapping[str, str] | None = None,
    pool: WptPool | None = None,
    think_ms: float | None = None,
) -> list[str]:
    """wrk's argv: fixed `headers`, a WPT `pool` (its WIT and one fresh WPT per request),
    and/or a `think_ms` pause per connection (fixed-rate run)."""
    command = [WRK, f"-t{load.threads}", f"-c{load.connections}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    pool_args = [str(pool.path), str(load.threads), pool.wit] if pool is not None else []
    if think_ms is not None:
        # The first delay of each connection is spread over one think time, so the
        # connections do not send in lockstep.
        per_thread = math.ceil(load.connections / load.threads)
        script_args = [f"{think_ms:.3f}", str(per_thread), *pool_args]
        return [*command, "-s", str(FIXED_RATE_SCRIPT), url, "--", *script_args]
    if pool is not None:
        return [*command, "-s", str(WPT_POOL_SCRIPT), url, "--", *pool_args]
    return [*command, url]


def run_wrk(command: list[str], seconds: int) -> WrkResult:
    """Run wrk (bounded in time) and read its report; WrkFailed if it fails."""
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=seconds + WRK_MARGIN_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkFailed(f"wrk did not finish within {exc.timeout:.0f} s") from None
    if result.returncode != 0:
        raise WrkFailed(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return parse_wrk(command, result.stdout)


def wrk_version() -> str:
    result = subprocess.run(
        [WRK, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r"wrk (\S+)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"
