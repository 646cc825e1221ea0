"""The policy input document: OPA-Envoy's shape, built straight from protobuf fields."""

from __future__ import annotations

from typing import Any

from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from google.protobuf import json_format

from authz.credentials.context import NO_CONTEXT
from authz.credentials.identifiers import parse_workload_id
from authz.policy.attributes import attributes_to_json
from authz.policy.http_parsing import NO_BODY
from authz.policy.input import build_input
from authz.request import request_view
from authz.routing import ServiceTarget
from tests.support import GatewayHarness, check_request, hook_engine

SERVICE = ServiceTarget("echo", parse_workload_id("spiffe://demo.example/echo"), ("https://e",))


def rich_attributes() -> AttributeContext:
    request = check_request("/api/items?x=1", {"content-type": "application/json"}, body='{"a":1}')
    attributes = request.attributes
    attributes.request.time.FromSeconds(1_800_000_000)
    attributes.request.http.size = 2**40
    attributes.source.principal = "spiffe://demo.example/frontend"
    attributes.source.labels["app"] = "frontend"
    attributes.destination.service = "echo"
    attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update(
        {"claims": {"n": 3, "f": 1.5, "ok": True, "list": ["a", 2], "none": None}}
    )
    attributes.route_metadata_context.filter_metadata["route"].update({"name": "items"})
    attributes.tls_session.sni = "echo.demo.example"
    attributes.request.http.raw_body = b"\x00\x01"
    return attributes


def _numbers_as_protojson(value: Any) -> Any:
    """What Go's protojson would emit: int64 as numbers, integral doubles as integers."""
    if isinstance(value, dict):
        return {k: _numbers_as_protojson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_protojson(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def test_attributes_match_protobuf_json_with_int64_as_numbers() -> None:
    attributes = rich_attributes()
    expected = _numbers_as_protojson(json_format.MessageToDict(attributes))
    expected["request"]["http"]["size"] = 2**40  # MessageToDict renders int64 as a string
    assert attributes_to_json(attributes) == expected


def test_size_is_a_number_for_policies() -> None:
    document = attributes_to_json(rich_attributes())
    assert document["request"]["http"]["size"] == 2**40


def test_default_values_are_omitted_as_protojson_does() -> None:
    request = check_request("/", {}, service=None)
    http = attributes_to_json(request.attributes)["request"]["http"]
    assert "body" not in http
    assert "size" not in http
    assert "query" not in http


def test_raw_header_map_is_rendered_and_used_for_headers() -> None:
    request = check_request("/", {}, service=None)
    header_map = request.attributes.request.http.header_map
    header_map.headers.add(key="x-a", raw_value=b"1")
    header_map.headers.add(key="x-a", raw_value=b"2")
    assert attributes_to_json(request.attributes)["request"]["http"]["headerMap"] == {
        "headers": [{"key": "x-a", "rawValue": "MQ=="}, {"key": "x-a", "rawValue": "Mg=="}]
    }
    assert request_view(request.attributes).headers["x-a"] == "1,2"


def test_input_document_has_opa_envoy_fields_and_empty_wimse_members() -> None:
    request = request_view(
        check_request(
            "/admin/a%20b?q=1&q=2", {}, principal="spiffe://demo.example/frontend"
        ).attributes
    )
    document = build_input(request, NO_BODY, None, SERVICE, NO_CONTEXT)
    assert document["parsed_path"] == ["admin", "a b"]
    assert document["parsed_query"] == {"q": ["1", "2"]}
    assert document["parsed_body"] is None
    assert document["truncated_body"] is False
    assert document["version"] == {"ext_authz": "v3", "encoding": "protojson"}
    assert document["source_principal"] == "spiffe://demo.example/frontend"
    assert document["attributes"]["request"]["http"]["path"] == "/admin/a%20b?q=1&q=2"
    assert document["wimse"] == {
        "direction": "inbound",
        "caller": None,
        "service": {
            "name": "echo",
            "id": "spiffe://demo.example/echo",
            "trust_domain": "demo.example",
        },
        "txn": None,
        "chain": [],
        "user": None,
        "attestation": None,
    }


def test_source_principal_is_absent_without_mtls() -> None:
    document = build_input(
        request_view(check_request("/").attributes), NO_BODY, None, SERVICE, NO_CONTEXT
    )
    assert "source_principal" not in document


def test_verified_caller_is_described_under_wimse(harness: GatewayHarness) -> None:
    captured: list[dict[str, Any]] = []

    async def capture(document: dict[str, Any]) -> None:
        captured.append(document)

    hook_engine(harness.gateway.pipeline, capture)
    harness.check_path("/api/hello", harness.signed_headers())
    caller = captured[0]["wimse"]["caller"]
    assert caller["id"] == "spiffe://demo.example/frontend"
    assert caller["trust_domain"] == "demo.example"
    assert caller["authenticated_by"] == "wpt"
    assert caller["wit"]["claims"]["sub"] == "spiffe://demo.example/frontend"
    assert caller["wit"]["proof_alg"] == "EdDSA"
    assert caller["proof"]["aud"] == "https://echo.demo.example/api/hello"
    assert caller["proof"]["bound_headers"] == []
