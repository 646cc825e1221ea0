"""Throughput of wimse-authz behind Envoy, next to two yardsticks measured in the same run.

Four setups, each its own Envoy (`--concurrency 1`) answering with a `direct_response`,
so only the authorization path differs:

  envoy           no auth filter at all
  jwt_authn       Envoy's own jwt_authn verifying one ES256 JWT (the same token every request)
  gateway         ext_authz -> wimse-authz: a WIT plus a fresh, single-use WPT per request
  gateway_cached  the same, with the gateway's decision cache on

Each is driven by the same `wrk` settings after a warmup. The numbers that travel between
machines are the ratios gateway/jwt_authn and gateway/envoy; gateway_cached/gateway and the
gateways' own mean check time say what the decision cache saves. See bench/README.md.

    .venv/bin/python bench/run.py [--duration 10] [--connections 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import resource
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from authz.devtools import stack
from authz.devtools.keys import generate_private_jwk, public_jwk
from authz.devtools.mint import mint_wit, mint_wpt, sign_jws

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
WPT_POOL_SCRIPT = BENCH_DIR / "wpt_pool.lua"
WRK = "/usr/bin/wrk"
PATH = "/api/hello"  # the sample policy lets the frontend workload GET /api/*
CALLER = "frontend"
WIT_HEADER = "Workload-Identity-Token"
# The gateway refuses a WPT whose `exp` is more than 300 s ahead; the pool must outlive the
# warmup plus the measured run, so those are capped well below this.
WPT_TTL = 290
MAX_RUN_SECONDS = 240
POOL_MARGIN = 1.2
DIRECT_RESPONSE: dict[str, Any] = {"status": 200, "body": {"inline_string": "ok\n"}}
JWT_ISSUER = "https://bench.example"
JWT_AUDIENCE = "bench"
EXT_AUTHZ_STATS = ("ok", "denied", "error", "invalid", "failure_mode_allowed")
EXT_AUTHZ_STAT_PREFIX = "http.ingress.ext_authz."  # HCM stat_prefix `ingress`
GATEWAY_SETUPS = ("gateway", "gateway_cached")
DECISION_CACHE: dict[str, Any] = {"entries": 10_000, "max_ttl_seconds": 30}
"""gateway_cached's `decision_cache` setting; the plain gateway has none (the default)."""
CACHE_MIN_HIT_RATE = 0.99
"""Below this, gateway_cached did not measure the cache: its run is invalid. Every request
differs only in its WPT, so all lookups hit but one per `max_ttl_seconds` (entry expiry)."""
CHECK_DURATION_METRIC = "wimse_authz_check_duration_seconds"
CACHE_LOOKUPS_METRIC = "wimse_authz_decision_cache_lookups_total"


class BenchAborted(Exception):
    """A setup failed to start or its sanity request was not answered 200."""


# --- settings and environment ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    duration: int
    connections: int
    threads: int
    warmup: int
    pool_rate: int

    def wrk_args(self, seconds: int) -> list[str]:
        return [
            WRK,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds}s",
            "--latency",
        ]

    def pool_size(self, seconds: int) -> int:
        # At least one token per wrk thread: the Lua script refuses an empty slice.
        return max(self.threads, math.ceil(self.pool_rate * seconds * POOL_MARGIN))


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before each run; 0: none")
    parser.add_argument(
        "--pool-rate",
        type=int,
        default=8000,
        help="requests/s the WPT pool is sized for (x (duration + warmup) x 1.2)",
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.pool_rate) < 1:
        parser.error("--duration, --connections, --threads and --pool-rate must be positive")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    if args.connections < args.threads:
        parser.error("wrk needs at least one connection per thread")
    if args.duration + args.warmup > MAX_RUN_SECONDS:
        parser.error(
            f"duration + warmup must stay under {MAX_RUN_SECONDS} s (WPTs live {WPT_TTL} s)"
        )
    return Settings(args.duration, args.connections, args.threads, args.warmup, args.pool_rate)


def _first_line(argv: list[str], pattern: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    match = re.search(pattern, result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def versions() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "wrk": _first_line([WRK, "--version"], r"wrk (\S+)"),
        "envoy": _first_line([stack.envoy_binary(), "--version"], r"version: (\S+)"),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
    }


# --- Envoy configurations ------------------------------------------------------------------


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = _hcm(config)["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def gateway_envoy_config(ports: stack.Ports) -> dict[str, Any]:
    """deploy/envoy/gateway.yaml with each route answering itself instead of proxying.

    The per-route ext_authz settings (`context_extensions` {wimse.service: echo}) stay, so
    the gateway sees exactly what it sees in production; only the upstream hop is gone.
    """
    config = stack.envoy_config(ports)
    for route in _routes(config):
        route.pop("route", None)
        route["direct_response"] = copy.deepcopy(DIRECT_RESPONSE)  # no YAML anchors
    return config


def envoy_only_config(ports: stack.Ports) -> dict[str, Any]:
    """The gateway setup minus ext_authz: same listener, HCM options and other filters."""
    config = gateway_envoy_config(ports)
    hcm = _hcm(config)
    hcm["http_filters"] = [
        f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.ext_authz"
    ]
    for route in _routes(config):
        route.pop("typed_per_filter_config", None)
    clusters = config["static_resources"]["clusters"]
    config["static_resources"]["clusters"] = [c for c in clusters if c["name"] != "wimse_authz"]
    return config


def jwt_authn_config(ports: stack.Ports, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """envoy_only_config plus jwt_authn (before the router) requiring one ES256 provider.

    No `jwt_cache_config`: Envoy then verifies the signature on every request, which is
    the work the gateway also does for each fresh WPT.
    """
    config = envoy_only_config(ports)
    jwt_filter = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3"
            ".JwtAuthentication",
            "providers": {
                "bench": {
                    "issuer": JWT_ISSUER,
                    "audiences": [JWT_AUDIENCE],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "forward": False,
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }
    filters = _hcm(config)["http_filters"]
    filters.insert(len(filters) - 1, jwt_filter)  # the router stays last
    return config


def mint_bench_jwt() -> tuple[str, dict[str, Any]]:
    """One ES256 JWT for jwt_authn, and the JWKS that verifies it."""
    key = generate_private_jwk("ES256")
    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": "bench-client",
        "iat": now,
        "exp": now + 3600,
    }
    token = sign_jws(claims, key, {"typ": "JWT", "kid": key["kid"]})
    return token, {"keys": [public_jwk(key)]}


# --- setups --------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    ports: stack.Ports
    envoy_yaml: Path
    request_headers: dict[str, str] = field(default_factory=dict)
    """Fixed headers sent on every request (wrk -H); the gateway's come from the Lua pool."""
    gateway_yaml: Path | None = None
    diagnostics_port: int | None = None
    """The gateway's `/metrics` port (gateway setups only)."""
    decision_cache: bool = False
    processes: list[stack.ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.ports.origin + PATH

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {p.name} log ({p.log_path}) ---\n{p.log_tail()}" for p in self.processes
        )


def gateway_setup(workdir: Path, name: str, decision_cache: bool) -> Setup:
    """Envoy with ext_authz in front of its own gateway process, which serves `/metrics`.

    Each gateway accepts WPTs for its own origin only, so the two gateway setups differ in
    nothing but `decision_cache` (and their ports); each gets a pool minted for it.
    """
    ports, diagnostics_port = stack.Ports.free(), stack.free_port()
    overrides: dict[str, Any] = {
        "logging": {"level": "warning"},
        "diagnostics": {"address": f"127.0.0.1:{diagnostics_port}"},
    }
    if decision_cache:
        overrides["decision_cache"] = DECISION_CACHE
    return Setup(
        name,
        ports,
        stack.write_yaml(workdir / f"envoy-{name}.yaml", gateway_envoy_config(ports)),
        gateway_yaml=stack.write_yaml(
            workdir / f"{name}.yaml", stack.gateway_config(workdir, ports, overrides=overrides)
        ),
        diagnostics_port=diagnostics_port,
        decision_cache=decision_cache,
    )


def build_setups(workdir: Path) -> list[Setup]:
    envoy_ports, jwt_ports = stack.Ports.free(), stack.Ports.free()
    token, jwks = mint_bench_jwt()
    return [
        Setup(
            "envoy",
            envoy_ports,
            stack.write_yaml(workdir / "envoy-envoy.yaml", envoy_only_config(envoy_ports)),
        ),
        Setup(
            "jwt_authn",
            jwt_ports,
            stack.write_yaml(workdir / "envoy-jwt_authn.yaml", jwt_authn_config(jwt_ports, jwks)),
            request_headers={"Authorization": f"Bearer {token}"},
        ),
        gateway_setup(workdir, "gateway", decision_cache=False),
        gateway_setup(workdir, "gateway_cached", decision_cache=True),
    ]


def _wait_for_port(process: stack.ManagedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.running():
            raise BenchAborted(f"{process.name} exited during startup")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchAborted(f"{process.name} did not listen on port {port} within {timeout:.0f} s")


def start_setup(setup: Setup, workdir: Path) -> None:
    """Start the gateway (if any) before Envoy, so Envoy's first health check finds it."""
    logs = workdir / "logs"
    try:
        if setup.gateway_yaml is not None:
            gateway = stack.gateway_process(setup.gateway_yaml, logs / f"{setup.name}.log")
            setup.processes.append(gateway.start())
            _wait_for_port(gateway, setup.ports.gateway, timeout=30)
        envoy = stack.envoy_process(setup.envoy_yaml, logs / f"envoy-{setup.name}.log")
        setup.processes.append(envoy.start())
        stack.wait_for_http(f"http://127.0.0.1:{setup.ports.admin}/ready", timeout=30)
        if setup.gateway_yaml is not None:
            # A public path through ext_authz: 200 only once Envoy reaches the gateway.
            stack.wait_for_http(f"{setup.ports.origin}/healthz", timeout=30)
    except (BenchAborted, TimeoutError) as exc:
        raise BenchAborted(f"{setup.name} did not start: {exc}\n{setup.log_tails()}") from None


def sanity_check(setup: Setup, headers: Mapping[str, str]) -> None:
    """One request through the setup must answer 200 before it is worth measuring."""
    request = urllib.request.Request(setup.url, headers=dict(headers))  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            status, reason = response.status, ""
    except urllib.error.HTTPError as exc:
        status, reason = exc.code, exc.headers.get("x-wimse-authz-reason", "")
    except OSError as exc:
        message = f"{setup.name}: sanity request failed: {exc}\n{setup.log_tails()}"
        raise BenchAborted(message) from None
    if status != 200:
        detail = f" (x-wimse-authz-reason: {reason})" if reason else ""
        raise BenchAborted(
            f"{setup.name}: sanity request answered {status}{detail}, expected 200\n"
            + setup.log_tails()
        )


def stop_all(setups: Sequence[Setup]) -> None:
    # Envoy before the gateway, as the demo does: nothing then calls a draining gateway.
    for setup in setups:
        for process in reversed(setup.processes):
            process.stop()


# --- the WPT pool --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    key: dict[str, Any]
    wit: str


def make_caller(workdir: Path) -> Caller:
    identities = stack.ensure_identities(workdir)
    key = identities.workloads[CALLER]
    wit = mint_wit(identities.issuer, identities.workload_id(CALLER), key, ttl=3600)
    return Caller(key, wit)


def gateway_headers(caller: Caller, ports: stack.Ports) -> dict[str, str]:
    wpt = mint_wpt(caller.key, caller.wit, ports.origin + PATH, ttl=WPT_TTL)
    return {WIT_HEADER: caller.wit, "Authorization": f"WPT {wpt}"}


def write_pool(path: Path, caller: Caller, audience: str, count: int) -> None:
    with path.open("w", encoding="ascii") as pool:
        for _ in range(count):
            pool.write(mint_wpt(caller.key, caller.wit, audience, ttl=WPT_TTL) + "\n")


# --- wrk -----------------------------------------------------------------------------------


@dataclass
class WrkResult:
    command: list[str]
    requests: int
    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int
    socket_errors: dict[str, int]
    pool_threads: list[dict[str, int]]
    output: str


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_POOL_LINE = re.compile(r"^wpt_pool: thread=(\d+) tokens=(\d+) built=(\d+) reused=(\d+)$", re.M)


def _search_int(pattern: str, text: str, default: int = 0) -> int:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else default


def parse_wrk(command: list[str], output: str) -> WrkResult:
    percentiles = {
        float(pct): float(value) * _UNIT_MS[unit]
        for pct, value, unit in _PERCENTILE.findall(output)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise BenchAborted(f"could not read wrk's output:\n{output}")
    errors = _SOCKET_ERRORS.search(output)
    names = ("connect", "read", "write", "timeout")
    return WrkResult(
        command=command,
        requests=_search_int(r"(\d+) requests in", output),
        requests_per_second=float(rps.group(1)),
        p50_ms=percentiles.get(50.0),
        p99_ms=percentiles.get(99.0),
        # wrk prints this line only when there is at least one such response.
        non_2xx=_search_int(r"Non-2xx or 3xx responses: (\d+)", output),
        socket_errors={n: int(v) for n, v in zip(names, errors.groups(), strict=True)}
        if errors
        else dict.fromkeys(names, 0),
        pool_threads=[
            dict(zip(("thread", "tokens", "built", "reused"), map(int, m), strict=True))
            for m in _POOL_LINE.findall(output)
        ],
        output=output,
    )


def wrk_command(
    settings: Settings, setup: Setup, seconds: int, pool: tuple[Path, str] | None
) -> list[str]:
    command = settings.wrk_args(seconds)
    for name, value in setup.request_headers.items():
        command += ["-H", f"{name}: {value}"]
    if pool is None:
        return [*command, setup.url]
    pool_file, wit = pool
    return [
        *command,
        "-s",
        str(WPT_POOL_SCRIPT),
        setup.url,
        "--",
        str(pool_file),
        str(settings.threads),
        wit,
    ]


def run_wrk(command: list[str], seconds: int) -> WrkResult:
    # Bounded: wrk stops itself after `seconds`; the margin covers startup and the pool load.
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if result.returncode != 0:
        raise BenchAborted(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return parse_wrk(command, result.stdout)


# --- Envoy admin ---------------------------------------------------------------------------


def ext_authz_stats(admin_port: int) -> dict[str, int]:
    """Envoy's ext_authz counters for the `ingress` HCM (0 for a counter not created yet)."""
    url = f"http://127.0.0.1:{admin_port}/stats?filter=^http\\.ingress\\.ext_authz\\."
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    counters = dict.fromkeys(EXT_AUTHZ_STATS, 0)
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        short = name.removeprefix(EXT_AUTHZ_STAT_PREFIX)
        if short in counters and value.strip().isdigit():
            counters[short] = int(value)
    return counters


# --- the gateway's own metrics ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayMetrics:
    """The gateway's account of the checks it answered, from its Prometheus `/metrics`.

    `check_seconds` sums `wimse_authz_check_duration_seconds`: the time from receiving a
    CheckRequest to having its answer, without gRPC transport or queueing before it.
    """

    checks: int
    check_seconds: float
    cache_hits: int
    cache_misses: int

    def since(self, earlier: GatewayMetrics) -> GatewayMetrics:
        """The increase from `earlier` to this reading."""
        return GatewayMetrics(
            self.checks - earlier.checks,
            self.check_seconds - earlier.check_seconds,
            self.cache_hits - earlier.cache_hits,
            self.cache_misses - earlier.cache_misses,
        )

    @property
    def mean_check_us(self) -> float | None:
        return self.check_seconds / self.checks * 1e6 if self.checks else None


def gateway_metrics(diagnostics_port: int) -> GatewayMetrics:
    """Read the check-duration histogram and the decision-cache lookup counters.

    Raises BenchAborted if one is missing: a renamed metric must not read as zero.
    """
    url = f"http://127.0.0.1:{diagnostics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    wanted = {
        (f"{CHECK_DURATION_METRIC}_count", ""): "checks",
        (f"{CHECK_DURATION_METRIC}_sum", ""): "check_seconds",
        (CACHE_LOOKUPS_METRIC, "hit"): "cache_hits",
        (CACHE_LOOKUPS_METRIC, "miss"): "cache_misses",
    }
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field_name = wanted.get((sample.name, sample.labels.get("result", "")))
            if field_name is not None:
                found[field_name] = sample.value
    missing = [
        f'{name}{{result="{label}"}}' if label else name
        for (name, label), field_name in wanted.items()
        if field_name not in found
    ]
    if missing:
        raise BenchAborted(f"{url} lacks {', '.join(missing)}")
    return GatewayMetrics(
        checks=int(found["checks"]),
        check_seconds=found["check_seconds"],
        cache_hits=int(found["cache_hits"]),
        cache_misses=int(found["cache_misses"]),
    )


# --- CPU accounting ------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a running process, from /proc (None where unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of finished child processes: around one wrk run, that is wrk's own."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """Where the CPU went during one run, as % of one core: tells who saturates first."""

    processes: Mapping[str, int]
    started: float = field(default_factory=time.monotonic)
    wrk_before: float = field(default_factory=children_cpu_seconds)
    before: dict[str, float | None] = field(init=False)

    def __post_init__(self) -> None:
        self.before = {name: process_cpu_seconds(pid) for name, pid in self.processes.items()}

    def percent(self) -> dict[str, float | None]:
        wall = time.monotonic() - self.started
        result: dict[str, float | None] = {}
        for name, pid in self.processes.items():
            start, end = self.before[name], process_cpu_seconds(pid)
            result[name] = None if start is None or end is None else (end - start) / wall * 100
        result["wrk"] = (children_cpu_seconds() - self.wrk_before) / wall * 100
        return result


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Measurement:
    setup: str
    warmup: WrkResult | None
    run: WrkResult
    ext_authz: dict[str, int] | None = None
    """Counter increase over the measured run (gateway setups only)."""
    gateway_metrics: GatewayMetrics | None = None
    """Increase of the gateway's own metrics over the measured run (gateway setups only)."""
    invalid_reasons: list[str] = field(default_factory=list)
    cpu_percent: dict[str, float | None] = field(default_factory=dict)
    """CPU used during the measured run, % of one core, per process (envoy, gateway, wrk)."""

    @property
    def valid(self) -> bool:
        return not self.invalid_reasons


def measure(
    settings: Settings,
    setup: Setup,
    pools: tuple[tuple[Path, str], tuple[Path, str]] | None = None,
) -> Measurement:
    """Warm up, then measure; `pools` = (warmup pool, measured pool) for the gateway."""
    warmup = None
    if settings.warmup:
        print(f"  {setup.name}: warmup {settings.warmup} s", flush=True)
        warmup_pool = pools[0] if pools else None
        command = wrk_command(settings, setup, settings.warmup, warmup_pool)
        warmup = run_wrk(command, settings.warmup)
    before = ext_authz_stats(setup.ports.admin) if pools else None
    port = setup.diagnostics_port
    metrics_before = gateway_metrics(port) if port is not None else None
    print(f"  {setup.name}: measuring {settings.duration} s", flush=True)
    command = wrk_command(settings, setup, settings.duration, pools[1] if pools else None)
    cpu = CpuMeter({p.name: p.process.pid for p in setup.processes if p.process is not None})
    result = run_wrk(command, settings.duration)
    measurement = Measurement(setup.name, warmup, result, cpu_percent=cpu.percent())
    if before is not None:
        after = ext_authz_stats(setup.ports.admin)
        measurement.ext_authz = {k: after[k] - before[k] for k in after}
    if port is not None and metrics_before is not None:
        measurement.gateway_metrics = gateway_metrics(port).since(metrics_before)
    measurement.invalid_reasons = invalid_reasons(measurement, setup.decision_cache)
    return measurement


def invalid_reasons(m: Measurement, decision_cache: bool = False) -> list[str]:
    """Why a run's throughput does not measure what it claims to (empty: valid).

    With `decision_cache`, the run must also show the cache answering (nearly) every check.
    """
    reasons = []
    exhausted = [t for t in m.run.pool_threads if t["reused"]]
    if exhausted:
        replays = sum(t["reused"] for t in exhausted)
        reasons.append(f"WPT pool exhausted: {replays} requests reused a token (raise --pool-rate)")
    if m.run.non_2xx:
        reasons.append(f"{m.run.non_2xx} non-2xx responses")
    errors = sum(m.run.socket_errors.values())
    if errors:
        reasons.append(f"{errors} socket errors {m.run.socket_errors}")
    failures = {k: v for k, v in (m.ext_authz or {}).items() if k != "ok" and v}
    if failures:
        reasons.append(f"Envoy ext_authz counters {failures}")
    if m.gateway_metrics is not None:
        reasons += cache_reasons(m.gateway_metrics, decision_cache)
    return reasons


def cache_reasons(metrics: GatewayMetrics, decision_cache: bool) -> list[str]:
    """A cached setup whose cache missed, or a plain one that looked it up, measured the
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


# --- reporting -----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_header(info: Mapping[str, Any], settings: Settings, workdir: Path) -> None:
    print("wimse-authz benchmark")
    print(f"  machine  {info['cores']} cores ({info['usable_cores']} usable), {info['platform']}")
    print(f"  python   {info['python']}")
    print(f"  envoy    {info['envoy']}  (--concurrency 1)")
    print(f"  wrk      {info['wrk']}")
    print(
        f"  load     {shlex.join(settings.wrk_args(settings.duration)[1:])}, "
        f"warmup {settings.warmup} s before each run"
    )
    print(f"  files    {workdir}", flush=True)


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_table(measurements: Sequence[Measurement]) -> None:
    print(
        f"\n{'setup':<14} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8}"
        f"  | CPU % of one core: {'envoy':>5} {'gateway':>7} {'wrk':>4}"
    )
    for m in measurements:
        r, cpu = m.run, m.cpu_percent
        print(
            f"{m.setup:<14} {r.requests_per_second:>8.0f} {_ms(r.p50_ms):>7} "
            f"{_ms(r.p99_ms):>7} {r.non_2xx:>8}  | {'':>18} {_cpu(cpu.get('envoy')):>5} "
            f"{_cpu(cpu.get('gateway')):>7} {_cpu(cpu.get('wrk')):>4}"
        )


def print_gateway_details(m: Measurement) -> None:
    if m.ext_authz is not None:
        counters = ", ".join(f"{k}={v}" for k, v in m.ext_authz.items())
        print(f"\n{m.setup} ext_authz counters over the measured run: {counters}")
    for thread in m.run.pool_threads:
        print(
            f"  wrk thread {thread['thread']}: {thread['built']} requests built from "
            f"{thread['tokens']} tokens, {thread['reused']} reused"
        )
    g = m.gateway_metrics
    if g is not None:
        mean = "-" if g.mean_check_us is None else f"{g.mean_check_us:.0f} us"
        print(
            f"  gateway /metrics: {g.checks} checks, mean {mean} each; "
            f"decision cache {g.cache_hits} hits, {g.cache_misses} misses"
        )


RATIOS = (
    ("gateway", "jwt_authn"),
    ("gateway", "envoy"),
    ("gateway_cached", "gateway"),
)
"""Throughput ratios (numerator, denominator), named `numerator/denominator`."""


def ratios(measurements: Mapping[str, Measurement]) -> dict[str, float | None]:
    """Throughput ratios, None where either side of one is invalid."""
    result: dict[str, float | None] = {}
    for top, base in ((measurements[a], measurements[b]) for a, b in RATIOS):
        ok = top.valid and base.valid and base.run.requests_per_second > 0
        result[f"{top.setup}/{base.setup}"] = (
            top.run.requests_per_second / base.run.requests_per_second if ok else None
        )
    return result


def check_means(measurements: Mapping[str, Measurement]) -> dict[str, float | None]:
    """Each gateway's mean time per check (us) over its measured run; None if invalid."""
    result: dict[str, float | None] = {}
    for name in GATEWAY_SETUPS:
        m = measurements[name]
        g = m.gateway_metrics
        result[name] = g.mean_check_us if m.valid and g is not None else None
    return result


def print_verdict(
    measurements: Mapping[str, Measurement],
    result: Mapping[str, float | None],
    means: Mapping[str, float | None],
) -> None:
    for m in measurements.values():
        if not m.valid:
            print(f"\n{m.setup} run is INVALID: " + "; ".join(m.invalid_reasons))
    if not measurements["gateway"].valid:
        print("no ratios: the gateway did not answer every request with 2xx")
        return
    print()
    for name, value in result.items():
        invalid = [s for s in name.split("/") if not measurements[s].valid]
        shown = (
            f"{value:.3f}" if value is not None else f"n/a ({' and '.join(invalid)} run invalid)"
        )
        print(f"{name:<24} {shown}  (throughput)")
    print("\nmean check time inside the gateway (wimse_authz_check_duration_seconds sum/count):")
    plain = means["gateway"]
    for name, mean in means.items():
        if mean is None:
            print(f"  {name:<22} n/a ({name} run invalid)")
            continue
        versus = ""
        if name != "gateway" and plain:
            versus = f"  ({mean - plain:+.0f} us, {mean / plain:.3f} x gateway)"
        print(f"  {name:<22} {mean:>5.0f} us{versus}")


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # default=str: paths (the Envoy binary is a Path) are written as text.
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


# --- main ----------------------------------------------------------------------------------


@dataclass
class Minting:
    tokens: int
    seconds: float


def mint_pools(
    workdir: Path, caller: Caller, settings: Settings, setup: Setup
) -> tuple[tuple[tuple[Path, str], tuple[Path, str]], Minting]:
    """Separate warmup and measured pools: the warmup never eats the measured run's tokens."""
    audience = setup.ports.origin + PATH
    sizes = (settings.pool_size(settings.warmup), settings.pool_size(settings.duration))
    paths = (workdir / f"wpt-pool-{setup.name}-warmup.txt", workdir / f"wpt-pool-{setup.name}.txt")
    print(
        f"minting {sum(sizes)} WPTs for {setup.name} ({sizes[0]} warmup + {sizes[1]} measured)...",
        flush=True,
    )
    started = time.perf_counter()
    for path, size in zip(paths, sizes, strict=True):
        write_pool(path, caller, audience, size)
    minting = Minting(sum(sizes), time.perf_counter() - started)
    print(
        f"minted {minting.tokens} WPTs in {minting.seconds:.1f} s "
        f"({minting.seconds / minting.tokens * 1e6:.0f} us each)",
        flush=True,
    )
    return ((paths[0], caller.wit), (paths[1], caller.wit)), minting


def run(settings: Settings, workdir: Path, report: dict[str, Any]) -> int:
    caller = make_caller(workdir)
    setups = build_setups(workdir)
    report["setups"] = {s.name: {"ports": asdict(s.ports), "url": s.url} for s in setups}
    try:
        print("\nstarting the four setups...", flush=True)
        for setup in setups:
            start_setup(setup, workdir)
            report["setups"][setup.name]["processes"] = [p.args for p in setup.processes]
        for setup in setups:
            headers = setup.request_headers or gateway_headers(caller, setup.ports)
            sanity_check(setup, headers)
        print("sanity check: one request per setup answered 200", flush=True)
        measurements = measure_all(settings, setups, workdir, caller, report)
    finally:
        stop_all(setups)
        for pool in workdir.glob("wpt-pool*.txt"):
            pool.unlink()  # tens of MB; nothing to learn from them afterwards
    return summarize(measurements, report)


def measure_all(
    settings: Settings,
    setups: Sequence[Setup],
    workdir: Path,
    caller: Caller,
    report: dict[str, Any],
) -> dict[str, Measurement]:
    by_name = {s.name: s for s in setups}
    measurements = {}
    for name in ("envoy", "jwt_authn"):
        measurements[name] = measure(settings, by_name[name])
    for name in GATEWAY_SETUPS:
        # Minted right before each use: the tokens' 290 s lifetime starts here, so each
        # pool only has to outlive its own run.
        pools, minting = mint_pools(workdir, caller, settings, by_name[name])
        # `minting` (the plain gateway's pool) keeps the name it had before gateway_cached.
        report["minting" if name == "gateway" else f"minting_{name}"] = asdict(minting)
        measurements[name] = measure(settings, by_name[name], pools)
    return measurements


def summarize(measurements: Mapping[str, Measurement], report: dict[str, Any]) -> int:
    print_table(list(measurements.values()))
    for name in GATEWAY_SETUPS:
        print_gateway_details(measurements[name])
    result, means = ratios(measurements), check_means(measurements)
    print_verdict(measurements, result, means)
    report["measurements"] = {
        name: {**asdict(m), "valid": m.valid} for name, m in measurements.items()
    }
    report["ratios"] = result
    report["check_mean_us"] = means
    # The yardstick ratios need only `gateway`; an invalid gateway_cached run voids just
    # its own numbers (shown n/a), as an invalid envoy or jwt_authn run does.
    report["valid"] = measurements["gateway"].valid
    return 0 if report["valid"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    workdir = RESULTS_DIR / stamp
    workdir.mkdir(parents=True)
    info = versions()
    print_header(info, settings, workdir)
    report: dict[str, Any] = {"started": stamp, "settings": asdict(settings), "versions": info}
    json_path = RESULTS_DIR / f"{stamp}.json"
    try:
        status = run(settings, workdir, report)
    except BenchAborted as exc:
        print(f"\nABORTED: {exc}")
        report["aborted"] = str(exc)
        status = 2
    except KeyboardInterrupt:
        print("\ninterrupted; all processes stopped")
        report["aborted"] = "interrupted"
        status = 130
    write_json(json_path, report)
    print(f"\nresults: {json_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
