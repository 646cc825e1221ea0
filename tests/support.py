"""Shared test scaffolding: a demo trust domain, a gateway built in-process, requests.

`GatewayHarness` builds a real gateway (real keys, real regorus engine, the sample policy)
from configuration and drives its pipeline with real `CheckRequest` protobufs, so unit-level
tests exercise the same code path the gRPC server does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from jsonschema import Draft202012Validator

import authz.policy
from authz.answers import Allowed, Denied, Failed, Verdict
from authz.clock import Clock
from authz.config import Config, parse_config
from authz.devtools.check import build_check_request
from authz.devtools.mint import mint_wit, mint_wpt
from authz.devtools.stack import Identities, Ports, checkout_txn_token, gateway_config
from authz.gateway import Gateway, build_gateway
from authz.outbound.pipeline import OutboundPipeline
from authz.pipeline import Pipeline
from authz.policy.engine import PolicyEngine

ORIGIN = "https://echo.demo.example"
NOW = 1_800_000_000.0


class MutableClock:
    """A clock tests can move."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def check_request(
    path: str = "/api/hello",
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "GET",
    service: str | None = "echo",
    principal: str = "",
    destination_principal: str = "",
    scheme: str = "https",
    host: str = "echo.demo.example",
    body: str = "",
    raw_body: bytes = b"",
    context: Mapping[str, str] | None = None,
    raw_headers: bool = False,
) -> CheckRequest:
    """A request to the harness origin (or `scheme://host`), from and to fixed peer
    addresses, for `service`; `principal` and `destination_principal` are what Envoy reports
    for the caller and the callee; `raw_headers`: in Envoy's `encode_raw_headers` shape
    (`header_map`)."""
    return build_check_request(
        host=host,
        scheme=scheme,
        path=path,
        method=method,
        headers=headers,
        body=body,
        raw_body=raw_body,
        context={**({"wimse.service": service} if service is not None else {}), **(context or {})},
        source_principal=principal,
        destination_principal=destination_principal,
        source_address=("10.0.0.7", 41000),
        destination_address=("10.0.0.8", 8080),
        request_id="test-request",
        raw_headers=raw_headers,
    )


@dataclass
class GatewayHarness:
    directory: Path
    identities: Identities
    clock: MutableClock = field(default_factory=MutableClock)
    overrides: dict[str, Any] = field(default_factory=dict)
    _gateway: Gateway | None = None

    def config(self) -> Config:
        document = gateway_config(
            self.directory,
            Ports(443, 9901, 9191, 8081),
            origins=[ORIGIN],
            overrides=self.overrides,
        )
        return parse_config(document, "test-config", self.directory)

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            clock: Clock = self.clock
            self._gateway = build_gateway(self.config(), clock)
            # Every input any harness-driven test produces must match the published schema.
            hook_engine(self._gateway.pipeline, validate_input)
            for outbound in self._gateway.outbound.values():
                hook_engine(outbound, validate_input)
        return self._gateway

    def rebuild(self, **overrides: Any) -> GatewayHarness:
        """A fresh gateway (empty caches) with extra configuration overrides."""
        return GatewayHarness(
            self.directory, self.identities, self.clock, {**self.overrides, **overrides}
        )

    # --- credentials --------------------------------------------------------------------
    def wit(self, workload: str = "frontend", **kwargs: Any) -> str:
        kwargs.setdefault("now", self.clock.now)
        return mint_wit(
            self.identities.issuer,
            self.identities.workload_id(workload),
            self.identities.workloads[workload],
            **kwargs,
        )

    def wpt(
        self, wit: str, path: str = "/api/hello", workload: str = "frontend", **kwargs: Any
    ) -> str:
        kwargs.setdefault("now", self.clock.now)
        return mint_wpt(self.identities.workloads[workload], wit, ORIGIN + path, **kwargs)

    def txn_token(self, **kwargs: Any) -> str:
        """A Txn-Token from the demo TTS: a checkout started by the frontend, by default."""
        kwargs.setdefault("now", self.clock.now)
        return checkout_txn_token(self.identities, **kwargs)

    def signed_headers(
        self, path: str = "/api/hello", workload: str = "frontend", **wpt_kwargs: Any
    ) -> dict[str, str]:
        wit = self.wit(workload)
        return {
            "workload-identity-token": wit,
            "authorization": "WPT " + self.wpt(wit, path, workload, **wpt_kwargs),
        }

    # --- checks -------------------------------------------------------------------------
    def check(self, request: CheckRequest) -> Verdict:
        return asyncio.run(self.gateway.pipeline.check(request.attributes))

    def check_path(
        self, path: str = "/api/hello", headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Verdict:
        return self.check(check_request(path, headers, **kwargs))


INPUT_SCHEMA = json.loads(
    (Path(authz.policy.__file__).parent / "input.schema.json").read_text(encoding="utf-8")
)
_INPUT_VALIDATOR = Draft202012Validator(INPUT_SCHEMA)


class SchemaViolation(BaseException):
    """An emitted policy input broke the schema. A BaseException on purpose: the pipeline
    answers any Exception as 503, which would hide the violation from tests expecting one."""


async def validate_input(document: dict[str, Any]) -> None:
    """Fail the test if `document` does not match `authz/policy/input.schema.json`."""
    errors = sorted(_INPUT_VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
    if errors:
        raise SchemaViolation(
            "policy input does not match its schema:\n"
            + "\n".join(f"  {'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors)
        )


class HookedEngine:
    """Wraps the gateway's real policy engine; `hook` runs before each evaluation and may
    record the input, wait, or raise to simulate an engine failure."""

    def __init__(
        self, inner: PolicyEngine, hook: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self._inner = inner
        self._hook = hook

    @property
    def revision(self) -> str:
        return self._inner.revision

    async def evaluate(self, input_document: dict[str, Any]) -> object:
        await self._hook(input_document)
        return await self._inner.evaluate(input_document)


def hook_engine(
    pipeline: Pipeline | OutboundPipeline, hook: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    pipeline.engine = HookedEngine(pipeline.engine, hook)


def expect_denied(verdict: Verdict, reason: str, status: int | None = None) -> Denied:
    assert isinstance(verdict, Denied), f"expected a denial with {reason}, got {verdict!r}"
    assert verdict.reason == reason, f"expected {reason}, got {verdict.reason}"
    if status is not None:
        assert verdict.status == status
    return verdict


def expect_allowed(verdict: Verdict) -> Allowed:
    assert isinstance(verdict, Allowed), f"expected an allow, got {verdict!r}"
    return verdict


def expect_failed(verdict: Verdict, reason: str) -> Failed:
    assert isinstance(verdict, Failed), f"expected unavailable with {reason}, got {verdict!r}"
    assert verdict.reason == reason
    return verdict


def header(verdict: Allowed | Denied | Failed, name: str) -> str | None:
    for key, value in verdict.headers:
        if key == name:
            return value
    return None
