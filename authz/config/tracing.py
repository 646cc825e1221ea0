"""OpenTelemetry tracing of checks: where spans go and what they may say. Off unless the
`tracing` section is present. See `docs/operations.md#tracing`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from authz.config.base import PositiveInt, PositiveSeconds, Strict, is_loopback_host


class TracingConfig(Strict):
    otlp_endpoint: str
    """The OTLP/gRPC collector, `host:port` (4317 is OTLP's gRPC port)."""
    ca_file: Path | None = None
    """Export over TLS, trusting these CA certificates (PEM) for the collector."""
    insecure: bool = False
    """Export in plaintext to a collector that is not on loopback. Spans name workloads,
    routes and decisions: only for a collector on a network nobody else can read."""
    service_name: str = Field(default="wimse-authz", min_length=1)
    """The `service.name` resource attribute of every span."""
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Share of traces started here (no sampled `traceparent` on the request) that are
    recorded; a request's `traceparent` decides for its own trace."""
    include_user_subject: bool = False
    """Add the transaction's subject (the end user, `wimse.txn.sub`) to check spans. Off:
    a trace backend is rarely a place for personal data."""
    export_timeout_seconds: PositiveSeconds = 5.0
    batch_delay_seconds: PositiveSeconds = 5.0
    """The longest a finished span waits before it is sent (sooner when a batch fills)."""
    max_queue_checks: PositiveInt = 4096
    """Checks whose spans wait for export; beyond this, a check's spans are dropped and
    counted (checks never wait)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """gRPC metadata sent with every export (a collector's API key, for instance)."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        parts = urlsplit(f"//{value}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or parts.path or f"//{value}" != parts.geturl():
            raise ValueError(f"{value!r} is not host:port (for example 127.0.0.1:4317)")
        return value

    @model_validator(mode="after")
    def _check_transport(self) -> TracingConfig:
        if self.ca_file is not None and self.insecure:
            raise ValueError("ca_file (TLS) and insecure (plaintext) exclude each other")
        if self.ca_file is None and not self.insecure and not is_loopback_host(self.host):
            raise ValueError(
                f"{self.otlp_endpoint} is not on loopback: set ca_file to export over TLS, "
                "or insecure: true to send spans in plaintext"
            )
        return self

    @property
    def host(self) -> str:
        return urlsplit(f"//{self.otlp_endpoint}").hostname or ""


def resolve_tracing_paths(tracing: TracingConfig, resolve: Callable[[Path], Path]) -> TracingConfig:
    if tracing.ca_file is None:
        return tracing
    return tracing.model_copy(update={"ca_file": resolve(tracing.ca_file)})
