"""OpenTelemetry spans for checks, exported over OTLP/gRPC (off unless configured).

Each check is one server span, `envoy.service.auth.v3.Authorization/Check`, continuing the
trace of the request being checked: its W3C `traceparent` (and `tracestate`), as the client
or an earlier proxy sent them, make the span's parent. Without one, a new trace starts,
sampled at `sample_ratio`; with one, its sampled flag decides. The pipeline's stages
(authenticate, verify context, build input, evaluate policy, ...) are child spans.

The attributes are read when the span is exported, from the check's decision record: the
span gets the decision log's correlation fields as
`wimse.*` attributes: decision id, result, status, reason, service, the verified caller and
chain, the transaction id, revisions. What identifies a person — the transaction's
subject, an edge caller authenticated by a user's access token — is left out unless
`include_user_subject` is set. Token bytes never reach a span: nothing here reads a
credential header, and attributes come only from the decision record, which holds none.

Spans are exported from a background thread in batches (`max_queue_checks` waiting at
most; beyond that they are dropped and counted, never waited for), so a slow or absent
collector costs a check nothing but its span. `authz.observability.otlp_tracing` has the
implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext

from authz.observability.decision_log import DecisionRecord

if TYPE_CHECKING:
    from authz.config.tracing import TracingConfig

SPAN_NAME = "envoy.service.auth.v3.Authorization/Check"
TRACE_HEADERS = ("traceparent", "tracestate")
"""The W3C Trace Context headers a check's span continues from."""

NOTHING: AbstractContextManager[None] = contextlib.nullcontext()
"""The span of a check not traced: a shared no-op."""


class CheckTracing:
    """No tracing, the default: every span is a shared no-op context."""

    def check(
        self, attributes: AttributeContext, record: DecisionRecord
    ) -> AbstractContextManager[None]:
        """The span of one check, around deciding and reporting it; its attributes are
        read from `record` once the block has ended."""
        return NOTHING

    def stage(self, name: str) -> AbstractContextManager[None]:
        """A child span of the check in progress, named after a pipeline stage."""
        return NOTHING

    def shutdown(self) -> None:
        """Export what is still queued (bounded by the export timeout) and stop."""


NO_TRACING = CheckTracing()


def trace_headers(attributes: AttributeContext) -> dict[str, str]:
    """The request's Trace Context headers, from whichever header shape Envoy sent."""
    http = attributes.request.http
    if not http.header_map.headers:
        return {name: http.headers[name] for name in TRACE_HEADERS if name in http.headers}
    found: dict[str, str] = {}
    for header in http.header_map.headers:
        name = header.key.lower()
        if name in TRACE_HEADERS and name not in found:
            raw = header.raw_value
            found[name] = raw.decode("ascii", "replace") if raw else header.value
    return found


def span_attributes(
    record: DecisionRecord, include_user_subject: bool
) -> dict[str, str | int | bool]:
    """What a check's span says once answered: the decision log's correlation fields,
    without personal data unless `include_user_subject`."""
    found: dict[str, str | int | bool] = {
        "wimse.result": record.result,
        "wimse.status": record.status,
        "wimse.reason": record.reason,
        "wimse.cached": record.cached,
        "wimse.dry_run": record.dry_run,
    }
    optional: Mapping[str, str | None] = {
        "http.request.method": record.method,
        "url.path": record.path,
        "wimse.service": record.service,
        "wimse.authenticated_by": record.authenticated_by,
        "wimse.txn.id": record.txn,
        "wimse.policy_revision": record.policy_revision,
        "wimse.trust_revision": record.trust_revision,
    }
    found.update({name: value for name, value in optional.items() if value})
    caller_is_user = record.direction == "edge" and record.authenticated_by != "mtls"
    if record.caller and (include_user_subject or not caller_is_user):
        found["wimse.caller"] = record.caller
    if record.chain:
        found["wimse.chain"] = " ".join(record.chain)
    if record.policy_reasons:
        found["wimse.policy_reasons"] = " ".join(record.policy_reasons)
    if include_user_subject and record.txn_sub:
        found["wimse.txn.sub"] = record.txn_sub
    return found


def open_tracing(config: TracingConfig | None, on_drop: Callable[[str, int], None]) -> CheckTracing:
    """The tracing `config` asks for: none, or spans batched to its OTLP collector;
    `on_drop` is told the cause and number of checks whose spans were dropped."""
    if config is None:
        return NO_TRACING
    # Imported here, so that a gateway that does not trace never loads the OTLP definitions.
    from authz.observability.otlp_tracing import otlp_tracing  # noqa: PLC0415

    return otlp_tracing(config, on_drop)
