"""Tracing as a trace backend sees it: each check is a span exported over OTLP/gRPC to a
real receiver (`authz/devtools/otlp_receiver.py`, decoding what it is sent with the OTLP protobuf
definitions), continuing the `traceparent` of the request Envoy checks, with the pipeline's
stages as child spans, the decision's id and reason as attributes, and never a token's bytes
or (unless configured) the user's subject."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.devtools.otlp_receiver import OtlpReceiver, ReceivedSpan, running_receiver
from authz.devtools.stack import Identities
from authz.errors import ConfigError
from authz.observability.logs import CheckContextFilter, JsonFormatter
from authz.observability.tracing import SPAN_NAME
from tests.e2e.stack import RunningStack, start_stack
from tests.support import GatewayHarness, expect_allowed

pytestmark = pytest.mark.e2e

INBOUND_STAGES = {"authenticate", "verify context", "build input", "evaluate policy"}


def tracing(receiver: OtlpReceiver, **settings: Any) -> dict[str, Any]:
    return {"otlp_endpoint": receiver.endpoint, "batch_delay_seconds": 0.2, **settings}


def traceparent(sampled: bool = True) -> tuple[str, str, str]:
    """A W3C `traceparent` for a new trace: (header value, trace id, parent span id)."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent}-{'01' if sampled else '00'}", trace_id, parent


def of_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.trace_id == trace_id]


def check_and_stages(
    receiver: OtlpReceiver, trace_id: str, stages: set[str] = INBOUND_STAGES
) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The check span of the trace and its children, once the receiver has them all."""
    spans = receiver.wait_for(lambda got: len(of_trace(got, trace_id)) >= 1 + len(stages))
    [check] = [span for span in of_trace(spans, trace_id) if span.name == SPAN_NAME]
    children = [span for span in of_trace(spans, trace_id) if span.name != SPAN_NAME]
    return check, children


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    yield from running_receiver()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    identity_dir: Path,
    identities: Identities,
    receiver: OtlpReceiver,
) -> Iterator[RunningStack]:
    running = start_stack(
        tmp_path_factory.mktemp("tracing"),
        identity_dir,
        identities,
        gateway_overrides={"tracing": tracing(receiver, service_name="authz-under-test")},
    )
    yield running
    running.stop()


def test_an_allowed_request_through_envoy_continues_its_trace(
    stack: RunningStack, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent = traceparent()
    answer = stack.request("/api/hello", {**stack.signed("/api/hello"), "traceparent": header})
    assert answer.status == 200, answer.body

    check, children = check_and_stages(receiver, trace_id)
    assert check.parent_span_id == parent, "the check continues the request's span"
    assert check.span.kind == check.span.SPAN_KIND_SERVER
    assert check.resource["service.name"] == "authz-under-test"
    attributes = check.attributes
    assert attributes["wimse.result"] == "allow"
    assert attributes["wimse.status"] == 200
    assert attributes["wimse.caller"] == "spiffe://demo.example/frontend"
    assert attributes["wimse.service"] == "echo"
    assert attributes["url.path"] == "/api/hello"
    assert len(attributes["wimse.decision_id"]) == 32
    assert {span.name for span in children} == INBOUND_STAGES
    assert {span.parent_span_id for span in children} == {check.span_id}
    # Stages run in order, inside the check.
    starts = sorted(children, key=lambda span: span.span.start_time_unix_nano)
    assert [span.name for span in starts] == [
        "authenticate",
        "verify context",
        "build input",
        "evaluate policy",
    ]
    assert check.span.start_time_unix_nano <= starts[0].span.start_time_unix_nano
    assert starts[-1].span.end_time_unix_nano <= check.span.end_time_unix_nano


def test_a_denial_carries_the_decision_id_and_reason_it_answered(
    stack: RunningStack, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent = traceparent()
    # `batch` holds no grant on the echo service.
    answer = stack.request(
        "/api/hello", {**stack.signed("/api/hello", "batch"), "traceparent": header}
    )
    assert answer.status == 403

    check, _ = check_and_stages(receiver, trace_id)
    assert check.parent_span_id == parent
    assert check.attributes["wimse.decision_id"] == json.loads(answer.body)["decision_id"]
    assert check.attributes["wimse.reason"] == "policy.denied"
    assert check.attributes["wimse.status"] == 403
    assert check.attributes["wimse.policy_reasons"]


def test_invalid_credentials_end_the_trace_after_authentication(
    stack: RunningStack, receiver: OtlpReceiver
) -> None:
    header, trace_id, _ = traceparent()
    headers = {**stack.signed("/api/hello"), "traceparent": header}
    headers["authorization"] = headers["authorization"][:-4] + "AAAA"
    answer = stack.request("/api/hello", headers)
    assert answer.status == 401

    check, children = check_and_stages(receiver, trace_id, {"authenticate"})
    reason = answer.headers["x-wimse-authz-reason"]
    assert check.attributes["wimse.reason"] == reason
    [authenticate] = children
    assert authenticate.name == "authenticate"
    # The stage that ended the check says why, by its reason code only.
    assert authenticate.span.status.code == authenticate.span.status.STATUS_CODE_ERROR
    assert authenticate.span.status.message == reason


def test_no_token_bytes_and_no_user_subject_reach_the_collector(
    stack: RunningStack, receiver: OtlpReceiver
) -> None:
    header, trace_id, _ = traceparent()
    txn = stack.txn_token(subject="user-5150")
    headers = {**stack.signed("/api/hello", txn_token=txn), "txn-token": txn}
    answer = stack.request("/api/hello", {**headers, "traceparent": header})
    assert answer.status in (200, 403), answer.body
    check, _ = check_and_stages(receiver, trace_id)
    assert check.attributes["wimse.txn.id"]
    assert "wimse.txn.sub" not in check.attributes

    exported = b"".join(receiver.raw_requests)
    for token in (headers["workload-identity-token"], headers["authorization"][4:], txn):
        for part in token.split("."):
            assert part.encode() not in exported, "a token's bytes reached the collector"
    assert b"user-5150" not in exported


def test_a_request_without_traceparent_starts_a_trace(
    stack: RunningStack, receiver: OtlpReceiver
) -> None:
    before = {span.trace_id for span in receiver.spans()}
    answer = stack.request("/api/hello", stack.signed("/api/hello"))
    assert answer.status == 200
    spans = receiver.wait_for(
        lambda got: any(s.name == SPAN_NAME and s.trace_id not in before for s in got)
    )
    [check] = [s for s in spans if s.name == SPAN_NAME and s.trace_id not in before]
    assert check.parent_span_id == ""


# --- in process: the settings --------------------------------------------------------


def traced_harness(
    harness: GatewayHarness, receiver: OtlpReceiver, **settings: Any
) -> GatewayHarness:
    return harness.rebuild(tracing=tracing(receiver, **settings))


def flush(traced: GatewayHarness) -> None:
    traced.gateway.runtime.tracing.shutdown()


def test_the_user_subject_is_added_only_when_configured(
    harness: GatewayHarness, receiver: OtlpReceiver
) -> None:
    traced = traced_harness(harness, receiver, include_user_subject=True)
    header, trace_id, _ = traceparent()
    txn = traced.txn_token(subject="user-6060")
    headers = {
        **traced.signed_headers(txn_token=txn),
        "txn-token": txn,
        "traceparent": header,
    }
    traced.check_path("/api/hello", headers)
    flush(traced)
    check, _ = check_and_stages(receiver, trace_id)
    assert check.attributes["wimse.txn.sub"] == "user-6060"


def test_an_unsampled_traceparent_records_nothing(
    harness: GatewayHarness, receiver: OtlpReceiver
) -> None:
    traced = traced_harness(harness, receiver)
    header, trace_id, _ = traceparent(sampled=False)
    traced.check_path("/api/hello", {**traced.signed_headers(), "traceparent": header})
    sampled_header, sampled_trace, _ = traceparent()
    traced.check_path("/api/hello", {**traced.signed_headers(), "traceparent": sampled_header})
    flush(traced)
    receiver.wait_for(lambda got: bool(of_trace(got, sampled_trace)))
    assert not of_trace(receiver.spans(), trace_id)


def test_a_malformed_traceparent_starts_a_new_trace(
    harness: GatewayHarness, receiver: OtlpReceiver
) -> None:
    traced = traced_harness(harness, receiver, service_name="malformed-parent")
    bogus = "00-" + "0" * 32 + "-" + "1" * 16 + "-01"  # an all-zero trace id is invalid
    expect_allowed(
        traced.check_path("/api/hello", {**traced.signed_headers(), "traceparent": bogus})
    )
    flush(traced)
    spans = receiver.wait_for(
        lambda got: any(s.resource.get("service.name") == "malformed-parent" for s in got)
    )
    [check] = [
        s
        for s in spans
        if s.resource.get("service.name") == "malformed-parent" and s.name == SPAN_NAME
    ]
    assert check.parent_span_id == ""
    assert check.trace_id != "0" * 32


def test_an_unreachable_collector_costs_checks_nothing_but_their_spans(
    harness: GatewayHarness,
) -> None:
    traced = harness.rebuild(
        tracing={"otlp_endpoint": "127.0.0.1:9", "export_timeout_seconds": 0.5}
    )
    expect_allowed(traced.check_path("/api/hello", traced.signed_headers()))
    flush(traced)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"otlp_endpoint": "collector.example:4317"}, "not on loopback"),
        ({"otlp_endpoint": "http://127.0.0.1:4317"}, "not host:port"),
        ({"otlp_endpoint": "127.0.0.1"}, "not host:port"),
        ({"otlp_endpoint": "127.0.0.1:4317", "sample_ratio": 2}, "sample_ratio"),
        (
            {"otlp_endpoint": "collector.example:4317", "insecure": True, "ca_file": "ca.pem"},
            "exclude each other",
        ),
    ],
)
def test_tracing_settings_are_checked_at_load(
    harness: GatewayHarness, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        harness.rebuild(tracing=settings).config()


def test_a_remote_collector_is_allowed_over_tls_or_when_insecure_is_said(
    harness: GatewayHarness,
) -> None:
    insecure = {"otlp_endpoint": "collector.example:4317", "insecure": True}
    assert harness.rebuild(tracing=insecure).config().tracing is not None
    over_tls = {"otlp_endpoint": "collector.example:4317", "ca_file": "ca.pem"}
    tracing_config = harness.rebuild(tracing=over_tls).config().tracing
    assert tracing_config is not None
    assert tracing_config.ca_file == (harness.directory / "ca.pem").resolve()


def test_outbound_and_edge_checks_have_their_stages(
    harness: GatewayHarness, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    from tests.unit import test_outbound, test_tts_edge

    settings = tracing(receiver)
    test_outbound.write_pair(
        tmp_path, harness.wit("frontend", ttl=3600), harness.identities.workloads["frontend"]
    )
    egress = harness.rebuild(**test_outbound.outbound_overrides(tmp_path), tracing=settings)
    header, outbound_trace, parent = traceparent()
    expect_allowed(test_outbound.send(egress, "/api/orders", {"traceparent": header}))
    flush(egress)
    check, _ = check_and_stages(
        receiver, outbound_trace, {"verify context", "evaluate policy", "attach credentials"}
    )
    assert check.parent_span_id == parent
    assert check.attributes["wimse.direction"] == "outbound"
    assert check.attributes["wimse.caller"] == "spiffe://demo.example/frontend"

    edge = harness.rebuild(**test_tts_edge.edge_overrides(harness, tmp_path), tracing=settings)
    header, edge_trace, _ = traceparent()
    headers = {**test_tts_edge.bearer(edge, subject="user-7070"), "traceparent": header}
    expect_allowed(test_tts_edge.send(edge, "/api/orders", headers))
    flush(edge)
    check, _ = check_and_stages(
        receiver, edge_trace, {"authenticate", "evaluate policy", "mint txn-token"}
    )
    assert check.attributes["wimse.direction"] == "edge"
    # The edge's caller is the user: named only with include_user_subject.
    assert "wimse.caller" not in check.attributes
    assert b"user-7070" not in b"".join(receiver.raw_requests)


def test_json_log_lines_of_a_traced_check_carry_its_trace_and_span(
    harness: GatewayHarness, receiver: OtlpReceiver
) -> None:
    traced = traced_harness(harness, receiver, service_name="logged")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CheckContextFilter())
    handler.setFormatter(JsonFormatter())
    pipeline_log = logging.getLogger("authz.pipeline")
    pipeline_log.addHandler(handler)
    level = pipeline_log.level
    pipeline_log.setLevel(logging.INFO)
    header, trace_id, _ = traceparent()
    try:
        # An invalid WIT: denied, and the denial logged.
        traced.check_path("/api/hello", {"workload-identity-token": "x.y.z", "traceparent": header})
    finally:
        pipeline_log.removeHandler(handler)
        pipeline_log.setLevel(level)
    flush(traced)
    check, _ = check_and_stages(receiver, trace_id, {"authenticate"})
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["trace_id"] == trace_id
    assert line["span_id"] == check.span_id
    assert line["decision_id"] == check.attributes["wimse.decision_id"]
