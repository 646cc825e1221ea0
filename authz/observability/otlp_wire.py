"""The OTLP trace export request, `ExportTraceServiceRequest`, in protobuf's wire format.

Written out by hand, for the few fields a check's spans use, because the generated OTLP
modules cannot be relied on: `xds-protos` ships an old copy of `opentelemetry/proto/...`
(before `ScopeSpans`, which collectors require now) under the same file names as
`opentelemetry-proto`, so which one a virtualenv holds depends on install order. The tests
decode what this writes with `opentelemetry-proto`'s own generated classes.

Field numbers and types are those of opentelemetry-proto 1.x (`trace.proto`,
`common.proto`, `resource.proto`, `trace_service.proto`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
STATUS_CODE_ERROR = 2


@dataclass(frozen=True, slots=True)
class WireSpan:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    trace_state: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    flags: int
    attributes: Iterable[bytes] = ()
    """Each encoded by `key_value` or `repeated_key_value`."""
    error: str | None = None
    """The status message of a span whose status is ERROR; None: status unset."""


_SMALL = [bytes((n,)) for n in range(128)]


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, _LENGTH) + _varint(len(value)) + value


def _string(field: int, value: str) -> bytes:
    # "replace": a lone surrogate (which no str from Envoy or regorus should hold) must not
    # make a finished check raise on the serving thread; protobuf strings are UTF-8.
    return _bytes(field, value.encode("utf-8", "replace"))


def _int(field: int, value: int) -> bytes:
    # int64 and enums: negative values as their 64-bit two's complement.
    return _key(field, _VARINT) + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)


def _any_value(value: str | int | bool) -> bytes:
    if isinstance(value, bool):
        return _int(2, int(value))
    if isinstance(value, int):
        return _int(3, value)
    return _string(1, value)


def key_value(name: str, value: str | int | bool) -> bytes:
    """An attribute as `Span.attributes` holds it (a `KeyValue`, field 9 included)."""
    return _bytes(9, _string(1, name) + _bytes(2, _any_value(value)))


_REPEATED_VALUES = 4096
_encoded: dict[tuple[str, str | int | bool], bytes] = {}


def repeated_key_value(name: str, value: str | int | bool) -> bytes:
    """`key_value` for a value many spans share (a service name, a reason code), kept."""
    key = (name, value)
    found = _encoded.get(key)
    if found is None:
        if len(_encoded) >= _REPEATED_VALUES:
            _encoded.clear()
        found = _encoded[key] = key_value(name, value)
    return found


_TRACE_ID = _key(1, _LENGTH) + _SMALL[16]
_SPAN_ID = _key(2, _LENGTH) + _SMALL[8]
_PARENT_SPAN_ID = _key(4, _LENGTH) + _SMALL[8]
_START = _key(7, _FIXED64)
_END = _key(8, _FIXED64)
_FLAGS = _key(16, _FIXED32)
_TIMES = struct.Struct("<Q")
_NAMED: dict[tuple[str, int], bytes] = {}
"""Name and kind fields by (name, kind): spans take their names from a few constants."""
_UINT32 = struct.Struct("<I")


def encode_span(span: WireSpan) -> bytes:
    """A `Span`. Its ids must have their sizes (trace 16 bytes, span and parent 8)."""
    parts = [_TRACE_ID, span.trace_id, _SPAN_ID, span.span_id]
    if span.trace_state:
        parts.append(_string(3, span.trace_state))
    if span.parent_span_id:
        parts += (_PARENT_SPAN_ID, span.parent_span_id)
    named = _NAMED.get((span.name, span.kind))
    if named is None:
        named = _NAMED[(span.name, span.kind)] = _string(5, span.name) + _int(6, span.kind)
    parts += (
        named,
        _START,
        _TIMES.pack(span.start_ns),
        _END,
        _TIMES.pack(span.end_ns),
    )
    parts += span.attributes
    if span.error is not None:
        status = (_string(2, span.error) if span.error else b"") + _int(3, STATUS_CODE_ERROR)
        parts.append(_bytes(15, status))
    parts += (_FLAGS, _UINT32.pack(span.flags))
    return b"".join(parts)


def span_entries(spans: Iterable[WireSpan]) -> bytes:
    """`spans` as entries of `ScopeSpans.spans`; entries of several calls may be joined."""
    return b"".join(_bytes(2, encode_span(span)) for span in spans)


def encode_export_request(service_name: str, scope_name: str, entries: bytes) -> bytes:
    """An `ExportTraceServiceRequest` with one resource (`service.name`) and one
    instrumentation scope holding the spans of `entries` (from `span_entries`)."""
    resource = _bytes(1, _string(1, "service.name") + _bytes(2, _string(1, service_name)))
    scope = _string(1, scope_name)
    resource_spans = _bytes(1, resource) + _bytes(2, _bytes(1, scope) + entries)
    return _bytes(1, resource_spans)
