"""`input.attributes`: Envoy's AttributeContext as protobuf JSON, built field by field.

OPA-Envoy policies read the CheckRequest attributes in protojson shape (lowerCamelCase
names, default values omitted). `json_format.MessageToDict` would give that shape but costs
more than the rest of the check and renders int64 (`size`) as a string; this walks the
fields Envoy sends directly and renders int64 as a number. Rare members (typed metadata,
unusual address kinds) fall back to `json_format`.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import Metadata
from envoy.service.auth.v3.attribute_context_pb2 import AttributeContext
from google.protobuf import json_format
from google.protobuf.struct_pb2 import ListValue, Struct, Value

# Integral doubles up to 2^53 render as JSON integers, as Go's protojson does.
_MAX_SAFE_INTEGER = 2**53
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def attributes_to_json(attributes: AttributeContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if attributes.HasField("source"):
        out["source"] = _peer(attributes.source)
    if attributes.HasField("destination"):
        out["destination"] = _peer(attributes.destination)
    if attributes.HasField("request"):
        out["request"] = _request(attributes.request)
    if attributes.context_extensions:
        out["contextExtensions"] = dict(attributes.context_extensions)
    if attributes.HasField("metadata_context"):
        out["metadataContext"] = _metadata(attributes.metadata_context)
    if attributes.HasField("route_metadata_context"):
        out["routeMetadataContext"] = _metadata(attributes.route_metadata_context)
    if attributes.HasField("tls_session"):
        out["tlsSession"] = (
            {"sni": attributes.tls_session.sni} if attributes.tls_session.sni else {}
        )
    return out


def _peer(peer: AttributeContext.Peer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.HasField("address"):
        out["address"] = _address(peer.address)
    if peer.service:
        out["service"] = peer.service
    if peer.labels:
        out["labels"] = dict(peer.labels)
    if peer.principal:
        out["principal"] = peer.principal
    if peer.certificate:
        out["certificate"] = peer.certificate
    return out


def _address(address: Address) -> dict[str, Any]:
    if address.WhichOneof("address") == "socket_address":
        return {"socketAddress": _socket_address(address.socket_address)}
    return json_format.MessageToDict(address)


def _socket_address(socket: SocketAddress) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if socket.protocol:
        out["protocol"] = SocketAddress.Protocol.Name(socket.protocol)
    if socket.address:
        out["address"] = socket.address
    if socket.port_value:
        out["portValue"] = socket.port_value
    if socket.named_port:
        out["namedPort"] = socket.named_port
    if socket.resolver_name:
        out["resolverName"] = socket.resolver_name
    if socket.ipv4_compat:
        out["ipv4Compat"] = True
    if socket.network_namespace_filepath:
        out["networkNamespaceFilepath"] = socket.network_namespace_filepath
    return out


def _request(request: AttributeContext.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if request.HasField("time"):
        out["time"] = request.time.ToJsonString()
    if request.HasField("http"):
        out["http"] = _http(request.http)
    return out


def _http(http: AttributeContext.HttpRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if http.id:
        out["id"] = http.id
    if http.method:
        out["method"] = http.method
    if http.headers:
        out["headers"] = dict(http.headers)
    if http.HasField("header_map"):
        out["headerMap"] = {
            "headers": [
                {
                    key: value
                    for key, value in (
                        ("key", header.key),
                        ("value", header.value),
                        ("rawValue", base64.b64encode(header.raw_value).decode("ascii")),
                    )
                    if value
                }
                for header in http.header_map.headers
            ]
        }
    if http.path:
        out["path"] = http.path
    if http.host:
        out["host"] = http.host
    if http.scheme:
        out["scheme"] = http.scheme
    if http.query:
        out["query"] = http.query
    if http.fragment:
        out["fragment"] = http.fragment
    if http.size:
        out["size"] = http.size
    if http.protocol:
        out["protocol"] = http.protocol
    if http.body:
        out["body"] = http.body
    if http.raw_body:
        out["rawBody"] = base64.b64encode(http.raw_body).decode("ascii")
    return out


def _metadata(metadata: Metadata) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if metadata.filter_metadata:
        out["filterMetadata"] = {
            name: struct_to_json(value) for name, value in metadata.filter_metadata.items()
        }
    if metadata.typed_filter_metadata:
        typed: dict[str, Any] = {}
        for name, any_value in metadata.typed_filter_metadata.items():
            try:
                typed[name] = json_format.MessageToDict(any_value)
            except (TypeError, KeyError):
                # The payload's type is not linked into this process: keep its type URL.
                typed[name] = {"@type": any_value.type_url}
        out["typedFilterMetadata"] = typed
    return out


def struct_to_json(struct: Struct) -> dict[str, Any]:
    return {key: value_to_json(value) for key, value in struct.fields.items()}


def _list_to_json(values: ListValue) -> list[Any]:
    return [value_to_json(value) for value in values.values]


def value_to_json(value: Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            return _NON_FINITE[str(number)]  # protojson spells these as strings
        if number.is_integer() and abs(number) <= _MAX_SAFE_INTEGER:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_json(value.struct_value)
    if kind == "list_value":
        return _list_to_json(value.list_value)
    return None
