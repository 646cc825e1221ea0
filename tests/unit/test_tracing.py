"""The parts of tracing a check's span relies on: W3C Trace Context parsing, the sampling
decision, the OTLP wire encoding (decoded with opentelemetry-proto's generated classes),
and an exporter that drops rather than waits. End to end: tests/e2e/test_tracing.py."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from authz.config.tracing import TracingConfig
from authz.devtools.otlp_receiver import OtlpReceiver
from authz.observability.decision_log import DecisionRecord
from authz.observability.otlp_tracing import (
    BATCH_CHECKS,
    OtlpTracing,
    SpanExporter,
    otlp_tracing,
    parse_traceparent,
)
from authz.observability.otlp_wire import (
    SPAN_KIND_SERVER,
    WireSpan,
    encode_export_request,
    key_value,
    repeated_key_value,
    span_entries,
)
from authz.observability.tracing import NO_TRACING, NOTHING, trace_headers
from tests.support import check_request

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", (TRACE, PARENT, True)),
        (f"00-{TRACE}-{PARENT}-00", (TRACE, PARENT, False)),
        (f"00-{TRACE}-{PARENT}-03", (TRACE, PARENT, True)),
        # A later version may add fields after the flags.
        (f"01-{TRACE}-{PARENT}-01-future", (TRACE, PARENT, True)),
        (f"  00-{TRACE}-{PARENT}-01 ", (TRACE, PARENT, True)),
        (f"ff-{TRACE}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}-01-extra", None),
        (f"00-{TRACE.upper()}-{PARENT}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        (f"00-{TRACE}-{PARENT}", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_traceparent(value: str, expected: tuple[str, str, bool] | None) -> None:
    parent = parse_traceparent({"traceparent": value})
    if expected is None:
        assert parent is None
    else:
        assert parent is not None
        assert (parent.trace_id.hex(), parent.span_id.hex(), parent.sampled) == expected


def test_tracestate_is_carried_unless_oversized() -> None:
    headers = {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "vendor=abc"}
    parent = parse_traceparent(headers)
    assert parent is not None
    assert parent.trace_state == "vendor=abc"
    oversized = parse_traceparent({**headers, "tracestate": "v=" + "a" * 600})
    assert oversized is not None
    assert oversized.trace_state == ""


@pytest.mark.parametrize("raw_headers", [False, True])
def test_trace_headers_are_read_from_either_header_shape(raw_headers: bool) -> None:
    request = check_request(
        "/api/hello",
        {"traceparent": f"00-{TRACE}-{PARENT}-01", "tracestate": "a=b", "other": "x"},
        raw_headers=raw_headers,
    )
    assert trace_headers(request.attributes) == {
        "traceparent": f"00-{TRACE}-{PARENT}-01",
        "tracestate": "a=b",
    }


def test_no_tracing_costs_one_shared_no_op() -> None:
    attributes = check_request("/").attributes
    assert NO_TRACING.check(attributes, DecisionRecord("d", 0.0)) is NOTHING
    assert NO_TRACING.stage("authenticate") is NOTHING


def test_the_wire_encoding_decodes_with_the_otlp_definitions() -> None:
    span = WireSpan(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(PARENT),
        parent_span_id=b"\x01" * 8,
        trace_state="vendor=abc",
        name="envoy.service.auth.v3.Authorization/Check",
        kind=SPAN_KIND_SERVER,
        start_ns=1_765_000_000_123_456_789,
        end_ns=1_765_000_000_124_000_000,
        flags=0x301,
        attributes=[
            key_value("s", "välue"),
            repeated_key_value("i", 403),
            key_value("big", 2**40),
            repeated_key_value("t", True),
            key_value("f", False),
        ],
        error="internal.error",
    )
    request = ExportTraceServiceRequest.FromString(
        encode_export_request("svc", "wimse-authz", span_entries([span]) * 2)
    )
    [resource_spans] = request.resource_spans
    assert resource_spans.resource.attributes[0].key == "service.name"
    assert resource_spans.resource.attributes[0].value.string_value == "svc"
    [scope_spans] = resource_spans.scope_spans
    assert scope_spans.scope.name == "wimse-authz"
    decoded = scope_spans.spans[0]
    assert len(scope_spans.spans) == 2
    assert decoded.trace_id.hex() == TRACE
    assert decoded.span_id.hex() == PARENT
    assert decoded.parent_span_id == b"\x01" * 8
    assert decoded.trace_state == "vendor=abc"
    assert decoded.name == span.name
    assert decoded.kind == Span.SPAN_KIND_SERVER
    assert decoded.start_time_unix_nano == span.start_ns
    assert decoded.end_time_unix_nano == span.end_ns
    assert decoded.flags == 0x301
    values = {a.key: a.value for a in decoded.attributes}
    assert values["s"].string_value == "välue"
    assert values["i"].int_value == 403
    assert values["big"].int_value == 2**40
    assert values["t"].bool_value is True
    assert values["f"].HasField("bool_value")
    assert values["f"].bool_value is False
    assert decoded.status.code == decoded.status.STATUS_CODE_ERROR
    assert decoded.status.message == "internal.error"


def test_a_span_without_parent_or_status_leaves_them_out() -> None:
    span = WireSpan(b"\x02" * 16, b"\x03" * 8, b"", "", "stage", 1, 1, 2, 0x101)
    request = ExportTraceServiceRequest.FromString(
        encode_export_request("s", "x", span_entries([span]))
    )
    decoded = request.resource_spans[0].scope_spans[0].spans[0]
    assert decoded.parent_span_id == b""
    assert not decoded.HasField("status")
    assert decoded.kind == Span.SPAN_KIND_INTERNAL


def checks(tracing: Any, count: int, headers: dict[str, str] | None = None) -> None:
    async def run() -> None:
        for _ in range(count):
            record = DecisionRecord(f"{random.getrandbits(128):032x}", 0.0)
            attributes = check_request("/", headers).attributes
            # One `with`: the stage is entered after, and inside, the check.
            with tracing.check(attributes, record), tracing.stage("authenticate"):
                record.status = 200

    asyncio.run(run())


@pytest.fixture
def receiver() -> Any:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


def config(endpoint: str, **settings: Any) -> TracingConfig:
    return TracingConfig(otlp_endpoint=endpoint, **{"batch_delay_seconds": 0.1, **settings})


def test_new_traces_are_sampled_at_the_ratio_a_parent_decides_its_own(
    receiver: OtlpReceiver,
) -> None:
    tracing = otlp_tracing(config(receiver.endpoint, sample_ratio=0.0), lambda *_: None)
    checks(tracing, 20)
    checks(tracing, 3, {"traceparent": f"00-{TRACE}-{PARENT}-01"})
    tracing.shutdown()
    spans = receiver.spans()
    assert {span.trace_id for span in spans} == {TRACE}
    assert len(spans) == 6  # three checks, each with one stage


def test_a_ratio_samples_about_that_share_of_new_traces(receiver: OtlpReceiver) -> None:
    tracing = otlp_tracing(config(receiver.endpoint, sample_ratio=0.25), lambda *_: None)
    checks(tracing, 800)
    tracing.shutdown()
    traced = len({span.trace_id for span in receiver.spans()})
    assert 120 < traced < 280


def test_a_full_queue_drops_and_counts_rather_than_waits(receiver: OtlpReceiver) -> None:
    dropped: list[tuple[str, int]] = []
    exporter = SpanExporter(
        config(receiver.endpoint, max_queue_checks=5, batch_delay_seconds=60),
        False,
        lambda cause, count: dropped.append((cause, count)),
    )
    tracing = OtlpTracing(exporter, 1.0)
    checks(tracing, 8)
    assert dropped == [("queue_full", 1)] * 3
    tracing.shutdown()
    assert len({span.trace_id for span in receiver.spans()}) == 5


def test_an_unreachable_collector_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    dropped: list[tuple[str, int]] = []
    done = threading.Event()

    def on_drop(cause: str, count: int) -> None:
        dropped.append((cause, count))
        done.set()

    tracing = otlp_tracing(
        config("127.0.0.1:9", export_timeout_seconds=0.5, headers={"x-api-key": "k"}),
        on_drop,
    )
    checks(tracing, 4)
    assert done.wait(10)
    tracing.shutdown()
    assert dropped == [("export_failed", 4)]
    assert "spans of 4 checks not exported to 127.0.0.1:9" in caplog.text


def test_shutting_down_with_the_collector_failing_does_not_try_every_batch() -> None:
    """A listener that accepts and never answers: each export waits for its timeout. Three
    batches are queued; at most one export fails before shutdown begins (it starts when the
    first batch fills), and shutdown tries one more, then drops the rest."""
    dropped: list[tuple[str, int]] = []
    total = BATCH_CHECKS * 3 + 10
    with socket.create_server(("127.0.0.1", 0)) as silent:
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        tracing = otlp_tracing(
            config(endpoint, export_timeout_seconds=1.0, batch_delay_seconds=60),
            lambda cause, count: dropped.append((cause, count)),
        )
        checks(tracing, total)
        tracing.shutdown()
    assert {cause for cause, _ in dropped} == {"export_failed"}
    assert sum(count for _, count in dropped) == total
    assert len(dropped) <= 3  # two failed exports at most, then the rest dropped at once
