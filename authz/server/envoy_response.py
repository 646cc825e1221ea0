"""Verdicts as Envoy `CheckResponse` messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption, QueryParameter
from envoy.service.auth.v3.external_auth_pb2 import CheckResponse
from google.protobuf.wrappers_pb2 import BoolValue
from google.rpc import code_pb2

from authz.answers import Allowed, Denied, Failed, Verdict
from authz.policy.decision import HeaderList

# Only the old `append` flag is honoured by Envoy 1.40 for ok_response headers (measured):
# false overwrites whatever the client sent, which is what identity headers need.
_OVERWRITE = BoolValue(value=False)


def _header_options(headers: HeaderList) -> list[HeaderValueOption]:
    return [
        HeaderValueOption(header=HeaderValue(key=name, value=value), append=_OVERWRITE)
        for name, value in headers
    ]


def _set_metadata(response: CheckResponse, metadata: Mapping[str, Any]) -> None:
    if metadata:
        response.dynamic_metadata.update(metadata)


def check_response(verdict: Verdict) -> CheckResponse:
    response = CheckResponse()
    if isinstance(verdict, Allowed):
        response.status.code = code_pb2.OK
        ok = response.ok_response
        ok.headers.extend(_header_options(verdict.headers))
        ok.headers_to_remove.extend(verdict.headers_to_remove)
        ok.response_headers_to_add.extend(_header_options(verdict.response_headers_to_add))
        ok.query_parameters_to_set.extend(
            QueryParameter(key=name, value=value) for name, value in verdict.query_parameters_to_set
        )
        ok.query_parameters_to_remove.extend(verdict.query_parameters_to_remove)
    elif isinstance(verdict, Denied):
        response.status.code = code_pb2.PERMISSION_DENIED
        _fill_denied(response.denied_response, verdict)
    else:
        # Our own failure, answered by us: Envoy relays the 503 whatever its own settings.
        # (A Failed verdict with `as_envoy_error` never gets here: the servicer fails the
        # RPC instead. Measured on Envoy 1.40: a non-OK status *without* error_response
        # becomes a 403 denial, so that shape is never sent.)
        response.status.code = code_pb2.PERMISSION_DENIED
        _fill_denied(response.denied_response, verdict)
    _set_metadata(response, verdict.dynamic_metadata)
    return response


def _fill_denied(target: Any, verdict: Denied | Failed) -> None:
    target.status.code = verdict.status
    target.headers.extend(_header_options(verdict.headers))
    target.body = verdict.body
