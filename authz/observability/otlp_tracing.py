"""Check spans, sent over OTLP/gRPC: what `authz.observability.tracing` opens when the
`tracing` section is present.

Built for the serving path rather than on the OpenTelemetry SDK. The SDK costs about 45 µs
of CPU per span here (a check has five: +240 µs per check, more than a third of one); this
costs about 40 µs per check: a stage span is a small object appended to its check, and a
finished check is encoded straight into OTLP's wire format (`otlp_wire`) and queued. The
gRPC call happens on the exporter's thread, in batches.

What it implements of OpenTelemetry: W3C Trace Context (`traceparent`, `tracestate`),
parent-based sampling with a trace-id ratio for new traces (the SDK's `ParentBased(
TraceIdRatioBased)`, the same decision for the same trace id), and the OTLP/gRPC trace
export (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, its request written
by `authz.observability.otlp_wire`).
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.config.tracing import TracingConfig
from authz.errors import ConfigError
from authz.observability.decision_log import DecisionRecord
from authz.observability.logs import TRACE_CONTEXT
from authz.observability.otlp_wire import (
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    WireSpan,
    encode_export_request,
    key_value,
    repeated_key_value,
    span_entries,
)
from authz.observability.tracing import (
    NOTHING,
    SPAN_NAME,
    CheckTracing,
    span_attributes,
    trace_headers,
)

log = logging.getLogger("authz.tracing")

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
MAX_TRACESTATE_CHARS = 512
"""A longer `tracestate` is not carried on (W3C allows dropping it whole)."""
BATCH_CHECKS = 512
_SAMPLED = 0x01
# OTLP Span.flags: the low byte is the W3C trace flags; these say whether the parent is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_TRACE_ID_LIMIT = 1 << 64
_RPC_ATTRIBUTES = (
    key_value("rpc.system", "grpc"),
    key_value("rpc.service", "envoy.service.auth.v3.Authorization"),
    key_value("rpc.method", "Check"),
)
_UNIQUE_PER_CHECK = frozenset({"wimse.txn.id", "wimse.txn.sub", "url.path"})
"""Attributes whose values are rarely shared between checks: not worth keeping encoded."""

ChecksDropped = Callable[[str, int], None]
"""Told the cause (`queue_full`, `export_failed`) and the number of checks whose spans were
dropped."""


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: bytes
    span_id: bytes
    sampled: bool
    trace_state: str


def parse_traceparent(headers: Mapping[str, str]) -> TraceParent | None:
    """The parent a request's W3C Trace Context headers name; None when there is none or it
    is malformed (a new trace starts: W3C Trace Context §4.3)."""
    value = headers.get("traceparent")
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    trace_state = headers.get("tracestate", "")
    if len(trace_state) > MAX_TRACESTATE_CHARS:
        trace_state = ""
    return TraceParent(
        bytes.fromhex(trace_id),
        bytes.fromhex(span_id),
        bool(int(flags, 16) & _SAMPLED),
        trace_state,
    )


def _new_span_id() -> bytes:
    return (random.getrandbits(64) or 1).to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class StageSpan:
    name: str
    span_id: bytes
    start_ns: int
    end_ns: int
    failed: str
    """The reason code of the error that ended the stage; empty when it completed."""


@dataclass(slots=True)
class FinishedCheck:
    """One sampled check's spans, as the serving path leaves them for the exporter."""

    trace_id: bytes
    span_id: bytes
    parent: TraceParent | None
    record: DecisionRecord
    start_ns: int
    end_ns: int = 0
    stages: list[StageSpan] = field(default_factory=list)


_CURRENT: ContextVar[FinishedCheck | None] = ContextVar("traced_check", default=None)


class _CheckScope:
    __slots__ = ("_check", "_exporter", "_log_token", "_token")

    def __init__(self, check: FinishedCheck, exporter: SpanExporter) -> None:
        self._check = check
        self._exporter = exporter

    def __enter__(self) -> None:
        check = self._check
        self._token = _CURRENT.set(check)
        self._log_token = TRACE_CONTEXT.set((check.trace_id.hex(), check.span_id.hex()))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        TRACE_CONTEXT.reset(self._log_token)
        _CURRENT.reset(self._token)
        self._check.end_ns = time.time_ns()
        self._exporter.submit(self._check)


class _StageScope:
    __slots__ = ("_check", "_name", "_start")

    def __init__(self, check: FinishedCheck, name: str) -> None:
        self._check = check
        self._name = name

    def __enter__(self) -> None:
        self._start = time.time_ns()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failed = ""
        if error is not None:
            # A stage that raised ended the check: its reason code, never its message.
            reason = getattr(error, "reason", None)
            failed = str(getattr(reason, "value", None) or type(error).__name__)
        stage = StageSpan(self._name, _new_span_id(), self._start, time.time_ns(), failed)
        self._check.stages.append(stage)


class OtlpTracing(CheckTracing):
    def __init__(self, exporter: SpanExporter, sample_ratio: float) -> None:
        self._exporter = exporter
        self._bound = round(sample_ratio * _TRACE_ID_LIMIT)

    def check(
        self, attributes: AttributeContext, record: DecisionRecord
    ) -> AbstractContextManager[None]:
        parent = parse_traceparent(trace_headers(attributes))
        if parent is not None:
            if not parent.sampled:
                return NOTHING
            trace_id = parent.trace_id
        else:
            trace_id = random.getrandbits(128).to_bytes(16, "big")
            if int.from_bytes(trace_id[8:], "big") >= self._bound:
                return NOTHING
        check = FinishedCheck(trace_id, _new_span_id(), parent, record, time.time_ns())
        return _CheckScope(check, self._exporter)

    def stage(self, name: str) -> AbstractContextManager[None]:
        check = _CURRENT.get()
        return NOTHING if check is None else _StageScope(check, name)

    def shutdown(self) -> None:
        self._exporter.shutdown()


class SpanExporter:
    """Sends finished checks' spans in batches from its own thread: when `BATCH_CHECKS`
    checks wait, or every `batch_delay_seconds`. A full queue drops the new check's spans,
    counted; a failed export drops its batch, counted and logged (at most once a minute):
    checks never wait for the collector.

    A check's spans are encoded on the serving thread as it ends (about 25 µs), not on the
    exporter's: encoding whole batches there held the GIL for milliseconds at a time, and
    checks waiting for it tripled their p99 in the bench. The exporter's thread only joins
    bytes and makes the gRPC call, which releases the GIL."""

    def __init__(
        self,
        config: TracingConfig,
        include_user_subject: bool,
        on_drop: ChecksDropped,
    ) -> None:
        self._config = config
        self._include_user_subject = include_user_subject
        self._on_drop = on_drop
        self._queue: deque[bytes] = deque()
        """Each check's spans, as `span_entries` encodes them."""
        self._wake = threading.Event()
        self._stopping = False
        self._last_failure_logged = 0.0
        self._channel = _channel(config)
        # Requests go out as the bytes `otlp_wire` wrote; the answer carries nothing we use.
        self._export = self._channel.unary_unary(EXPORT_METHOD)
        self._metadata = tuple(config.headers.items())
        self._thread = threading.Thread(target=self._run, name="otlp-exporter", daemon=True)
        self._thread.start()

    def submit(self, check: FinishedCheck) -> None:
        queue = self._queue
        if len(queue) >= self._config.max_queue_checks:
            self._on_drop("queue_full", 1)
            return
        queue.append(self.encode(check))
        if len(queue) >= BATCH_CHECKS:
            self._wake.set()

    def shutdown(self) -> None:
        """Send what is queued (each batch bounded by the export timeout), then stop."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._channel.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._config.batch_delay_seconds)
            self._wake.clear()
            while self._queue:
                sent = self._send(self._take(BATCH_CHECKS))
                if not sent and self._stopping:
                    # Shutting down with the collector failing: one export timeout at
                    # most, not one per batch still queued.
                    self._on_drop("export_failed", len(self._queue))
                    self._queue.clear()
            if self._stopping:
                return

    def _take(self, count: int) -> list[bytes]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(count, len(queue)))]

    def _send(self, checks: list[bytes]) -> bool:
        """Export `checks`' spans; False (counted, logged) when that failed."""
        try:
            request = encode_export_request(
                self._config.service_name, "wimse-authz", b"".join(checks)
            )
            self._export(
                request, timeout=self._config.export_timeout_seconds, metadata=self._metadata
            )
        except Exception as error:  # noqa: BLE001 - counted and logged; serving goes on
            self._on_drop("export_failed", len(checks))
            now = time.monotonic()
            if now - self._last_failure_logged >= 60:
                self._last_failure_logged = now
                log.warning(
                    "spans of %d checks not exported to %s: %s",
                    len(checks),
                    self._config.otlp_endpoint,
                    _short(error),
                )
            return False
        return True

    def encode(self, check: FinishedCheck) -> bytes:
        """`check`'s spans, as the export request lists them."""
        return span_entries(
            [self._check_span(check), *(_stage_span(check, stage) for stage in check.stages)]
        )

    def _check_span(self, check: FinishedCheck) -> WireSpan:
        record = check.record
        parent = check.parent
        attributes = [*_RPC_ATTRIBUTES, key_value("wimse.decision_id", record.decision_id)]
        attributes.append(repeated_key_value("wimse.direction", record.direction))
        for name, value in span_attributes(record, self._include_user_subject).items():
            encode = key_value if name in _UNIQUE_PER_CHECK else repeated_key_value
            attributes.append(encode(name, value))
        return WireSpan(
            trace_id=check.trace_id,
            span_id=check.span_id,
            parent_span_id=parent.span_id if parent is not None else b"",
            trace_state=parent.trace_state if parent is not None else "",
            name=SPAN_NAME,
            kind=SPAN_KIND_SERVER,
            start_ns=check.start_ns,
            end_ns=check.end_ns,
            flags=_SAMPLED | _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None else 0),
            attributes=attributes,
            # Our own failure to decide; a denial is an answer, not an error.
            error=record.reason if record.status >= 500 else None,
        )


def _stage_span(check: FinishedCheck, stage: StageSpan) -> WireSpan:
    return WireSpan(
        trace_id=check.trace_id,
        span_id=stage.span_id,
        parent_span_id=check.span_id,
        trace_state=check.parent.trace_state if check.parent is not None else "",
        name=stage.name,
        kind=SPAN_KIND_INTERNAL,
        start_ns=stage.start_ns,
        end_ns=stage.end_ns,
        flags=_SAMPLED | _HAS_IS_REMOTE,
        error=stage.failed or None,
    )


def _short(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def _channel(config: TracingConfig) -> grpc.Channel:
    if config.ca_file is None:
        return grpc.insecure_channel(config.otlp_endpoint)
    try:
        root_certificates = config.ca_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"tracing.ca_file: {exc.strerror}: {config.ca_file}") from None
    credentials = grpc.ssl_channel_credentials(root_certificates)
    return grpc.secure_channel(config.otlp_endpoint, credentials)


def otlp_tracing(config: TracingConfig, on_drop: ChecksDropped) -> OtlpTracing:
    """Spans of the checks `config` samples, batched to its collector."""
    exporter = SpanExporter(config, config.include_user_subject, on_drop)
    return OtlpTracing(exporter, config.sample_ratio)
