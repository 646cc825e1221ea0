"""The benchmark's own logic (bench/*.py): reading wrk, /proc, Envoy's admin and the
gateway's /metrics; CPU per request; the invalid-run rules; medians, ranges and per-round
ratios. Nothing here starts Envoy, wrk or a gateway: the inputs are the texts they print
(the gateway's /metrics come from the gateway's own `Metrics`)."""

from __future__ import annotations

import math
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from authz.config import parse_config
from authz.devtools import stack
from authz.devtools.egress import EGRESS_AUTHZ_CLUSTER
from authz.observability.metrics import Metrics
from authz.observability.worker_metrics import SupervisorMetrics
from authz.outbound.envoy_routes import egress_envoy_problems
from loadgen import (
    FIXED_RATE_SCRIPT,
    WPT_POOL_SCRIPT,
    Load,
    WptPool,
    WrkFailed,
    WrkResult,
    parse_wrk,
    pool_size,
    think_time_ms,
    wrk_command,
)
from measure import Cpu, Measurement, cpu_per_request, invalid_reasons
from probes import (
    GatewayMetrics,
    ProbeFailed,
    cpu_seconds_from_stat,
    ext_authz_counters_from_stats,
    gateway_metrics_from_text,
    healthy_endpoints_from_clusters,
    peak_rss_kib_from_status,
    pss_kib_from_rollup,
)
from report import cell
from run import parse_settings
from setups import (
    BUILDERS,
    CHECK_CLUSTER,
    SETUP_NAMES,
    WIT_HEADER,
    Server,
    SetupFailed,
    Workspace,
    egress_bench_config,
    ext_authz_envoy_config,
    make_callers,
    runnable,
)
from summary import (
    RATIOS,
    Kind,
    RoundRuns,
    Spread,
    fixed_rate_basis,
    ratio_in_round,
    server_cpu_us,
    spread,
    summarize,
    summarize_ratios,
)

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:40000/api/hello
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.50ms    3.10ms  48.00ms   80.00%
    Req/Sec   650.00     40.00   700.00     70.00%
  Latency Distribution
     50%   12.29ms
     75%   14.00ms
     90%   16.50ms
     99%    1.20s
  13042 requests in 10.01s, 1.23MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 7
Requests/sec:   1302.90
Transfer/sec:    125.00KB
wpt_pool: thread=0 tokens=48000 built=6636 reused=0
wpt_pool: thread=1 tokens=48000 built=6411 reused=3
"""


def wrk_result(
    requests: int = 10_000, rps: float = 1000.0, p99_ms: float = 5.0, **changes: Any
) -> WrkResult:
    fields: dict[str, Any] = {
        "command": ["wrk"],
        "requests": requests,
        "seconds": 10.0,
        "requests_per_second": rps,
        "p50_ms": 1.0,
        "p99_ms": p99_ms,
        "non_2xx": 0,
        "socket_errors": dict.fromkeys(("connect", "read", "write", "timeout"), 0),
        "pool_threads": [],
        "output": "",
    }
    return WrkResult(**{**fields, **changes})


def gateway_numbers(checks: int = 10_000, **changes: Any) -> GatewayMetrics:
    fields: dict[str, Any] = {
        "checks": checks,
        "check_seconds": checks * 500e-6,
        "verify_seconds": checks * 200e-6,
        "evaluate_seconds": checks * 250e-6,
        "cache_hits": 0,
        "cache_misses": 0,
    }
    return GatewayMetrics(**{**fields, **changes})


def workspace(directory: Path, replay_capacity: int = 1000) -> Workspace:
    identities = stack.ensure_identities(directory)
    return Workspace(directory, make_callers(identities), replay_capacity, identities)


def measurement(
    setup: str = "gateway",
    *,
    kind: Kind = "max",
    rps: float = 1000.0,
    p99_ms: float = 5.0,
    valid: bool = True,
    round_number: int = 1,
    **changes: Any,
) -> Measurement:
    m = Measurement(setup, round_number, kind, wrk_result(rps=rps, p99_ms=p99_ms))
    for name, value in changes.items():
        setattr(m, name, value)
    if not valid:
        m.invalid_reasons = ["made invalid by the test"]
    return m


# --- wrk -----------------------------------------------------------------------------------


def test_wrk_report_is_read_with_units_counts_and_pool_lines() -> None:
    result = parse_wrk(["wrk"], WRK_OUTPUT)
    assert result.requests == 13042
    assert result.seconds == pytest.approx(10.01)
    assert result.requests_per_second == pytest.approx(1302.90)
    assert result.p50_ms == pytest.approx(12.29)
    assert result.p99_ms == pytest.approx(1200.0)  # "1.20s"
    assert result.non_2xx == 7
    assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 5}
    assert result.pool_threads[1] == {"thread": 1, "tokens": 48000, "built": 6411, "reused": 3}
    assert result.reused_tokens == 3


def test_wrk_lines_printed_only_when_nonzero_read_as_zero() -> None:
    quiet = "\n".join(
        line
        for line in WRK_OUTPUT.splitlines()
        if not line.strip().startswith(("Socket errors", "Non-2xx", "wpt_pool"))
    )
    result = parse_wrk(["wrk"], quiet)
    assert result.non_2xx == 0
    assert sum(result.socket_errors.values()) == 0
    assert result.pool_threads == []
    assert result.p99_ms == pytest.approx(1200.0)


def test_wrk_output_without_totals_is_refused() -> None:
    with pytest.raises(WrkFailed):
        parse_wrk(["wrk"], WRK_OUTPUT.replace("Requests/sec:", "Requests per second:"))


def test_wrk_command_uses_the_pool_script_at_saturation_and_the_rate_script_with_think_time(
    tmp_path: Path,
) -> None:
    pool = WptPool(tmp_path / "pool.txt", "the-wit")
    load = Load(threads=2, connections=5)
    url = "http://127.0.0.1:1/api/hello"
    saturated = wrk_command(load, url, 10, pool=pool)
    assert saturated[-7:] == ["-s", str(WPT_POOL_SCRIPT), url, "--", str(pool.path), "2", "the-wit"]
    rated = wrk_command(load, url, 10, pool=pool, think_ms=12.5)
    script_args = rated[rated.index("--") + 1 :]
    assert rated[rated.index("-s") + 1] == str(FIXED_RATE_SCRIPT)
    # 5 connections over 2 threads: a thread has at most 3 first pauses to spread.
    assert script_args == ["12.500", "3", str(pool.path), "2", "the-wit"]
    fixed = wrk_command(load, url, 10, headers={"Authorization": "Bearer x"}, think_ms=20)
    assert fixed[fixed.index("-H") + 1] == "Authorization: Bearer x"
    assert fixed[fixed.index("--") + 1 :] == ["20.000", "3"]
    assert "-s" not in wrk_command(load, url, 10)


def test_think_time_spreads_the_rate_over_the_connections() -> None:
    assert think_time_ms(16, 800.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="positive rate"):
        think_time_ms(16, 0.0)


def test_pool_size_has_a_margin_and_one_token_per_thread_at_least() -> None:
    assert pool_size(1000, 10, 1.2, threads=2) == 12_000
    assert pool_size(0.1, 1, 1.2, threads=4) == 4


# --- /proc, Envoy admin, /metrics ------------------------------------------------------------


def test_cpu_seconds_are_utime_plus_stime_after_an_awkward_command_name() -> None:
    # Fields 14 and 15 (utime, stime) = 250 and 50 ticks; the name holds ") (" and spaces.
    rest = "S 1 1 1 0 -1 4194560 100 0 0 0 250 50 7 9 20 0 5 0 100 1000 200"
    stat = f"4242 (python3 (x) y) {rest}\n"
    assert cpu_seconds_from_stat(stat, clock_ticks=100) == pytest.approx(3.0)


def test_pss_is_read_from_smaps_rollup() -> None:
    rollup = (
        "00-ff ---p 00000000 00:00 0   [rollup]\nRss:  1764 kB\nPss:  831 kB\nPss_Dirty: 112 kB\n"
    )
    assert pss_kib_from_rollup(rollup) == 831
    assert pss_kib_from_rollup("Rss: 1 kB\n") is None


def test_peak_rss_is_read_from_vmhwm() -> None:
    status = "Name:\tpython3\nVmPeak:\t  900000 kB\nVmHWM:\t  107520 kB\nVmRSS:\t  100000 kB\n"
    assert peak_rss_kib_from_status(status) == 107520
    assert peak_rss_kib_from_status("Name:\tkthreadd\n") is None


def test_ext_authz_counters_default_to_zero_and_ignore_other_stats() -> None:
    text = (
        "http.ingress.ext_authz.ok: 13042\n"
        "http.ingress.ext_authz.denied: 3\n"
        "http.egress.ext_authz.error: 9\n"
        "http.ingress.downstream_rq_total: 13050\n"
    )
    assert ext_authz_counters_from_stats(text) == {
        "ok": 13042,
        "denied": 3,
        "error": 0,
        "invalid": 0,
        "failure_mode_allowed": 0,
    }
    assert ext_authz_counters_from_stats(text, "egress")["error"] == 9
    assert ext_authz_counters_from_stats(text, "egress")["ok"] == 0


def test_only_endpoints_envoy_calls_healthy_count() -> None:
    text = (
        "wimse_authz::127.0.0.1:1001::health_flags::healthy\n"
        "wimse_authz::127.0.0.1:1002::health_flags::/failed_active_hc\n"
        "wimse_authz::127.0.0.1:1001::cx_active::1\n"
        "other::127.0.0.1:1003::health_flags::healthy\n"
    )
    assert healthy_endpoints_from_clusters(text, CHECK_CLUSTER) == {"127.0.0.1:1001"}
    pipe = f"{EGRESS_AUTHZ_CLUSTER}::/run/bench/frontend.sock::health_flags::healthy\n"
    assert healthy_endpoints_from_clusters(pipe, EGRESS_AUTHZ_CLUSTER) == {
        "/run/bench/frontend.sock"
    }


def test_a_servers_endpoints_are_named_as_envoy_names_them(tmp_path: Path) -> None:
    def server(**where: Any) -> Server:
        return Server("gateway", lambda: stack.ManagedProcess("x", [], tmp_path), True, **where)

    assert server(ports=(1001, 1002)).endpoints == ["127.0.0.1:1001", "127.0.0.1:1002"]
    assert server(socket=tmp_path / "a.sock").endpoints == [str(tmp_path / "a.sock")]


def test_gateway_metrics_are_read_from_what_the_gateway_exports() -> None:
    metrics = Metrics()
    for _ in range(4):
        metrics.check_duration.observe(0.0005)
        metrics.count_stage_times(verify_us=200, evaluate_us=250)
    metrics.count_cache_lookup(hit=True)
    metrics.count_cache_lookup(hit=False)
    [(worker, read)] = gateway_metrics_from_text(generate_latest(metrics.registry).decode()).items()
    assert worker == ""
    assert read.checks == 4
    assert read.mean_check_us == pytest.approx(500)
    assert read.mean_verify_us == pytest.approx(200)
    assert read.mean_evaluate_us == pytest.approx(250)
    assert (read.cache_hits, read.cache_misses) == (1, 1)


def test_a_supervisors_metrics_are_read_per_worker() -> None:
    """`serve --workers N` exports each worker's samples with `worker="<index>"`."""
    workers = []
    for checks in (3, 5):
        metrics = Metrics()
        for _ in range(checks):
            metrics.check_duration.observe(0.001)
            metrics.count_stage_times(verify_us=100, evaluate_us=300)
        workers.append(generate_latest(metrics.registry).decode())
    supervisor = SupervisorMetrics(2)
    supervisor.collector.update(dict(enumerate(workers)))
    read = gateway_metrics_from_text(generate_latest(supervisor.registry).decode())
    assert {worker: m.checks for worker, m in read.items()} == {"0": 3, "1": 5}
    assert read["1"].mean_evaluate_us == pytest.approx(300)


def test_stage_times_no_check_recorded_are_unknown_not_zero() -> None:
    """Checks whose pipeline does not report stage times still count in the check-duration
    histogram: their stages show as `-`, their check time as measured."""
    outbound = gateway_numbers(verify_seconds=0.0, evaluate_seconds=0.0)
    assert outbound.mean_verify_us is None
    assert outbound.mean_evaluate_us is None
    assert outbound.mean_check_us == pytest.approx(500)
    summary = summarize([measurement(gateway=outbound)])
    assert summary["verify_us"] is None
    assert summary["in_gateway_us"] == Spread(500.0, 500.0, 500.0, 1)


def test_a_missing_gateway_metric_is_an_error_not_a_zero() -> None:
    text = generate_latest(Metrics().registry).decode()
    without_stages = "\n".join(
        line for line in text.splitlines() if "wimse_authz_check_stage_seconds" not in line
    )
    with pytest.raises(ProbeFailed, match='stage="verify"'):
        gateway_metrics_from_text(without_stages)


def test_gateway_metrics_of_two_processes_add_up_and_subtract() -> None:
    one, two = gateway_numbers(100), gateway_numbers(300, cache_hits=5)
    total = one + two
    assert total.checks == 400
    assert total.mean_check_us == pytest.approx(500)
    back = total.since(one)
    assert (back.checks, back.cache_hits) == (300, 5)
    assert back.check_seconds == pytest.approx(two.check_seconds)


# --- CPU per request -------------------------------------------------------------------------


def test_cpu_per_request_adds_every_gateway_side_process() -> None:
    seconds: dict[str, float | None] = {
        "envoy": 2.0,
        "gateway-1": 5.0,
        "gateway-2": 4.0,
        "redis": 1.0,
        "wrk": 0.5,
    }
    cpu = cpu_per_request(seconds, requests=10_000, wall_seconds=10.0)
    assert cpu.envoy_us == pytest.approx(200)
    assert cpu.gateway_side_us == pytest.approx(1000)
    assert cpu.wrk_us == pytest.approx(50)
    assert cpu.gateway_side_percent == pytest.approx(100)


def test_cpu_per_request_is_unknown_when_a_process_could_not_be_read() -> None:
    cpu = cpu_per_request({"envoy": 1.0, "gateway": None, "wrk": 0.1}, 100, 1.0)
    assert cpu.gateway_side_us is None
    assert cpu.envoy_us is not None
    assert cpu_per_request({"envoy": 1.0, "wrk": 0.1}, 100, 1.0).gateway_side_us is None


# --- the invalid-run rules -------------------------------------------------------------------


def counters(**changes: int) -> dict[str, int]:
    return {"ok": 10_000, "denied": 0, "error": 0, "invalid": 0, "failure_mode_allowed": 0} | (
        changes
    )


def test_a_clean_gateway_run_is_valid() -> None:
    m = measurement(ext_authz=counters(), gateway=gateway_numbers(), checks_by_process=[10_000])
    assert invalid_reasons(m, decision_cache=False) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"run": wrk_result(non_2xx=1)}, "1 non-2xx"),
        (
            {"run": wrk_result(socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 2})},
            "socket errors",
        ),
        (
            {"run": wrk_result(pool_threads=[{"thread": 0, "tokens": 5, "built": 9, "reused": 4}])},
            "WPT pool exhausted: 4",
        ),
        ({"ext_authz": counters(denied=1)}, "ext_authz counters {'denied': 1}"),
        ({"ext_authz": counters(ok=9_000)}, "ext_authz ok=9000 for 10000"),
        ({"gateway": gateway_numbers(9_999)}, "counted 9999 checks for 10000"),
        ({"gateway": gateway_numbers(cache_hits=10_000)}, "lookups without a cache"),
        ({"checks_by_process": [8_000, 2_000]}, "unevenly spread"),
    ],
)
def test_a_run_is_invalid_when(changes: dict[str, Any], expected: str) -> None:
    m = measurement(ext_authz=counters(), gateway=gateway_numbers(), checks_by_process=[10_000])
    for name, value in changes.items():
        setattr(m, name, value)
    reasons = invalid_reasons(m, decision_cache=False)
    assert len(reasons) == 1
    assert expected in reasons[0]


def test_a_cached_gateway_must_hit_its_cache_nearly_always() -> None:
    hits = measurement(gateway=gateway_numbers(cache_hits=9_999, cache_misses=1))
    assert invalid_reasons(hits, decision_cache=True) == []
    misses = measurement(gateway=gateway_numbers(cache_hits=9_000, cache_misses=1_000))
    assert "hit 9000 of 10000" in invalid_reasons(misses, decision_cache=True)[0]


def test_two_gateways_sharing_the_checks_evenly_enough_is_valid() -> None:
    m = measurement(gateway=gateway_numbers(), checks_by_process=[5_600, 4_400])
    assert invalid_reasons(m, decision_cache=False) == []


def test_setups_without_a_gateway_skip_the_gateway_rules() -> None:
    m = measurement("jwt_authn", gateway=None)
    assert invalid_reasons(m, decision_cache=None) == []


# --- summaries and ratios --------------------------------------------------------------------


def test_spread_is_median_and_range_of_the_values_present() -> None:
    assert spread([3.0, None, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, 3)
    assert spread([4.0, 1.0]) == Spread(2.5, 1.0, 4.0, 2)
    assert spread([None]) is None


def test_summaries_leave_invalid_runs_out() -> None:
    runs = [measurement(rps=100), measurement(rps=200), measurement(rps=10_000, valid=False)]
    summary = summarize(runs)
    assert summary["req_s"] == Spread(150.0, 100.0, 200.0, 2)


def test_outside_the_check_is_cpu_minus_check_time_unless_checks_overlap() -> None:
    cpu = Cpu({}, 200.0, 800.0, 50.0, 90.0, 100.0)
    alone = measurement(cpu=cpu, gateway=gateway_numbers())
    assert summarize([alone])["outside_check_us"] == Spread(300.0, 300.0, 300.0, 1)
    waiting = measurement(cpu=cpu, gateway=gateway_numbers(), checks_wait_for_io=True)
    assert summarize([waiting])["outside_check_us"] is None


def test_gateway_side_cpu_is_split_by_process() -> None:
    cpu = cpu_per_request({"envoy": 1.0, "gateway-1": 4.0, "redis": 1.0, "wrk": 0.1}, 1, 1.0)
    m = measurement(cpu=cpu)
    m.run = wrk_result(requests=10_000)
    assert server_cpu_us([m]) == {
        "gateway-1": Spread(400.0, 400.0, 400.0, 1),
        "redis": Spread(100.0, 100.0, 100.0, 1),
    }


def test_ratios_are_computed_within_each_round_then_summarised() -> None:
    # Round 1 is fast for both, round 2 slow for both: per round the ratio is 0.1 each
    # time, while the ratio of the medians (300/2000) would read 0.15.
    rounds: list[RoundRuns] = [
        {("gateway", "max"): measurement(rps=500), ("jwt_authn", "max"): measurement(rps=5000)},
        {("gateway", "max"): measurement(rps=100), ("jwt_authn", "max"): measurement(rps=1000)},
    ]
    (summary,) = [
        r for r in summarize_ratios(rounds, ["gateway", "jwt_authn"]) if r.ratio.figure == "req_s"
    ]
    assert summary.per_round == [pytest.approx(0.1), pytest.approx(0.1)]
    assert summary.spread is not None
    assert summary.spread.median == pytest.approx(0.1)


def test_a_ratio_is_missing_for_a_round_where_either_side_is_invalid() -> None:
    ratio = RATIOS[0]  # gateway/jwt_authn req/s
    runs: RoundRuns = {
        ("gateway", "max"): measurement(rps=500),
        ("jwt_authn", "max"): measurement("jwt_authn", rps=5000, valid=False),
    }
    assert ratio_in_round(ratio, runs) is None
    assert ratio_in_round(ratio, {("gateway", "max"): measurement(rps=500)}) is None


def test_p99_ratios_at_a_fixed_rate_use_the_rate_runs() -> None:
    (ratio,) = [r for r in RATIOS if r.name == "gateway/jwt_authn" and r.kind == "rate"]
    runs: RoundRuns = {
        ("gateway", "max"): measurement(p99_ms=100.0),
        ("jwt_authn", "max"): measurement(p99_ms=10.0),
        ("gateway", "rate"): measurement(kind="rate", p99_ms=6.0),
        ("jwt_authn", "rate"): measurement(kind="rate", p99_ms=2.0),
    }
    assert ratio_in_round(ratio, runs) == pytest.approx(3.0)


def test_ratios_of_setups_not_selected_are_left_out() -> None:
    names = {r.ratio.name for r in summarize_ratios([{}], ["gateway", "jwt_authn"])}
    assert names == {"gateway/jwt_authn"}


def test_the_fixed_rate_follows_gateway_or_else_the_first_full_check_setup() -> None:
    full = ["gateway", "gateway_es256", "gateway_2proc"]
    assert fixed_rate_basis(["jwt_authn", "gateway", "gateway_2proc"], full) == "gateway"
    assert fixed_rate_basis(["jwt_authn", "gateway_es256", "gateway_2proc"], full) == (
        "gateway_es256"
    )
    assert fixed_rate_basis(["envoy", "jwt_authn"], full) is None


def test_cells_show_a_range_only_when_there_is_one() -> None:
    assert cell(Spread(1294.4, 1200.0, 1350.2, 3)) == "1294 (1200-1350)"
    assert cell(Spread(0.114, 0.114, 0.114, 1), 3) == "0.114"
    assert cell(None) == "-"


# --- options and Envoy configuration ---------------------------------------------------------


def test_setups_are_selected_by_name_and_measured_in_the_fixed_order() -> None:
    settings = parse_settings(["--setups", "gateway_2proc,jwt_authn"])
    assert settings.setups == ("jwt_authn", "gateway_2proc")
    assert settings.rounds == 3
    with pytest.raises(SystemExit):
        parse_settings(["--setups", "gateway,nonsense"])


def test_the_replay_cache_has_room_for_every_wpt_a_pool_rate_allows_in_a_wpt_lifetime() -> None:
    settings = parse_settings(["--pool-rate", "8000"])
    assert settings.replay_capacity == math.ceil(8000 * 300 * 1.2)


def test_a_two_process_setup_lists_both_gateways_in_the_envoy_cluster() -> None:
    ports = stack.Ports(10000, 10001, 10002, 10003)
    config = ext_authz_envoy_config(ports, [10002, 10004])
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == CHECK_CLUSTER]
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [
        10002,
        10004,
    ]
    listener = config["static_resources"]["listeners"][0]
    routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"]
    assert all("direct_response" in r and "route" not in r for r in routes)


# --- the pyvoy setups (optional: they need .venv-pyvoy) ------------------------------------


def test_pyvoy_setups_are_skipped_with_the_reason_when_their_environment_is_absent(
    tmp_path: Path,
) -> None:
    missing = tmp_path / ".venv-pyvoy" / "bin" / "python"
    selected = ("jwt_authn", "noop_grpc", "noop_pyvoy", "gateway", "gateway_pyvoy")
    kept, skipped = runnable(selected, missing)
    assert kept == ("jwt_authn", "noop_grpc", "gateway")
    assert set(skipped) == {"noop_pyvoy", "gateway_pyvoy"}
    assert all(str(missing) in why and "setup_venv.sh" in why for why in skipped.values())


def test_every_setup_is_kept_when_the_pyvoy_environment_exists(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.touch()
    assert runnable(SETUP_NAMES, python) == (SETUP_NAMES, {})


def test_pyvoy_setups_are_selectable_and_measured_right_after_their_grpc_counterparts() -> None:
    settings = parse_settings(["--setups", "gateway_pyvoy,noop_pyvoy,gateway,noop_grpc,jwt_authn"])
    assert settings.setups == ("jwt_authn", "noop_grpc", "noop_pyvoy", "gateway", "gateway_pyvoy")
    assert {"noop_pyvoy", "gateway_pyvoy"} <= set(parse_settings([]).setups)


def test_pyvoy_setups_are_compared_with_grpc_aio_and_with_jwt_authn() -> None:
    selected = ["jwt_authn", "noop_grpc", "noop_pyvoy", "gateway", "gateway_pyvoy"]
    keys = {r.ratio.key for r in summarize_ratios([{}], selected)}
    assert {
        "gateway_pyvoy/gateway req_s",
        "noop_pyvoy/noop_grpc req_s",
        "gateway_pyvoy/jwt_authn req_s",
        "noop_pyvoy/jwt_authn req_s",
        "gateway_pyvoy/jwt_authn p99_ms at fixed rate",
    } <= keys
    without_pyvoy = {r.ratio.key for r in summarize_ratios([{}], ["jwt_authn", "gateway"])}
    assert not any("pyvoy" in key for key in without_pyvoy)


def test_the_two_process_gateway_is_serve_workers_2_behind_both_endpoints(tmp_path: Path) -> None:
    # The worker's port (the first free one + 1) can be taken by another test's server in
    # the moment between: the bench then refuses the setup (SetupFailed), and so may this.
    for attempt in range(5):
        try:
            setup = BUILDERS["gateway_2proc"](workspace(tmp_path / str(attempt), 123_456))
            break
        except SetupFailed:
            continue
    else:
        pytest.fail("no two consecutive free ports in five attempts")
    tmp_path = tmp_path / str(attempt)
    (server,) = setup.servers
    assert server.ports == (setup.ports.gateway, setup.ports.gateway + 1)
    assert setup.envoy_yaml.read_text().count("port_value: ") >= 2
    config = yaml.safe_load((tmp_path / "gateway_2proc.yaml").read_text())
    assert config["server"]["listeners"] == [{"address": f"127.0.0.1:{setup.ports.gateway}"}]
    assert "replay" not in config  # the workers share the supervisor's table, not Redis


def test_gateway_pyvoy_is_measured_like_gateway_with_the_same_gateway_configuration(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path, 123_456)
    plain, pyvoy = BUILDERS["gateway"](ws), BUILDERS["gateway_pyvoy"](ws)
    for flag in ("caller", "decision_cache", "full_check", "at_fixed_rate", "checks_wait_for_io"):
        assert getattr(pyvoy, flag) == getattr(plain, flag), flag
    (server,) = pyvoy.servers
    assert server.name == "pyvoy_gateway"
    assert (tmp_path / "gateway_pyvoy-bootstrap").is_dir()  # where serve.py writes Envoy's
    assert server.answers_checks
    assert server.ports == (pyvoy.ports.gateway,)
    assert server.metrics_port is not None  # stage times come from its /metrics

    def config(name: str) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        return loaded

    plain_config, pyvoy_config = config("gateway"), config("gateway_pyvoy")
    assert pyvoy_config["server"]["listeners"] == [{"address": f"127.0.0.1:{server.ports[0]}"}]
    assert pyvoy_config["diagnostics"] == {"address": f"127.0.0.1:{server.metrics_port}"}
    assert pyvoy_config["wpt"] == {"replay_cache_entries": 123_456}
    port_bound = {"server", "services", "diagnostics"}
    assert {k: v for k, v in pyvoy_config.items() if k not in port_bound} == {
        k: v for k, v in plain_config.items() if k not in port_bound
    }
    front = yaml.safe_load(pyvoy.envoy_yaml.read_text())
    assert front == ext_authz_envoy_config(pyvoy.ports, [pyvoy.ports.gateway])


def test_every_setup_builds_without_starting_anything(tmp_path: Path) -> None:
    """Building a setup writes its configurations only; a builder that no longer fits the
    `Setup`/`Server` shapes fails here rather than in the middle of a bench run."""
    ws = workspace(tmp_path)
    for name, build in BUILDERS.items():
        setup = build(ws)
        assert setup.name == name
        assert setup.envoy_yaml.exists()
        assert all(server.process is None for server in setup.servers)


# --- the outbound setup ----------------------------------------------------------------------


def validate_envoy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [stack.envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_outbound_setup_is_the_egress_envoy_asking_an_outbound_listener(
    tmp_path: Path,
) -> None:
    setup = BUILDERS["gateway_outbound"](workspace(tmp_path))
    # The app holds no key: its requests carry no credentials, fixed or pooled.
    assert setup.caller is None
    assert setup.headers == {}
    assert not {WIT_HEADER.lower(), "authorization"} & {h.lower() for h in setup.headers}
    assert (setup.decision_cache, setup.full_check, setup.at_fixed_rate) == (False, True, True)

    front = yaml.safe_load(setup.envoy_yaml.read_text())
    assert front == egress_bench_config(setup.ports, tmp_path / "outbound" / "frontend.sock")
    result = validate_envoy(setup.envoy_yaml)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (setup.check_cluster, setup.stat_prefix) == (EGRESS_AUTHZ_CLUSTER, "egress")
    listener = front["static_resources"]["listeners"][0]
    routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"]
    assert all("direct_response" in r and "route" not in r for r in routes)
    # The deploy file's per-route settings stay: the outbound check runs as deployed.
    assert setup.outbound is not None
    assert setup.outbound.context == {"wimse.service": "echo", "wimse.body": "forwarded"}

    (server,) = setup.servers
    assert server.answers_checks
    assert server.endpoints == [str(setup.outbound.socket)]
    assert stat.S_IMODE(setup.outbound.socket.parent.stat().st_mode) == 0o750
    assert setup.outbound.wit_file.read_text().count(".") == 2  # a compact JWS

    document = yaml.safe_load((tmp_path / "gateway_outbound.yaml").read_text())
    config = parse_config(document, "gateway_outbound.yaml", tmp_path)
    (outbound_listener,) = [x for x in config.server.listeners if x.mode == "outbound"]
    assert outbound_listener.address == f"unix:{setup.outbound.socket}"
    assert outbound_listener.workload == "frontend"
    assert config.diagnostics is not None
    assert config.diagnostics.address == f"127.0.0.1:{server.metrics_port}"
    # Envoy's ext_authz cluster is that listener, and each route sends what the WPT says.
    assert egress_envoy_problems(config, front) == []


def test_the_outbound_setup_is_measured_after_the_inbound_gateway_and_compared_with_it() -> None:
    settings = parse_settings(["--setups", "gateway_outbound,jwt_authn,gateway,envoy"])
    assert settings.setups == ("envoy", "jwt_authn", "gateway", "gateway_outbound")
    keys = {r.ratio.key for r in summarize_ratios([{}], settings.setups)}
    assert {
        "gateway_outbound/jwt_authn req_s",
        "gateway_outbound/envoy req_s",
        "gateway_outbound/gateway req_s",
        "gateway_outbound/jwt_authn p99_ms at fixed rate",
    } <= keys
