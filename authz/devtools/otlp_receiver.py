"""An OTLP/gRPC trace receiver for tests and the bench: a gRPC server implementing the
OpenTelemetry Collector's `opentelemetry.proto.collector.trace.v1.TraceService/Export`,
decoding what it is sent with the OTLP protobuf definitions, as a collector does. Tests
read the spans it keeps; the bench runs it as a process (`--count-only`) to receive what a
traced gateway exports. No Collector binary can be installed on these machines (no
package registry they reach carries one), hence this stand-in. It needs the dev extra's
`opentelemetry-proto`.

    python -m authz.devtools.otlp_receiver --port 4317 [--count-only]
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace import v1 as trace_v1
from opentelemetry.proto.trace.v1.trace_pb2 import Span

if not hasattr(trace_v1.trace_pb2, "ScopeSpans"):
    raise ImportError(
        "opentelemetry.proto is xds-protos's old copy: reinstall opentelemetry-proto after "
        "xds-protos (make .venv/.dev-installed does)"
    )


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return {item.key: any_value(item.value) for item in self.span.attributes}


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span (and every request's bytes) it is sent; with `count_only`, only
    counts them."""

    def __init__(self, port: int = 0, *, count_only: bool = False) -> None:
        self._spans: list[ReceivedSpan] = []
        self.raw_requests: list[bytes] = []
        """Every Export request as it came over the wire."""
        self.span_count = 0
        self._count_only = count_only
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        # The generated registration function carries no annotations.
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self, self._server
        )
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if self._count_only:
            count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with self._lock:
                self.span_count += count
            return trace_service_pb2.ExportTraceServiceResponse()
        received = []
        for resource_spans in request.resource_spans:
            resource = {
                item.key: any_value(item.value) for item in resource_spans.resource.attributes
            }
            for scope_spans in resource_spans.scope_spans:
                received += [ReceivedSpan(span, resource) for span in scope_spans.spans]
        with self._lock:
            self.raw_requests.append(request.SerializeToString())
            self._spans += received
            self.span_count += len(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, matches: Callable[[list[ReceivedSpan]], bool], timeout: float = 15
    ) -> list[ReceivedSpan]:
        """The spans received once `matches` holds for them (AssertionError at timeout)."""
        deadline = time.monotonic() + timeout
        while not matches(spans := self.spans()):
            assert time.monotonic() < deadline, f"spans received: {[s.name for s in spans]}"
            time.sleep(0.05)
        return spans

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)


def running_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Receive OTLP/gRPC spans on loopback.")
    parser.add_argument("--port", type=int, default=4317, help="port (default: %(default)s)")
    parser.add_argument(
        "--count-only", action="store_true", help="only count the spans (default: keep them)"
    )
    args = parser.parse_args(argv)
    receiver = OtlpReceiver(args.port, count_only=args.count_only).start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    print(f"receiving OTLP spans on {receiver.endpoint}", flush=True)
    stopped.wait()
    receiver.stop()
    print(f"received {receiver.span_count} spans", flush=True)


if __name__ == "__main__":
    main()
